"""AvatarNet: the trainable model bundle (ReferenceNet, denoising net, audio projection, CFG conditioning, and
the identity projection of nets that read identity tokens), assembled and run: banks, audio tokens, the denoising
pass with its conditioning, and the sampler's ``model_fn`` (docs/architecture.md, "Model parts and their kinds").

Shapes: latents z (B, C, F, h, w); reference (B, C, h, w); motion frames (B, M, C, h, w); audio features
(B, F, 2w+1, L, D) -> audio tokens (B, F, N, D); the output (ε or v, ``schedule``) like z. A net with Hallo's parts
(``hallo_keys.hallo_avatar``) also reads a ``Portrait`` (face embedding, face region, region masks, motion
scale) through ``denoise`` / ``forward`` / ``model_fn``. Its folder of parts is ``avatar_folder``; a student is
made from its teacher by ``student``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from fada.diffusion import NoiseSchedule, as_schedule, line_output, precond_loss_weight, precondition, window_line_remap
from fada.errors import FadaError

from . import avatar_folder as folder
from .attention import Bank, read_split, resolve_backend
from .cfg_tokens import CFG_MODES, TIME_COND_DIM, CFGConditioning
from .conditioning import Conditioning, Portrait, portrait_fields
from .denoising_net import DenoisingNet
from .loading import build_unet, load_sd_unet, unet_config_dict
from .reference_net import ReferenceNet


def default_latent_channels(vae_cfg) -> int:
    return 4 if vae_cfg.kind == "sd" else 3 * int(vae_cfg.factor) ** 2


def default_audio_feature_shape(audio_cfg) -> tuple[int, int, int]:
    """(2w+1, L, D) of the weight-free mel front end; wav2vec2's depends on the checkpoint (pass it explicitly)."""
    if audio_cfg.kind == "mel":
        return (2 * int(audio_cfg.window) + 1, 1, int(audio_cfg.n_mels))
    raise FadaError("audio.kind 'wav2vec2': pass audio_feature_shape (2w+1, layers, dim) of the front end")


def _mask(m, n: int, device) -> Tensor:
    if m is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    return torch.as_tensor(m, device=device).bool().reshape(-1).expand(n)


