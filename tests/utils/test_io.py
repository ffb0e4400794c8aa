"""Atomic writes: the file appears whole, and with the mode any other program would give it under the umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from fada.utils.io import atomic_path, write_json, write_text


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, want):
    umask(mask)
    write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "sub" / "b.json", {"k": 1})  # a folder it creates: as mkdir makes it
    assert mode(tmp_path / "a.txt") == want and mode(tmp_path / "sub" / "b.json") == want
    assert mode(tmp_path / "sub") == 0o777 & ~mask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_video_written_through_the_encoder_is_readable_by_others(tmp_path, umask):
    from fada.data.media import write_video

    out = tmp_path / "v.mp4"
    write_video(out, np.zeros((3, 16, 16, 3), np.uint8), 25)
    assert mode(out) == 0o644


def test_a_failed_write_leaves_nothing(tmp_path, umask):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_current_umask_reads_without_changing_it(umask):
    from fada.utils.io import current_umask

    umask(0o027)
    assert current_umask() == 0o027 and os.umask(0o027) == 0o027
