"""Deterministic, resumable data order.

Each epoch is a permutation drawn from (seed, epoch); process ``rank`` of ``world_size`` takes every
world_size-th batch. The sampler yields ``(index, epoch)`` so the dataset can seed its own per-item randomness
(clip start, reference frame) from the same numbers: resuming at step k replays exactly what an uninterrupted
run would have seen.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        if num_items < batch_size * world_size:
            raise ValueError(f"{num_items} items cannot fill one batch of {batch_size} on {world_size} process(es)")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step = start_step
        self._cache: tuple[int, list[list[int]]] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        perm = torch.randperm(self.num_items, generator=g).tolist()
        n = self.steps_per_epoch * self.batch_size * self.world_size
        batches = [perm[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        self._cache = (epoch, batches[self.rank::self.world_size])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:  # endless: the training loop decides when to stop
            epoch, within = divmod(step, self.steps_per_epoch)
            batch = self._epoch_batches(epoch)[within]
            yield [(i, epoch) for i in batch]
            step += 1

    def __len__(self) -> int:  # one epoch; the iterator itself never ends
        return self.steps_per_epoch
