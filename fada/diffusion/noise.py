"""The video noise prior: per-frame Gaussian noise with a share common to every frame of a video.

A mixed noise model (Ge et al. 2023, "Preserve Your Own Correlation", PYoCo): for frames f of one video

    ε_f = √ρ · ε_shared + √(1 − ρ) · ε_f^ind,     ε_shared, ε_f^ind ~ N(0, I) independent,

so every ε_f is still N(0, I) (each frame is an ordinary noisy image for the diffusion math) while two frames'
noises correlate with coefficient ρ (``noise_share``). ρ = 0 is the plain independent noise of the paper and of
SD1.5 video models. With ρ > 0 the frames of a clip, and at generation the clips of a whole video (the shared part
is drawn once per video), start from correlated noise, so frame-to-frame differences come from the conditions
(audio, motion frames) rather than from the noise: a small net's samples stop flickering.

It is a sampling prior here (``model.noise_share``): training keeps Eq. 1's independent noise. On the demo's tiny
teacher, training under ρ = 1 as well scored lower held-out sync (0.44 against 0.54 when sampling at ρ = 1).

Latents are (B, C, F, h, w): the frame axis is 2.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

FRAME_AXIS = 2


def shared_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of the shared component of noise of ``shape`` (B, C, F, h, w): (B, C, 1, h, w)."""
    s = list(shape)
    if len(s) != 5:
        raise ValueError(f"video noise needs a (B, C, F, h, w) shape, got {tuple(s)}")
    s[FRAME_AXIS] = 1
    return tuple(s)


def mix_noise(independent: Tensor, shared: Tensor, share: float) -> Tensor:
    """√ρ·shared + √(1−ρ)·independent, ``shared`` broadcast over the frame axis (the PYoCo mixed prior)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"noise share must be in [0, 1], got {share}")
    return math.sqrt(share) * shared + math.sqrt(1.0 - share) * independent


def video_noise(shape: Sequence[int], generator: Optional[torch.Generator], share: float = 0.0,
                shared: Optional[Tensor] = None, device=None, dtype=None) -> Tensor:
    """Noise of ``shape`` (B, C, F, h, w) under the mixed prior with share ρ = ``share``.

    ``shared``: the common component (B, C, 1, h, w) to reuse (a video's, across its clips); None draws it from
    ``generator`` first. ρ = 0 draws exactly ``torch.randn(shape, generator=generator)`` (nothing else), so
    independent-noise runs are unchanged by this function."""
    if share == 0.0:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    if shared is None:
        shared = torch.randn(shared_shape(shape), generator=generator, device=device, dtype=dtype)
    if share == 1.0:
        return shared.expand(tuple(shape)).clone()
    ind = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return mix_noise(ind, shared.to(ind), share)


def clip_noises(shape: Sequence[int], seed: int, share: float = 0.0) -> Iterator[Tensor]:
    """One video's starting noises, clip after clip, each of ``shape`` (B, C, F, h, w): a generator seeded with
    ``seed`` draws the shared part once for the whole video (when ρ > 0), then each clip's noise in turn."""
    gen = torch.Generator().manual_seed(int(seed))
    shared = torch.randn(shared_shape(shape), generator=gen) if share > 0 else None
    while True:
        yield video_noise(shape, gen, share, shared=shared)
