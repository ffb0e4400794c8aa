"""The one training loop shared by teacher training and distillation, on accelerate.

A stage supplies a ``TrainTask`` (model, data, loss); the loop owns everything else: optimiser and LR warm-up,
mixed precision, gradient accumulation and clipping, EMA, seeding, resumable data order, atomic checkpoints with
keep-last-N and ``resume=auto|none|PATH``, a NaN/inf stop that keeps the last good checkpoint, metrics to JSONL
(and TensorBoard when installed), a progress bar, and periodic validation.
One process on a CPU; ``accelerate launch`` for several GPUs or nodes (DDP).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from fada.config.schema import TrainConfig
from fada.errors import FadaError
from fada.training.checkpoint import EMAWeights, latest_checkpoint, load_checkpoint, resolve_resume, save_checkpoint
from fada.training.sampler import ResumableBatchSampler
from fada.training.sharding import force_fsdp_on_cpu, full_tensor, is_fsdp
from fada.training.state import rng_to_tensors


class TrainTask(Protocol):
    model: torch.nn.Module
    """Everything that is checkpointed (frozen parts included, so a checkpoint is self-contained)."""

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Named parameters the optimiser updates (names as in ``model.named_parameters()``)."""

    def dataset(self) -> Dataset:
        """Map-style dataset indexed by ``(index, epoch)`` tuples (see ResumableBatchSampler)."""

    def collate(self, items: list) -> Any: ...

    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Scalar loss and float metrics for logging; all randomness from ``generator``."""


class ClipTask:
    """Base of the stages' tasks: a curated-clip dataset, named trainable parameters, the shared collate."""

    def __init__(self, model: torch.nn.Module, dataset: Dataset, trainable: list[tuple[str, torch.nn.Parameter]]):
        if not trainable:
            raise FadaError("nothing to train: every parameter of the model is frozen in this setting")
        self.model, self._dataset, self._trainable = model, dataset, trainable

    def trainable_parameters(self):
        return self._trainable

    def dataset(self):
        return self._dataset

    @property
    def collate(self):
        """A module-level function (workers receive it by reference, not a pickled task with its model)."""
        from fada.data.dataset import collate

        return collate


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    last_checkpoint: Path | None
    metrics: list[dict]
    trained_parameters: int = 0
    """Parameters the optimiser updated."""
    total_parameters: int = 0
    """Parameters of the whole trained model (frozen parts included)."""


def process_state():
    """accelerate's view of this process (rank, world size, device), available before the Accelerator exists so
    that the stages build every model on this process's own device: under torchrun or accelerate launch it sets
    up the process group and maps the local rank to its GPU. The Accelerator made later shares it."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def weight_dtype(cfg) -> torch.dtype:
    """The dtype frozen weights are kept in (train.frozen_dtype: 'auto' = the mixed-precision dtype)."""
    if cfg.frozen_dtype == "fp32":
        return torch.float32
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]


def build_optimizer(params: list[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    """The optimiser train.optimizer names (see TrainConfig.optimizer for the memory each needs)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # a fixed learning rate (the LR schedule drives it), no first moment: only factored second moments
        return Adafactor(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, scale_parameter=False,
                         relative_step=False, warmup_init=False, beta1=None)
    if cfg.optimizer == "adamw8bit":
        if not torch.cuda.is_available():
            raise FadaError("train.optimizer: adamw8bit runs on CUDA GPUs only; use adafactor on this machine")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise FadaError("train.optimizer: adamw8bit needs bitsandbytes: pip install 'fada[cuda]'") from None
        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    raise FadaError(f"train.optimizer: unknown optimiser {cfg.optimizer!r}")


def _lr_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' warm-up schedules: linear from 0 over lr_warmup_steps, then constant or a half cosine to 0."""
    from diffusers.optimization import get_scheduler

    name = {"constant": "constant_with_warmup", "cosine": "cosine"}[cfg.lr_schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.max_steps)


def _move(batch, device):
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_move(v, device) for v in batch)
    return batch


