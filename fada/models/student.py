"""A student from its teacher (paper §3.1: the student is initialised from the teacher): the same parts with the
teacher's weights, plus the student's CFG conditioning (Eq. 10) at its identity init."""

from __future__ import annotations

import copy
from typing import Optional

from fada.errors import FadaError

from . import avatar_folder as folder
from .cfg_tokens import CFG_MODES, TIME_COND_DIM


def from_teacher(teacher, cfg_mode: str, n_tokens: Optional[int] = None, cfg_norm: bool = False,
                 precond_windows: int = 0):
    """A student with the teacher's weights; its new CFG layers / tokens / cond_proj start at their init
    (CFG layer and cond_proj outputs zero, so the student initially equals the teacher on the noising path). A
    student of a net with audio blocks (Hallo's) reads its CFG layer after each audio block. It keeps the
    teacher's parametrisation (``schedule``). ``precond_windows``: K of a PeRFlow student, whose window-line inputs
    a preconditioned net maps to the path (``window_line_remap``); 0 for a TCD student or a net without
    preconditioning."""
    if cfg_mode not in CFG_MODES:
        raise FadaError(f"cfg.mode: unknown mode {cfg_mode!r} (choose one of {', '.join(CFG_MODES)})")
    top, parts = folder.top_config(teacher), copy.deepcopy(folder.part_configs(teacher))
    d = teacher.cross_attention_dim
    top["student"], top["cfg_mode"] = True, cfg_mode
    top["precond_windows"] = int(precond_windows) if teacher.precond_data_var > 0 else 0
    parts["denoising_net"]["cfg_dim"] = d if cfg_mode in ("tokens", "layer") else None
    parts["denoising_net"]["cfg_norm"] = bool(cfg_norm)
    parts["denoising_net"]["time_cond_dim"] = TIME_COND_DIM if cfg_mode == "time_embed" else None
    parts["cfg"] = {"mode": cfg_mode, "n_tokens": int(n_tokens or teacher.cfg.n_tokens), "dim": d,
                    "time_cond_dim": TIME_COND_DIM}
    student = folder.from_configs(type(teacher), top, parts, teacher.attention_backend)
    p = next(teacher.parameters())
    student.to(device=p.device, dtype=p.dtype)
    for name in ("reference_net", "audio_proj") + folder.present_parts(teacher)[len(folder.PARTS):]:
        getattr(student, name).load_state_dict(getattr(teacher, name).state_dict(), strict=True)
    res = student.denoising_net.load_state_dict(teacher.denoising_net.state_dict(), strict=False)
    new = set(student.denoising_net.new_layer_names())
    if res.unexpected_keys or set(res.missing_keys) - new:
        raise FadaError(f"teacher and student do not match: missing {sorted(set(res.missing_keys) - new)[:3]}, "
                        f"unexpected {sorted(res.unexpected_keys)[:3]}")
    return student.train(teacher.training)
