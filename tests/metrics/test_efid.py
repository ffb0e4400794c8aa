"""E-FID from user coefficient files, and the OpenCV substitute efid_sub."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from fada.errors import FadaError, MissingFileError
from fada.metrics.efid import (efid_from_coeff_files, efid_sub_from_videos, expression_features_sub,
                               load_expression_coeffs)


def test_coeff_files_npy_and_safetensors(tmp_path):
    rng = np.random.default_rng(0)
    gen, ref = [], []
    for i in range(3):
        c = rng.standard_normal((20, 6))
        np.save(tmp_path / f"g{i}.npy", c)
        save_file({"exp": (c + 0.5).astype(np.float32), "id": np.zeros((20, 80), np.float32)},
                  str(tmp_path / f"r{i}.safetensors"))
        gen.append(tmp_path / f"g{i}.npy")
        ref.append(tmp_path / f"r{i}.safetensors")
    assert load_expression_coeffs(ref[0]).shape == (20, 6)  # picks the 'exp' tensor
    assert efid_from_coeff_files(gen, gen) == pytest.approx(0.0, abs=1e-9)
    # a pure mean shift of 0.5 in 6 dims: 6 * 0.25 (float32 storage => small tolerance)
    assert efid_from_coeff_files(gen, ref) == pytest.approx(1.5, rel=1e-5)


def test_coeff_file_errors(tmp_path):
    with pytest.raises(MissingFileError):
        load_expression_coeffs(tmp_path / "none.npy")
    save_file({"a": np.zeros((3, 2), np.float32), "b": np.zeros((3, 2), np.float32)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(FadaError, match="none named"):
        load_expression_coeffs(tmp_path / "x.safetensors")
    (tmp_path / "c.txt").write_text("1 2")
    with pytest.raises(FadaError, match=".npy or .safetensors"):
        load_expression_coeffs(tmp_path / "c.txt")
    np.save(tmp_path / "d1.npy", np.zeros((4, 3)))
    np.save(tmp_path / "d2.npy", np.zeros((4, 5)))
    with pytest.raises(FadaError, match="differ"):
        efid_from_coeff_files([tmp_path / "d1.npy"], [tmp_path / "d2.npy"])


def _face(mouth_h, brightness=1.0):
    f = np.full((96, 96, 3), 170, np.float64)
    f[30:40, 20:38] = 40  # eyes
    f[30:40, 58:76] = 40
    f[72 - mouth_h // 2:72 + mouth_h // 2 + 1, 34:62] = 30  # mouth
    return np.clip(f * brightness, 0, 255).astype(np.uint8)


def test_efid_sub_features():
    v = np.stack([_face(2), _face(2, brightness=0.7), _face(12)])
    f = expression_features_sub(v)
    assert f.shape == (3, 360) and f.dtype == np.float64
    same_expr = np.linalg.norm(f[0] - f[1])
    other_expr = np.linalg.norm(f[0] - f[2])
    assert same_expr < 0.1 * other_expr  # lighting barely matters, mouth shape does


def test_efid_sub_distance():
    closed = np.stack([_face(h) for h in (1, 2, 3, 2, 1, 3)])
    talking = np.stack([_face(h) for h in (4, 10, 14, 8, 12, 6)])
    assert efid_sub_from_videos([closed], [closed]) == pytest.approx(0.0, abs=1e-6)
    assert efid_sub_from_videos([closed], [talking]) > efid_sub_from_videos([closed], [closed[::-1]]) + 1e-3
