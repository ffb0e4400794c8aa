"""Errors a user can act on. The CLI maps every FadaError to one line and exit code 2."""

from __future__ import annotations


class FadaError(Exception):
    """A problem with the user's input (a file, a key, a value): printed as one line, exit code 2."""


class ConfigError(FadaError):
    """Every problem found in a recipe, reported at once.

    ``problems`` holds one line per problem, each starting with the dotted key (or file) it concerns.
    """

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        head = f"{len(self.problems)} problem(s){where}: "
        super().__init__(head + "; ".join(self.problems))


class MissingFileError(FadaError):
    """A file or folder the user named (or that a named folder must contain) is not there."""

    def __init__(self, path, what: str, hint: str = ""):
        self.path = str(path)
        msg = f"{what} not found: {self.path}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
