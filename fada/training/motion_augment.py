"""Motion-frame augmentation: a model that generates clip after clip conditions each clip on the last frames it
generated itself, while training conditions it on true frames. Its own small errors (a speckle, a shifted edge)
are then copied forward and added to, clip after clip, and the picture drifts from the portrait. Hallo2 corrupts
the motion frames during training (Gaussian noise, patch drop) so that the model takes the appearance from the
reference and only the motion from the past; this is that idea, with a whole-frame swap for the reference in
place of patch drop:

- with probability ``to_ref`` per sample the motion frames are the reference itself (as every video's first clip
  sees them), so the model learns clips that start from the portrait's pose;
- then Gaussian noise of a per-sample standard deviation drawn uniformly from [0, ``noise``] (latent units) is
  added, so the model learns to trust a motion frame's detail only as far as it is clean.

Generation conditions on its motion frames as they are (no noise is added there)."""

from __future__ import annotations

import torch
from torch import Tensor


def augment_motion(motion: Tensor, ref: Tensor, generator: torch.Generator, noise: float = 0.0,
                   to_ref: float = 0.0) -> Tensor:
    """motion (B, M, C, h, w) and ref (B, C, h, w) -> augmented motion frames (a new tensor; see the module
    docstring). Draws from ``generator`` only when an option is on, so recipes without it keep their random
    stream."""
    if motion.shape[1] == 0 or (noise <= 0 and to_ref <= 0):
        return motion
    B, device, dtype = motion.shape[0], motion.device, motion.dtype
    shape = (B, 1, 1, 1, 1)
    swap = torch.rand((B,), generator=generator, device=device) < to_ref
    std = torch.rand((B,), generator=generator, device=device) * noise
    eps = torch.randn(motion.shape, generator=generator, device=device, dtype=dtype)
    out = torch.where(swap.reshape(shape), ref[:, None].to(dtype).expand_as(motion), motion)
    return out + std.to(dtype).reshape(shape) * eps
