"""Packaging glue that pyproject.toml cannot express: the top-level recipes/ folder ships as ``fada.recipes``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["fada", "fada.*", "fada_cli", "fada_cli.*"]) + ["fada.recipes"],
    package_dir={"fada.recipes": "recipes"},
)
