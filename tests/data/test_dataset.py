"""The disk-backed clip cache: slices equal the whole, keyed by the models, sharded and resumable builds, and
memory that does not grow with the corpus."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fada.data.dataset import ClipStore, ClipWindowDataset, read_manifest
from fada.models.audio import MelFrontEnd, window_features
from fada.models.vae import PixelCodec
from tests.fixtures import make_manifest


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return read_manifest(make_manifest(tmp_path_factory.mktemp("ds"), n_clips=3, seconds=1.0, size=32))


def store(rows, cache, vae=None, fe=None, **kw):
    return ClipStore(rows, vae or PixelCodec(2), fe or MelFrontEnd(n_mels=8, window=2), 32, 25, cache,
                     progress=False, **kw)


def test_slices_equal_the_whole_clip(rows, tmp_path):
    from fada.data.media import read_audio, read_video

    fe = MelFrontEnd(n_mels=8, window=2)
    s = store(rows, tmp_path, fe=fe)
    frames, _ = read_video(rows[0]["video"])
    whole = window_features(fe.frame_features(read_audio(rows[0]["wav"], fe.sample_rate), len(frames), 25), 2)
    T = s.num_frames(0)
    assert T == len(frames) == whole.shape[0]
    for a, b in [(0, 4), (3, 9), (T - 4, T), (0, T)]:  # clip edges clamp exactly as on the whole clip
        torch.testing.assert_close(s.audio(0, a, b), whole[a:b], rtol=0, atol=0)
    assert torch.equal(s.latents(0, 2, 5), s.latents(0)[2:5])
    item = ClipWindowDataset(s, 4, 1, seed=0)[(1, 0)]
    assert item["x0"].shape == (12, 4, 16, 16) and item["audio"].shape == (4, 5, 1, 8)


def test_reference_index_anywhere_or_near_the_window():
    """gap None: any frame outside the window, every one of them in time, and the same draws as before the option
    existed; gap (3, 8): 3..8 frames before the window's first frame or after its last, both sides used."""
    from fada.data.dataset import reference_index

    T, F = 40, 4
    seen_far, seen_near = set(), set()
    for k in range(3000):
        start = k % (T - F + 1)
        rng, old = np.random.default_rng([0, k]), np.random.default_rng([0, k])
        i = reference_index(rng, T, start, F)
        assert i == int(old.choice(np.r_[0:start, start + F:T]))  # the earlier sampling, draw for draw
        assert not start <= i < start + F
        seen_far.add(i)
        j = reference_index(np.random.default_rng([1, k]), T, start, F, (3, 8))
        gap = start - j if j < start else j - (start + F - 1)
        assert 3 <= gap <= 8, (start, j)
        seen_near.add((start, j < start))
    assert seen_far == set(range(T))
    assert (10, True) in seen_near and (10, False) in seen_near  # both sides where both exist
    # neither side exists: anywhere outside the window; a window filling the clip: any frame
    assert all(not 2 <= reference_index(np.random.default_rng(k), 8, 2, 4, (5, 9)) < 6 for k in range(50))
    assert {reference_index(np.random.default_rng(k), 4, 0, 4, (1, 2)) for k in range(50)} <= set(range(4))


def test_items_take_the_reference_the_gap_allows(rows, tmp_path):
    """The item's reference is the latent of a frame within the gap of its window (found by matching latents)."""
    s = store(rows, tmp_path)
    data = ClipWindowDataset(s, 4, 1, seed=0, reference_gap=(2, 3))
    for epoch in range(6):
        for index in range(len(s)):
            item, lat = data[(index, epoch)], s.latents(index)
            start = next(t for t in range(lat.shape[0] - 3) if torch.equal(lat[t:t + 4].permute(1, 0, 2, 3),
                                                                               item["x0"]))
            matches = [t for t in range(lat.shape[0]) if torch.equal(lat[t], item["ref"])]
            assert any(2 <= start - t <= 3 or 2 <= t - (start + 3) <= 3 for t in matches), (start, matches)