class MetricsLog:
    """metrics.jsonl (rewritten on resume so it never holds steps past the checkpoint) + optional TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int, enabled: bool):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

            self.tb = SummaryWriter(str(run_dir / "tb"))
        except Exception:
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(task: TrainTask, cfg: TrainConfig, batch_size: int, recipe_yaml: str | None = None, progress: bool = True,
          validate: Callable[[torch.nn.Module, int, Path], dict | None] | None = None,
          stop_after: int | None = None, extra_state: dict | None = None, num_workers: int = 0) -> TrainResult:
    """Run (or resume) training until ``cfg.max_steps``; ``stop_after`` ends the session early (tests, budgets).
    ``num_workers``: DataLoader worker processes reading the clip cache (data.num_workers)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from accelerate.state import AcceleratorState

    run_dir = Path(cfg.output_dir)
    if AcceleratorState._shared_state.get("_mixed_precision", cfg.mixed_precision) != cfg.mixed_precision:
        AcceleratorState._reset_state()  # one process training runs of different precision (demo, tests)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision,
                              gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                              cpu=not torch.cuda.is_available())
    force_fsdp_on_cpu(accelerator)
    fsdp = is_fsdp(accelerator)
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(cfg.seed + rank)
    generator = torch.Generator(device=accelerator.device).manual_seed(cfg.seed * 7919 + rank)

    model = task.model
    named = task.trainable_parameters()
    names = [n for n, _ in named]
    trainable_ids = {id(p) for _, p in named}
    frozen_dtype = weight_dtype(cfg)
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable_ids)
        if id(p) not in trainable_ids and p.is_floating_point() and p.dtype != frozen_dtype and not fsdp:
            p.data = p.data.to(frozen_dtype)  # frozen: half the memory (FSDP shards them instead: one dtype)
        elif id(p) in trainable_ids and p.dtype != torch.float32:
            p.data = p.data.float()  # trained weights, their gradients and optimiser state stay float32
    model.to(accelerator.device)
    optimizer = build_optimizer([p for _, p in named], cfg)
    scheduler = _lr_scheduler(optimizer, cfg)

    def make_ema(params):
        return EMAWeights(params, cfg.ema_decay, device="cpu" if cfg.ema_device == "cpu" else None) \
            if cfg.ema_decay > 0 else None

    ema = None if fsdp else make_ema(named)  # under FSDP: made from the sharded parameters after prepare

    step = 0
    resume_from = resolve_resume(cfg.resume, run_dir)
    if resume_from is not None:
        # FSDP: the optimiser and EMA states are scattered onto their shards after prepare (below)
        state = load_checkpoint(resume_from, model, None if fsdp else optimizer, scheduler, ema, generator,
                                rank=rank)
        step = int(state["step"])
        if accelerator.is_main_process and progress:
            tqdm.write(f"resuming from {resume_from} (step {step})")
    counts = (sum(p.numel() for _, p in named), sum(p.numel() for p in model.parameters()))
    if step >= cfg.max_steps:
        return TrainResult(step, run_dir, resume_from, [], *counts)

    dataset = task.dataset()
    sampler = ResumableBatchSampler(len(dataset), batch_size, cfg.seed,
                                    start_step=step * cfg.gradient_accumulation_steps, rank=rank, world_size=world)
    # workers start from a fresh interpreter (forkserver), not a fork of this process: a forked worker shares the
    # model's pages copy-on-write, and every optimiser step would then copy them (6.7 GB more for teacher stage 1)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=task.collate, num_workers=num_workers,
                        persistent_workers=num_workers > 0, pin_memory=accelerator.device.type == "cuda",
                        multiprocessing_context="forkserver" if num_workers > 0 else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    if fsdp:  # fully_shard replaced the parameters by sharded ones (same names)
        from fada.training.sharding import keep_reference_net_gathered

        units = keep_reference_net_gathered(model)
        if accelerator.is_main_process and progress:
            from torch.distributed.fsdp import FSDPModule

            tqdm.write(f"FSDP2: parameters sharded over {world} processes in "
                       f"{sum(isinstance(m, FSDPModule) for m in model.modules())} units "
                       f"({units} in the ReferenceNet kept gathered from forward to backward)")
        own = dict(model.named_parameters())
        named = [(n, own[n]) for n in names]
        ema = make_ema(named)
        if resume_from is not None:
            from fada.training.sharding import load_optimizer_state
            from fada.training.state import optimizer_state_from_files

            opt_state, groups = optimizer_state_from_files(resume_from)
            load_optimizer_state(model, optimizer, {"state": opt_state, "param_groups": groups}, names)
            if ema is not None and (resume_from / "ema.safetensors").is_file():
                from safetensors.torch import load_file

                meta = json.loads((resume_from / "ema.json").read_text())
                ema.load_tensors(load_file(str(resume_from / "ema.safetensors")), meta["num_updates"])
        if validate is not None and accelerator.is_main_process and progress:
            tqdm.write("note: train.validate_every is skipped under FSDP (export a checkpoint and generate)")
        validate = None
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run_dir, step, accelerator.is_main_process)
    last_ckpt = latest_checkpoint(run_dir)
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    bar = tqdm(total=end, initial=step, desc="train", disable=not (progress and accelerator.is_main_process),
               dynamic_ncols=True)
    history: list[dict] = []
    sums: dict[str, float] = {}
    count = 0
    t0 = time.perf_counter()
    batches = iter(loader)
    model.train()
    try:
        while step < end:
            with accelerator.accumulate(model):
                batch = _move(next(batches), accelerator.device)
                with accelerator.autocast():
                    loss, metrics = task.loss(model, batch, generator)
                bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=accelerator.device)
                if accelerator.gather(bad.reshape(1)).sum() > 0:
                    where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
                    raise FadaError(f"loss became {loss.item()} at step {step + 1}: training stopped{where}")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_([p for _, p in named], cfg.max_grad_norm)
                    metrics = {**metrics, "grad_norm": float(full_tensor(grad_norm))}
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for k, v in {"loss": float(loss.detach()), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            if ema is not None:
                ema.update()
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                rate = count / max(time.perf_counter() - t0, 1e-9)
                record = {"step": step, **{k: v / count for k, v in sums.items()},
                          "lr": scheduler.get_last_lr()[0], "it_per_s": rate}
                history.append(record)
                log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", it_s=f"{rate:.2f}")
                sums, count, t0 = {}, 0, time.perf_counter()
            if step % cfg.checkpoint_every == 0 or step == end:
                accelerator.wait_for_everyone()
                rng_states = [rng_to_tensors(generator)]
                if world > 1:  # every rank's own random state, so that a resume restores each one
                    from accelerate.utils import gather_object

                    rng_states = gather_object(rng_states)
                full = {}
                if fsdp:  # gather the shards (every rank takes part); rank 0 writes them
                    from fada.training.sharding import full_model_state, full_optimizer_state

                    full = {"model_state": full_model_state(model),
                            "optimizer_state": full_optimizer_state(model, optimizer, names),
                            "ema_state": ema.state_tensors() if ema is not None else None}
                if accelerator.is_main_process:
                    last_ckpt = save_checkpoint(run_dir, step, accelerator.unwrap_model(model), optimizer, scheduler,
                                                ema, generator, recipe_yaml, extra=extra_state,
                                                keep_last=cfg.keep_last, rng_states=rng_states, **full)
            if validate is not None and cfg.validate_every and step % cfg.validate_every == 0 \
                    and accelerator.is_main_process:
                with accelerator.autocast():  # frozen parts may be in the training dtype
                    out = validate(accelerator.unwrap_model(model), step, run_dir)
                if out:
                    log.write({"step": step, **{f"val/{k}": v for k, v in out.items()}})
                model.train()
    finally:
        bar.close()
        log.close()
    accelerator.wait_for_everyone()
    return TrainResult(step, run_dir, last_ckpt, history, *counts)

