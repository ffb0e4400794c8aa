"""The shared training loop on a toy regression task: learning, exact resume, NaN stop, checkpoints."""

import json
import math

import pytest
import torch
from torch import nn

from fada.config.schema import TrainConfig
from fada.errors import FadaError
from fada.training import latest_checkpoint, list_checkpoints, load_model_weights, train
from fada.training.sampler import ResumableBatchSampler


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        i, epoch = key
        return self.x[i], self.y[i]


class ToyTask:
    def __init__(self, poison_at=None):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.frozen = nn.Linear(1, 1)  # part of the model but not trained
        self.model.add_module("frozen", self.frozen)
        self.poison_at = poison_at
        self.calls = 0

    def trainable_parameters(self):
        return [(n, p) for n, p in self.model.named_parameters() if not n.startswith("frozen")]

    def dataset(self):
        return ToyData()

    def collate(self, items):
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])

    def loss(self, model, batch, generator):
        self.calls += 1
        x, y = batch
        noise = torch.randn(x.shape, generator=generator) * 0.01  # randomness that must resume exactly
        pred = model[2](model[1](model[0](x + noise))).squeeze(-1)
        loss = ((pred - y) ** 2).mean()
        if self.poison_at is not None and self.calls >= self.poison_at:
            loss = loss * float("nan")
        return loss, {"mse": float(loss.detach())}


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), max_steps=12, learning_rate=1e-2, lr_warmup_steps=3,
                ema_decay=0.9, mixed_precision="no", gradient_checkpointing=False, checkpoint_every=5,
                keep_last=2, log_every=2, validate_every=0, seed=3, resume="auto")
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls_and_frozen_parts_stay(tmp_path):
    task = ToyTask()
    frozen_before = task.frozen.weight.clone()
    res = train(task, cfg(tmp_path, max_steps=120, checkpoint_every=200), batch_size=8, progress=False)
    assert res.step == 120
    assert res.metrics[-1]["loss"] < 0.2 * res.metrics[0]["loss"]
    assert torch.equal(task.frozen.weight, frozen_before)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(2, 121, 2))


def test_resume_equals_uninterrupted(tmp_path):
    whole = ToyTask()
    train(whole, cfg(tmp_path / "a", checkpoint_every=6), batch_size=8, progress=False)
    split = ToyTask()
    first = train(split, cfg(tmp_path / "b", checkpoint_every=6), batch_size=8, progress=False, stop_after=6)
    assert first.step == 6
    resumed = ToyTask()  # a fresh process: new model object, state only from the checkpoint
    second = train(resumed, cfg(tmp_path / "b", checkpoint_every=6), batch_size=8, progress=False)
    assert second.step == 12
    for (n, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=n)
    # EMA weights match too
    wa, wb = ToyTask(), ToyTask()
    load_model_weights(latest_checkpoint(tmp_path / "a" / "run"), wa.model)
    load_model_weights(latest_checkpoint(tmp_path / "b" / "run"), wb.model)
    for a, b in zip(wa.model.parameters(), wb.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_keep_last_and_atomic_layout(tmp_path):
    train(ToyTask(), cfg(tmp_path, max_steps=12, checkpoint_every=3), batch_size=8, progress=False)
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["step-0000009", "step-0000012"]
    ck = tmp_path / "run" / "step-0000012"
    for f in ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors",
              "state.json"):
        assert (ck / f).is_file(), f
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(FadaError, match=r"loss became nan at step 8.*step-0000005"):
        train(ToyTask(poison_at=8), cfg(tmp_path), batch_size=8, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000005"]


def test_resume_from_a_bad_path(tmp_path):
    with pytest.raises(FadaError, match="is not a checkpoint folder"):
        train(ToyTask(), cfg(tmp_path, resume=str(tmp_path)), batch_size=8, progress=False)


def test_sampler_is_deterministic_resumable_and_sharded():
    s = ResumableBatchSampler(10, 3, seed=5)
    it = iter(s)
    seq = [next(it) for _ in range(7)]
    it2 = iter(ResumableBatchSampler(10, 3, seed=5, start_step=4))
    assert [next(it2) for _ in range(3)] == seq[4:]
    assert {e for batch in seq for _, e in batch} == {0, 1, 2}  # 3 batches per epoch
    r0 = iter(ResumableBatchSampler(12, 3, seed=5, rank=0, world_size=2))
    r1 = iter(ResumableBatchSampler(12, 3, seed=5, rank=1, world_size=2))
    a, b = next(r0), next(r1)
    assert not {i for i, _ in a} & {i for i, _ in b}


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_schedule_after_warmup(tmp_path, schedule):
    res = train(ToyTask(), cfg(tmp_path, max_steps=12, lr_warmup_steps=3, log_every=1, lr_schedule=schedule),
                batch_size=8, progress=False)
    # the logged lr is the one the next step uses: step k (1-based) has run k scheduler steps
    lrs = {m["step"]: m["lr"] for m in res.metrics}
    for k, lr in lrs.items():
        if k < 3:
            expected = 1e-2 * k / 3
        elif schedule == "constant":
            expected = 1e-2
        else:
            expected = 1e-2 * 0.5 * (1 + math.cos(math.pi * (k - 3) / 9))
        assert lr == pytest.approx(expected, rel=1e-9, abs=1e-12), k
    assert lrs[12] == (pytest.approx(0.0, abs=1e-12) if schedule == "cosine" else pytest.approx(1e-2))


def test_cosine_schedule_resumes(tmp_path):
    whole, resumed = ToyTask(), ToyTask()
    train(whole, cfg(tmp_path / "a", lr_schedule="cosine", checkpoint_every=6), batch_size=8, progress=False)
    train(ToyTask(), cfg(tmp_path / "b", lr_schedule="cosine", checkpoint_every=6), batch_size=8, progress=False,
          stop_after=6)
    train(resumed, cfg(tmp_path / "b", lr_schedule="cosine", checkpoint_every=6), batch_size=8, progress=False)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_adafactor_and_host_ema_learn_and_resume(tmp_path):
    """Adafactor keeps only factored second moments; with the EMA in host memory the run still resumes exactly."""
    kw = dict(optimizer="adafactor", ema_device="cpu", max_steps=60, checkpoint_every=30, learning_rate=3e-2)
    whole = ToyTask()
    res = train(whole, cfg(tmp_path / "a", **kw), batch_size=8, progress=False)
    assert res.metrics[-1]["loss"] < 0.3 * res.metrics[0]["loss"]
    train(ToyTask(), cfg(tmp_path / "b", **kw), batch_size=8, progress=False, stop_after=30)
    resumed = ToyTask()
    train(resumed, cfg(tmp_path / "b", **kw), batch_size=8, progress=False)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    from safetensors.torch import load_file

    state = load_file(str(latest_checkpoint(tmp_path / "a" / "run") / "optimizer.safetensors"))
    assert not any(k.endswith("exp_avg") for k in state)  # no first moment
    assert any(k.endswith("exp_avg_sq_row") for k in state)  # factored second moment of the 8x4 weight


def test_adamw8bit_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FadaError, match="adamw8bit runs on CUDA"):
        train(ToyTask(), cfg(tmp_path, optimizer="adamw8bit"), batch_size=8, progress=False)
