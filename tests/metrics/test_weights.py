"""Locating weight files: one-line errors naming the file and --weights-dir; safe loading only."""

import pytest
import torch

from fada.errors import FadaError, MissingFileError
from fada.metrics.weights import WEIGHT_FILES, available, locate, torch_load_safe, weights_for


def test_missing_file_message_names_file_and_option(tmp_path):
    with pytest.raises(MissingFileError) as e:
        weights_for("fid", tmp_path)
    msg = str(e.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and "--weights-dir" in msg and "\n" not in msg
    with pytest.raises(MissingFileError, match="no --weights-dir given.*syncnet_v2.model"):
        weights_for("sync", None)
    with pytest.raises(MissingFileError, match="--weights-dir folder"):
        locate(tmp_path / "nope", "x.pth", "fid")
    with pytest.raises(FadaError, match="needs no weights"):
        weights_for("iqa", tmp_path)


def test_available_reports_what_can_run(tmp_path):
    (tmp_path / WEIGHT_FILES["sync"]).write_bytes(b"")
    status = available(tmp_path)
    assert status["sync"] is None
    assert set(status) == {"fid", "fvd", "fvd_i", "sync"}
    assert "resnet-50-kinetics.pth" in status["fvd"]


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    torch.save({"w": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(FadaError, match="not a readable"):
        torch_load_safe(tmp_path / "evil.pth", "test")
    assert "never run" not in capsys.readouterr().out
