"""benchmarks/bench_heldout.py: the paired gap and the per-clip columns it adds to the demo's report."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_heldout.py"
_spec = importlib.util.spec_from_file_location("bench_heldout", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_paired_gap_by_hand():
    g = bench.paired_gap([25.0, 27.0, 24.0], [24.0, 25.0, 24.5])  # differences 1, 2, -0.5
    assert g["mean"] == pytest.approx(2.5 / 3)
    sd = np.sqrt(((1 - 2.5 / 3) ** 2 + (2 - 2.5 / 3) ** 2 + (-0.5 - 2.5 / 3) ** 2) / 2)
    assert g["sd"] == pytest.approx(sd) and g["se"] == pytest.approx(sd / np.sqrt(3))


def test_per_clip_mouth_psnr_averages_to_the_report_column():
    from fada.stages.demo import still_reference, test_clips

    clips = test_clips(2, 1.0, 32, seed=5)
    rng = np.random.default_rng(0)
    noisy = [np.clip(c["truth"].astype(int) + rng.integers(-20, 21, c["truth"].shape), 0, 255).astype(np.uint8)
             for c in clips]
    rows = bench.score({"noisy": noisy}, clips)
    assert set(rows) == {"noisy", "reference", "held pose"}
    for r in rows.values():
        assert len(r["psnr_mouth_per_clip"]) == 2
        assert np.mean(r["psnr_mouth_per_clip"]) == pytest.approx(r["psnr_mouth"])
    # ±20 grey levels uniform: rms 11.8, about 26.7 dB (a little less where it clips)
    assert 24 < rows["noisy"]["psnr_mouth"] < 28
    assert rows["reference"]["psnr_mouth_per_clip"] != rows["held pose"]["psnr_mouth_per_clip"]
    copy = bench.score({"copy": [still_reference(c) for c in clips]}, clips)["copy"]
    assert np.array_equal(rows["reference"]["psnr_mouth_per_clip"], copy["psnr_mouth_per_clip"])