class AvatarNet(nn.Module):
    """Trainable parts of the avatar model. Build with ``build_avatar_net``, ``from_teacher`` or
    ``from_pretrained``."""

    def __init__(self, reference_net: ReferenceNet, denoising_net: DenoisingNet, audio_proj: nn.Module,
                 cfg: CFGConditioning, *, student: bool, latent_channels: int,
                 audio_feature_shape: tuple[int, int, int], attention_backend: str = "auto",
                 precond_data_var: float = 0.0, precond_ref_var: float = 0.0, precond_windows: int = 0,
                 identity_proj: Optional[nn.Module] = None, schedule: Optional[NoiseSchedule] = None):
        super().__init__()
        # the parametrisation the net was trained in (its output is ε or v on this ᾱ); a student keeps its teacher's
        self.schedule = as_schedule(schedule)
        self.precond_data_var = float(precond_data_var)
        self.precond_ref_var = float(precond_ref_var)
        # > 0 (a preconditioned PeRFlow student with this many windows): its window-line inputs are mapped to the
        # equivalent noising-path point before the net (fada.diffusion.window_line_remap); 0: teacher, TCD
        self.precond_windows = int(precond_windows)
        self.reference_net = reference_net
        self.denoising_net = denoising_net
        self.audio_proj = audio_proj
        self.cfg = cfg
        self.identity_proj = identity_proj  # IdentityProjection where the UNets' attn2 read identity tokens
        self.student = bool(student)
        self.latent_channels = int(latent_channels)
        self.audio_feature_shape = tuple(int(x) for x in audio_feature_shape)
        self._check_consistency()
        self.attention_backend = resolve_backend(attention_backend)
        self.set_attention_backend(self.attention_backend)
        self.frozen_reference_parameters = self.reference_net.unused_parameter_names()
        self.freeze_unused_()

    # ----------------------------------------------------------------------------------------------------------
    @property
    def cfg_mode(self) -> str:
        return self.cfg.mode

    @property
    def cross_attention_dim(self) -> int:
        return self.denoising_net.cross_attention_dim

    @property
    def n_audio_tokens(self) -> int:
        return int(self.audio_proj.config["n_tokens"])

    def _check_consistency(self) -> None:
        d = self.cross_attention_dim
        rc, dc = unet_config_dict(self.reference_net.unet), self.denoising_net.base_unet_config()
        dc["time_cond_proj_dim"] = rc.get("time_cond_proj_dim")
        if rc != dc:
            diff = sorted(k for k in set(rc) | set(dc) if rc.get(k) != dc.get(k))
            raise FadaError(f"reference_net and denoising_net UNets differ in {', '.join(diff)}")
        if int(self.audio_proj.config["out_dim"]) != self.denoising_net.audio_dim:
            raise FadaError(f"audio projection width {self.audio_proj.config['out_dim']} != the denoising net's "
                            f"audio width {self.denoising_net.audio_dim}")
        reads_identity = self.denoising_net.parts["attn2"] == "identity"
        if reads_identity != (self.identity_proj is not None):
            raise FadaError("identity_proj: needed exactly when the denoising net's attn2 reads identity tokens")
        if reads_identity and int(self.identity_proj.config["dim"]) != d:
            raise FadaError(f"identity projection width {self.identity_proj.config['dim']} != UNet cross-attention "
                            f"width {d}")
        if self.cfg.mode not in CFG_MODES:
            raise FadaError(f"cfg.mode: unknown mode {self.cfg.mode!r}")
        if not self.student and self.cfg.mode != "none":
            raise FadaError(f"cfg.mode: the teacher takes no CFG conditioning, got {self.cfg.mode!r}")
        if self.cfg.uses_layers and (self.cfg.dim != d or self.denoising_net.cfg_dim != d):
            raise FadaError(f"CFG conditioning width {self.cfg.dim} / layers {self.denoising_net.cfg_dim} != {d}")
        if self.cfg.mode == "time_embed" and self.denoising_net.time_cond_dim != self.cfg.time_cond_dim:
            raise FadaError("cfg.mode 'time_embed': the UNet's time_cond_proj_dim does not match the CFG embedding")
        if self.cfg.mode != "time_embed" and self.denoising_net.time_cond_dim is not None:
            raise FadaError(f"cfg.mode {self.cfg.mode!r}: the denoising UNet has an unexpected time_cond_proj")
        if not self.cfg.uses_layers and self.denoising_net.cfg_dim:
            raise FadaError(f"cfg.mode {self.cfg.mode!r}: the denoising net has unexpected CFG layers")
        if self.denoising_net.latent_channels != self.latent_channels:
            raise FadaError(f"UNet in_channels {self.denoising_net.latent_channels} != latent channels "
                            f"{self.latent_channels}")

    def freeze_unused_(self) -> "AvatarNet":
        """requires_grad False on ReferenceNet parameters that cannot reach the bank (they would never get a
        gradient; DDP without find_unused_parameters rejects such parameters)."""
        params = dict(self.named_parameters())
        for n in self.frozen_reference_parameters:
            params["reference_net." + n].requires_grad_(False)
        return self

    def set_attention_backend(self, backend: str = "auto") -> None:
        self.attention_backend = resolve_backend(backend)
        self.reference_net.set_attention_backend(self.attention_backend)
        self.denoising_net.set_attention_backend(self.attention_backend)

    def enable_gradient_checkpointing(self) -> None:
        self.reference_net.unet.enable_gradient_checkpointing()
        self.denoising_net.unet.enable_gradient_checkpointing()  # also reaches the CFG/temporal wrappers

    def disable_gradient_checkpointing(self) -> None:
        self.reference_net.unet.disable_gradient_checkpointing()
        self.denoising_net.unet.disable_gradient_checkpointing()

    # ----------------------------------------------------------------------------------------------------------
    def encode_bank(self, ref_latents: Tensor, motion_latents: Optional[Tensor] = None,
                    ref_bank: Optional[Bank] = None, identity_tokens: Optional[Tensor] = None) -> Bank:
        """Run the ReferenceNet once per clip (t = 0, clean latents) -> Bank reused at every denoising step.

        ``ref_bank`` (from ``encode_bank(ref_latents)``) skips re-encoding the reference: the ReferenceNet treats
        every view as its own image (per-image norms and self-attention), so a video's reference bank is computed
        once and only the M motion frames are encoded per clip. ``identity_tokens``: what the ReferenceNet's attn2
        reads, (B, N, D) or per view (B, 1+M, N, D) (nets whose attn2 reads identity tokens)."""
        if ref_bank is None:
            return self.reference_net(ref_latents, motion_latents, identity_tokens=identity_tokens)
        if identity_tokens is not None:
            raise ValueError("encode_bank: identity_tokens with a ref_bank; encode the clip's views together")
        if motion_latents is None or motion_latents.shape[1] == 0:
            return ref_bank
        b, m = motion_latents.shape[:2]
        motion = self.reference_net(motion_latents.reshape(b * m, *motion_latents.shape[2:]))
        return Bank.concat_views([ref_bank, motion.join_views(m)])

    def encode_portrait_bank(self, ref_latents: Tensor, motion_latents: Optional[Tensor], portrait: Optional[Portrait],
                             keep_ref=None) -> Bank:
        """A one-pass bank whose rows keep their reference per ``keep_ref`` (B,): a net whose ReferenceNet reads
        identity tokens (Hallo's) reads each row's own, a zero embedding's where the reference is dropped; any other
        net encodes the clip as it is (the bank is tiled over stacked branches)."""
        ident = None
        if portrait is not None and portrait.face_embeds is not None and self.identity_proj is not None:
            ident = self.identity_proj.tokens(portrait.face_embeds, keep_ref)
        return self.encode_bank(ref_latents, motion_latents, identity_tokens=ident)

    def encode_guidance_bank(self, ref_latents: Tensor, motion_latents: Optional[Tensor], face_embeds: Tensor,
                             keep_ref) -> Bank:
        """The bank of stacked guidance branches whose rows keep the reference per ``keep_ref`` (one bool per
        branch, in ``Guidance.branches`` order), one ReferenceNet pass over every branch's views. Hallo's own CFG
        batch, two branches [uncond, cond], is encoded as Hallo encodes it: the branches' identity tokens tiled
        over the views (``identity.cfg_writer_tokens``: its ``repeat`` interleaves them). Any other batch (one
        branch; Eq. 9's three, which Hallo never ran) reads its own branch's tokens, as training encodes every
        row. Batch: len(keep_ref)·B, in branch order, for ``model_fn``."""
        from .identity import cfg_writer_tokens

        s, b = len(keep_ref), ref_latents.shape[0]
        keep = torch.as_tensor(keep_ref, dtype=torch.bool).repeat_interleave(b)
        tokens = self.identity_proj.tokens(torch.cat([face_embeds] * s), keep.to(face_embeds.device))
        views = 1 + (0 if motion_latents is None else motion_latents.shape[1])
        motion = None if motion_latents is None else torch.cat([motion_latents] * s)
        ident = cfg_writer_tokens(tokens, views) if s == 2 else tokens
        return self.encode_bank(torch.cat([ref_latents] * s), motion, identity_tokens=ident)

    def audio_tokens(self, audio_features: Tensor, keep_audio: Optional[Tensor] = None) -> Tensor:
        """(B, F, 2w+1, L, D) -> (B, F, N, D_cross); all-zero tokens for samples with keep_audio False."""
        if audio_features.ndim != 5 or tuple(audio_features.shape[2:]) != self.audio_feature_shape:
            raise ValueError(f"audio_features must be (B, F, {', '.join(map(str, self.audio_feature_shape))}), "
                             f"got {tuple(audio_features.shape)}")
        p = next(self.audio_proj.parameters())
        tokens = self.audio_proj(audio_features.to(device=p.device, dtype=p.dtype))
        if keep_audio is not None:
            keep = _mask(keep_audio, tokens.shape[0], tokens.device)[:, None, None, None]
            tokens = torch.where(keep, tokens, torch.zeros_like(tokens))
        return tokens

    def cfg_inputs(self, cfg_scales, batch: int, device) -> tuple[Optional[Tensor], Optional[Tensor]]:
        if self.cfg.mode == "none":
            return None, None
        if cfg_scales is None:
            raise ValueError(f"this student (cfg.mode {self.cfg.mode!r}) needs cfg_scales (B, 2) = (cfg_a, cfg_r)")
        s = torch.as_tensor(cfg_scales, dtype=torch.float32, device=device).reshape(-1, 2)
        if s.shape[0] == 1:
            s = s.expand(batch, 2)
        if s.shape[0] != batch:
            raise ValueError(f"cfg_scales must be (B={batch}, 2), got {tuple(s.shape)}")
        return self.cfg(s)

    def _prior_var(self, n: int, keep_ref, has_ref: bool, device) -> Tensor:
        """(n,) variance of the preconditioning's x0 prior: ``precond_ref_var`` around the reference for samples
        that read one (``unet.precond_ref_var`` > 0), ``precond_data_var`` around 0 for the others."""
        var = torch.full((n,), self.precond_data_var, device=device)
        if self.precond_ref_var > 0 and has_ref:
            var = torch.where(_mask(keep_ref, n, device), torch.full_like(var, self.precond_ref_var), var)
        return var

    def eps_loss_weight(self, t: Tensor, keep_ref=None) -> Optional[Tensor]:
        """Per-sample weight of an ε-MSE loss at train timesteps t (B,): 1/κ(t)² for a preconditioned net (a loss
        uniform in its raw output, see fada.diffusion.precond_loss_weight); None (weight 1, plain Eq. 1) otherwise.
        ``keep_ref`` (B,) says which samples had their reference (training always passes one)."""
        if self.precond_data_var <= 0:
            return None
        tau = self._path_input(None, t)[1]
        return precond_loss_weight(tau, self._prior_var(t.shape[0], keep_ref, True, tau.device), self.schedule)

    def _path_input(self, z: Optional[Tensor], t) -> tuple[Optional[Tensor], Tensor]:
        """(z, t) as the preconditioned net reads them: a PeRFlow student's window-line point is mapped to the
        equivalent noising-path point (``window_line_remap``); anything else is returned as it is."""
        if self.precond_data_var <= 0 or self.precond_windows <= 0:
            return z, t
        n = z.shape[0] if z is not None else torch.as_tensor(t).reshape(-1).shape[0]
        tt = torch.as_tensor(t, dtype=torch.float32).cpu().reshape(-1).expand(n)
        scale, tau = window_line_remap(tt, self.precond_windows, self.schedule)
        if z is not None:
            tau = tau.to(z.device)
            z = z * scale.to(z.device, z.dtype).reshape(-1, *([1] * (z.dim() - 1)))
        return z, tau

    def denoise(self, z: Tensor, t, audio_tokens: Tensor, bank: Optional[Bank], keep_ref=None,
                cfg_scales=None, portrait: Optional[Portrait] = None, read_split=None) -> Tensor:
        """The denoising pass from already projected audio tokens (``portrait``: the portrait conditions of the
        batch's clips, or of a batch k× smaller, tiled; ``read_split``: ``keep_ref``'s bank-reading rows decided
        beforehand, ``attention.read_split``)."""
        cfg_tokens, tcond = self.cfg_inputs(cfg_scales, z.shape[0], z.device)
        line_t = t
        z, t = self._path_input(z, t)
        if portrait is not None:
            n_p = (portrait.face_embeds if portrait.face_embeds is not None else portrait.face_region).shape[0]
            portrait = portrait.tile(z.shape[0] // n_p)
        fields = portrait_fields(portrait, None if keep_ref is None else _mask(keep_ref, z.shape[0], z.device),
                                 self.identity_proj, self.denoising_net.face_locator)
        cond = Conditioning(audio_tokens, bank, keep_ref, cfg_tokens=cfg_tokens, timestep_cond=tcond,
                            read_split=read_split, **fields)
        out = self.denoising_net(z, t, cond=cond)
        if self.precond_data_var > 0:  # EDM-style preconditioning of the output (CPU-scale nets; see UNetConfig)
            n = z.shape[0]
            tt = torch.as_tensor(t, device=z.device, dtype=torch.float32).reshape(-1).expand(n)
            mean = None
            if self.precond_ref_var > 0 and bank is not None:
                mean = bank.view_latents((0,), keep_ref).to(z.device)[:, :, None]  # (B, C, 1, h, w): every frame
            var = self._prior_var(n, keep_ref, bank is not None, z.device)
            out = precondition(z, out, tt, var, self.schedule, mean)
            if self.precond_windows > 0:  # the path point's output, read as the window's (perflow.line_output)
                lt = torch.as_tensor(line_t, dtype=torch.float32).reshape(-1).expand(n)
                out = line_output(out, z, tt, lt, self.precond_windows, self.schedule)
        return out

    def forward(self, z: Tensor, t: Tensor, audio_features: Tensor, bank: Optional[Bank],
                keep_audio: Optional[Tensor] = None, keep_ref: Optional[Tensor] = None,
                cfg_scales: Optional[Tensor] = None, ref_latents: Optional[Tensor] = None,
                motion_latents: Optional[Tensor] = None, portrait: Optional[Portrait] = None) -> Tensor:
        """z (B, C, F, h, w), t (B,) train timesteps (float), audio_features (B, F, 2w+1, L, D), bank (batch B) or
        None, keep_audio / keep_ref (B,) bool (None = keep), cfg_scales (B, 2) for CFG students -> eps like z.

        Training passes ``ref_latents`` (B, C, h, w) and ``motion_latents`` (B, M, C, h, w) instead of a bank, so
        that the ReferenceNet runs inside this forward (what DistributedDataParallel needs to sync its grads)."""
        if ref_latents is not None:
            if bank is not None:
                raise ValueError("pass either bank or ref_latents, not both")
            bank = self.encode_portrait_bank(ref_latents, motion_latents, portrait, keep_ref)
        if audio_features.shape[:2] != (z.shape[0], z.shape[2]):
            raise ValueError(f"audio_features (B, F, …) {tuple(audio_features.shape[:2])} do not match z "
                             f"(B, C, F, …) {tuple(z.shape)}")
        eps = self.denoise(z, t, self.audio_tokens(audio_features, keep_audio), bank, keep_ref, cfg_scales,
                           portrait)
        if ref_latents is not None and torch.is_grad_enabled() and not _mask(keep_ref, z.shape[0], z.device).any():
            # no sample read the bank: a zero-weighted term keeps the ReferenceNet in the graph, so that DDP's
            # gradient reduction (which expects every trained parameter) still completes on this step
            eps = eps + 0.0 * sum(v.mean() for v in bank.tokens.values()).to(eps.dtype)
        return eps

    def model_fn(self, bank: Optional[Bank], audio_features: Tensor, cfg_scales: Optional[Tensor] = None,
                 portrait: Optional[Portrait] = None, branch_keep_ref: Optional[Sequence[bool]] = None
                 ) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
        """fada.diffusion's ``model_fn(z, t_index, keep_audio, keep_ref) -> eps`` with bank, audio, CFG scales
        and portrait bound. When z's batch is k× the bound batch (the stacked Eq. 9 branches, torch.cat order),
        they are tiled k times; a bank whose batch already equals z's (``encode_guidance_bank``) is used as it
        is. Under no_grad the projected audio tokens, tiled banks and face-locator features are cached.

        ``branch_keep_ref``: keep_ref of each of the k stacked branches as the sampler will pass it (a plan's
        ``branches``); the bank-reading rows are then decided once on the host instead of found from the
        keep_ref tensor at every forward (``attention.ReadSplit``)."""
        base = audio_features.shape[0]
        cache: dict = {}
        if portrait is not None and not torch.is_grad_enabled():
            portrait = portrait.with_features(self.denoising_net.face_locator)

        def fn(z: Tensor, t_index, keep_audio=None, keep_ref=None) -> Tensor:
            n = z.shape[0]
            if n % base:
                raise ValueError(f"model_fn: batch {n} is not a multiple of the bound batch {base}")
            rep = n // base
            caching = not torch.is_grad_enabled()
            if caching and rep in cache:
                tokens, bk, split = cache[rep]
            else:
                tokens = self.audio_tokens(audio_features)
                tokens = torch.cat([tokens] * rep) if rep > 1 else tokens
                bk = None if bank is None else bank if bank.batch_size == n else bank.repeat(rep)
                split = None
                if bk is not None and branch_keep_ref is not None and len(branch_keep_ref) == rep:
                    split = read_split([k for k in branch_keep_ref for _ in range(base)], n, z.shape[2], z.device,
                                       self.denoising_net.parts["bank_pairing"] == "tiled")
                if caching:
                    cache[rep] = (tokens, bk, split)
            ka = _mask(keep_audio, n, tokens.device)[:, None, None, None]
            tok = torch.where(ka, tokens, torch.zeros_like(tokens))
            scales = None
            if cfg_scales is not None:
                scales = torch.as_tensor(cfg_scales, dtype=torch.float32, device=z.device).reshape(-1, 2)
                if rep > 1 and scales.shape[0] == base:
                    scales = torch.cat([scales] * rep)
            t = torch.as_tensor(t_index, device=z.device).float()
            t = t.expand(n) if t.ndim == 0 else t.reshape(n)
            return self.denoise(z, t, tok, bk, _mask(keep_ref, n, z.device), scales, portrait, split)

        return fn

    # ----------------------------------------------------------------------------------------------------------
    # -- the folder of parts (avatar_folder) and students (student) ---------------------------------------------
    @property
    def present_parts(self) -> tuple:
        """The parts this net has: PARTS, then the optional ones it carries."""
        return folder.present_parts(self)

    def part_configs(self) -> dict:
        return folder.part_configs(self)

    def top_config(self) -> dict:
        return folder.top_config(self)

    @classmethod
    def from_configs(cls, top: dict, parts: dict, attention_backend: str = "auto",
                     sources: Optional[dict] = None) -> "AvatarNet":
        """Randomly initialised AvatarNet from ``top_config()`` / ``part_configs()`` dicts."""
        return folder.from_configs(cls, top, parts, attention_backend, sources)

    def save_pretrained(self, directory, dtype: Optional[torch.dtype] = None) -> Path:
        """Write the folder of parts (``avatar_folder``; ``dtype``: cast floating tensors, e.g. fp16)."""
        return folder.save(self, directory, dtype)

    @classmethod
    def from_pretrained(cls, directory, attention_backend: str = "auto",
                        dtype: Optional[torch.dtype] = None) -> "AvatarNet":
        return folder.load(cls, directory, attention_backend, dtype)

    @classmethod
    def from_config_file(cls, path) -> "AvatarNet":
        """Randomly initialised AvatarNet from a checkpoint's ``net_config.json`` ({"top": ..., "parts": ...})."""
        return folder.from_config_file(cls, path)

    @classmethod
    def from_teacher(cls, teacher: "AvatarNet", cfg_mode: str, n_tokens: Optional[int] = None,
                     cfg_norm: bool = False, precond_windows: int = 0) -> "AvatarNet":
        """A student initialised from ``teacher`` (``fada.models.student.from_teacher``)."""
        from .student import from_teacher

        return from_teacher(teacher, cfg_mode, n_tokens, cfg_norm, precond_windows)


def build_avatar_net(model_cfg, student: bool = False, latent_channels: Optional[int] = None,
                     audio_feature_shape: Optional[tuple[int, int, int]] = None,
                     attention_backend: Optional[str] = None) -> AvatarNet:
    """AvatarNet for a ``ModelConfig``: both UNets from ``unet.pretrained`` (a local SD1.5 folder) or from the
    shape fields; student=True adds the CFG conditioning of ``cfg.mode`` (the teacher needs mode 'none').

    latent_channels: default from ``vae`` (sd: 4; pixel: 3·factor²). audio_feature_shape: (2w+1, L, D) of the
    audio front end (default: the mel front end's).
    """
    from .audio import build_audio_projection

    mode = model_cfg.cfg.mode
    if mode not in CFG_MODES:
        raise FadaError(f"cfg.mode: unknown mode {mode!r} (choose one of {', '.join(CFG_MODES)})")
    if not student and mode != "none":
        raise FadaError(f"cfg.mode: the teacher takes no CFG conditioning; set cfg.mode=none (got {mode!r})")
    backend = resolve_backend(attention_backend or model_cfg.attention_backend)
    lc = int(latent_channels or default_latent_channels(model_cfg.vae))
    afs = tuple(audio_feature_shape or default_audio_feature_shape(model_cfg.audio))
    ucfg = model_cfg.unet
    if ucfg.pretrained:
        base = load_sd_unet(ucfg.pretrained)
        if int(base.config.in_channels) != lc:
            raise FadaError(f"unet.pretrained: the UNet takes {base.config.in_channels} latent channels but the "
                            f"codec (vae.kind={model_cfg.vae.kind!r}) gives {lc}")
    else:
        down = 8 if model_cfg.vae.kind == "sd" else int(model_cfg.vae.factor)
        base = build_unet(ucfg, lc, sample_size=max(1, int(model_cfg.resolution) // down))
    d = int(base.config.cross_attention_dim)
    ref = ReferenceNet(copy.deepcopy(base))
    den = DenoisingNet(base, ucfg.temporal_heads, ucfg.max_frames,
                       cfg_dim=d if student and mode in ("tokens", "layer") else None,
                       time_cond_dim=TIME_COND_DIM if student and mode == "time_embed" else None,
                       bank_positions=ucfg.bank_positions, reference_concat=ucfg.reference_concat,
                       motion_concat=ucfg.motion_concat, cfg_norm=model_cfg.cfg.normalize)
    try:
        audio = build_audio_projection(model_cfg.audio, afs, out_dim=d)
    except ValueError as e:
        raise FadaError(f"audio: {e}") from None
    cfg = CFGConditioning(mode if student else "none", model_cfg.cfg.n_tokens, d)
    return AvatarNet(ref, den, audio, cfg, student=student, latent_channels=lc, audio_feature_shape=afs,
                     attention_backend=backend, precond_data_var=ucfg.precond_data_var,
                     precond_ref_var=ucfg.precond_ref_var, schedule=model_cfg.schedule.build())