def test_reference_gap_is_checked():
    from fada.config import load_recipe
    from fada.errors import ConfigError

    assert load_recipe("tiny-teacher", ["data.reference_gap=[2,5]"]).data.reference_gap == [2, 5]
    for bad in ("[5,2]", "[0,3]", "[3]"):
        with pytest.raises(ConfigError, match="data.reference_gap"):
            load_recipe("tiny-teacher", [f"data.reference_gap={bad}"])


def test_changing_the_codec_or_audio_model_reencodes(rows, tmp_path):
    a = store(rows, tmp_path)
    assert store(rows, tmp_path).cache_dir == a.cache_dir  # same models: the same files
    b = store(rows, tmp_path, vae=PixelCodec(4))
    c = store(rows, tmp_path, fe=MelFrontEnd(n_mels=8, sample_rate=8000))
    assert len({a.cache_dir, b.cache_dir, c.cache_dir}) == 3
    assert json.loads((a.cache_dir / "models.json").read_text())["codec"] == {"codec": "pixel-codec(x2)"}


def test_sd_vae_weights_are_part_of_the_key(rows, tmp_path):
    """Two SD VAEs with the same config but different weights (a fine-tune) must not share latents."""
    from diffusers import AutoencoderKL

    from fada.models.vae import SDVAE

    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        root = tmp_path / f"sd{seed}"
        AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                      layers_per_block=1).save_pretrained(root / "vae")
        dirs.append(store(rows, tmp_path / "cache", vae=SDVAE(root)).cache_dir)
    assert dirs[0] != dirs[1]


def test_sharded_build_and_resume(rows, tmp_path, monkeypatch):
    built = []
    orig = ClipStore._build
    monkeypatch.setattr(ClipStore, "_build", lambda self, row, path: (built.append(row["id"]), orig(self, row, path)))
    class Waiting(Exception):
        pass

    def barrier():
        raise Waiting  # where rank 1 would wait for rank 0

    with pytest.raises(Waiting):
        store(rows, tmp_path, rank=1, world=2, barrier=barrier)
    assert built == ["c1"]  # rank 1 of 2 encodes clips 1, 3, ...
    built.clear()
    s = store(rows, tmp_path, rank=0, world=2)
    assert built == ["c0", "c2"] and len(s) == 3
    built.clear()
    s.paths[1].unlink()  # a killed build: only the missing clip is encoded again
    assert len(store(rows, tmp_path)) == 3 and built == ["c1"]


def test_a_damaged_cache_file_is_named(rows, tmp_path):
    from fada.errors import FadaError

    s = store(rows, tmp_path)
    s.paths[0].write_bytes(b"not safetensors")
    with pytest.raises(FadaError, match=s.paths[0].name):
        store(rows, tmp_path)


MEMORY_PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    from safetensors.torch import save_file
    from fada.data.dataset import ClipStore, ClipWindowDataset, collate
    from fada.models.audio import MelFrontEnd
    from fada.models.vae import PixelCodec
    from torch.utils.data import DataLoader

    n, cache = int(sys.argv[1]), sys.argv[2]
    vae, fe = PixelCodec(2), MelFrontEnd(n_mels=80, window=2)
    rows = [{"id": str(i), "video": sys.argv[3], "wav": sys.argv[4] + str(i)} for i in range(n)]
    ClipStore._build = lambda self, row, path: save_file(  # 10 MB per clip, no decoding
        {"latents": torch.randn(100, 12, 64, 64), "audio": torch.randn(100, 1, 80)}, str(path))
    store = ClipStore(rows, vae, fe, 128, 25, cache, progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = ClipWindowDataset(store, 4, 1, seed=0)
    for epoch in range(2):
        for b in DataLoader(data, batch_sampler=[[(i, epoch), ((i + 1) % n, epoch)] for i in range(n)],
                            collate_fn=collate, num_workers=0):
            pass
    print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def test_memory_does_not_grow_with_the_corpus(tmp_path):
    """Peak RSS while building and reading a 10x larger corpus (10 vs 100 clips of 10 MB) stays within 1.2x:
    the store keeps file paths, not tensors (a RAM cache would hold 1 GB more)."""
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    peaks = []
    for n in (10, 100):
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(n), str(tmp_path / f"c{n}"), str(video),
                              "w"], capture_output=True, text=True, check=True)
        peaks.append(int(out.stdout.split()[-1]))
    assert peaks[1] < 1.2 * peaks[0], peaks
