"""Which metrics run, and running them over a pairing of generated / reference videos.

Requested names (``--metrics``), and what they report:

=========  =========================================================================================================
fid        ``fid``: FID of the pooled frames of the paired videos (every ``frame_stride``-th frame), Inception-v3
fvd        ``fvd``: FVD-R as DisCo computes it (FVD-3DRN50), over per-video 3D-ResNet-50 features (>= 2 pairs)
fvd_i      ``fvd_i``: FVD-I as StyleGAN-V computes it (fvd2048_16f, TorchScript I3D, first 16 frames)
sync       SyncNet ``sync_c`` / ``sync_d`` / ``sync_offset`` per generated video, when ``syncnet_v2.model`` is in
           --weights-dir; otherwise the weight-free ``sync_wf_conf`` / ``sync_wf_corr`` / ``sync_wf_offset``
           (``fada.metrics.av_sync``: mouth motion vs audio envelope; not SyncNet, not comparable with Sync-C/D)
sync_wf    the weight-free sync only
efid       ``efid`` from expression-coefficient files (``--coeffs DIR`` holding ``generated/<name>.npy`` and
           ``reference/<name>.npy``, or ``.safetensors``); without --coeffs the OpenCV substitute ``efid_sub``
iqa        every registered no-reference IQA score (``iqa_sharpness``, ``iqa_colorfulness``); or name one
regions    per paired video generated from the reference video's first frame and audio (the default face crop):
           ``psnr_mouth`` / ``psnr_elsewhere`` inside / outside the mouth box, ``mouth_corr``, ``noise_ratio``
           (``fada.evaluation.regions``), against the reference cropped as generation crops a portrait; with the
           still copy's (the first cropped frame held) ``still_psnr_mouth`` / ``still_psnr_elsewhere``
all        fid, fvd, fvd_i, sync, efid, iqa, regions
=========  =========================================================================================================

Sync and IQA are per generated video (paired or not; the sync audio is the video's own track); aggregates are
means over the videos. FID, FVD and E-FID use the paired videos only. A metric whose weights are missing is
skipped with the one-line reason; so is one that cannot be computed (too few videos, no references).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from fada.errors import FadaError, MissingFileError
from fada.evaluation.pairing import Pair, Pairing
from fada.evaluation.stats import RunningGaussian, frechet_running
from fada.metrics.fvd import COVARIANCE_DDOF, PROTOCOLS

GROUPS = ("fid", "fvd", "fvd_i", "sync", "sync_wf", "efid", "iqa", "regions")
ALL = ("fid", "fvd", "fvd_i", "sync", "efid", "iqa", "regions")
REGION_KEYS = ("psnr_mouth", "psnr_elsewhere", "mouth_corr", "noise_ratio", "still_psnr_mouth",
               "still_psnr_elsewhere")
SYNC_SR = 16000
WF_MAX_OFFSET = 15

#: reported name -> "lower" / "higher" is better (None: not a score)
DIRECTION = {
    "fid": "lower", "fvd": "lower", "fvd_i": "lower", "efid": "lower", "efid_sub": "lower",
    "sync_c": "higher", "sync_d": "lower", "sync_offset": None,
    "sync_wf_conf": "higher", "sync_wf_corr": "higher", "sync_wf_offset": None,
    "nfe_d": "lower", "wall_s_per_video_s": "lower",
    "psnr_mouth": "higher", "psnr_elsewhere": "higher", "mouth_corr": "higher",
}
#: per-video values that are bookkeeping, not quality (not plotted in sweeps)
COST_KEYS = ("nfe_d", "gen_seconds", "video_seconds", "wall_s_per_video_s")


def direction(name: str) -> Optional[str]:
    if name.startswith("iqa_"):
        return "higher"
    return DIRECTION.get(name)


@dataclass
class MetricPlan:
    requested: list[str]
    run: list[str]                                   # fid, fvd, fvd_i, sync (SyncNet), sync_wf, efid, efid_sub
    iqa: list[str] = field(default_factory=list)     # IQA scorer names
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return bool(self.run or self.iqa)

    @property
    def needs_reference(self) -> bool:
        return any(m in self.run for m in ("fid", "fvd", "fvd_i", "efid_sub", "regions"))

    def to_dict(self) -> dict:
        return {"requested": self.requested, "run": self.run + self.iqa}


def parse_metrics(metrics) -> list[str]:
    """Comma strings or lists -> requested names, in order, without duplicates; unknown names are an error."""
    from fada.metrics.iqa import iqa_names

    if isinstance(metrics, str):
        metrics = [metrics]
    names: list[str] = []
    for item in metrics or []:
        for m in str(item).split(","):
            m = m.strip().lower().replace("-", "_")
            if not m:
                continue
            expand = list(ALL) if m == "all" else [m]
            for e in expand:
                if e not in GROUPS and e not in iqa_names():
                    known = ", ".join(list(GROUPS) + ["all"] + iqa_names())
                    raise FadaError(f"--metrics: unknown metric {m!r} (known: {known})")
                if e not in names:
                    names.append(e)
    if not names:
        raise FadaError("--metrics: no metric named (e.g. --metrics fid,fvd,sync)")
    return names


def plan_metrics(metrics, weights_dir=None, coeffs=None) -> MetricPlan:
    """What runs and what is skipped (with the one-line reason), before any video is read."""
    from fada.metrics.iqa import iqa_names
    from fada.metrics.weights import available

    requested = parse_metrics(metrics)
    missing = available(weights_dir)
    plan = MetricPlan(requested, [])
    for m in requested:
        if m in ("fid", "fvd", "fvd_i"):
            if missing[m] is None:
                plan.run.append(m)
            else:
                plan.skipped[m] = missing[m]
        elif m == "sync":
            if missing["sync"] is None:
                plan.run.append("sync")
            else:
                plan.skipped["sync"] = f"{missing['sync']}; reporting the weight-free sync_wf_* instead " \
                                       f"(not SyncNet Sync-C/Sync-D)"
                if "sync_wf" not in plan.run:
                    plan.run.append("sync_wf")
        elif m == "regions":
            plan.run.append("regions")
        elif m == "sync_wf":
            if "sync_wf" not in plan.run:
                plan.run.append("sync_wf")
        elif m == "efid":
            if coeffs is not None:
                c = Path(coeffs).expanduser()
                if not c.is_dir():
                    raise MissingFileError(c, "--coeffs folder", "it holds generated/<name>.npy and "
                                                                  "reference/<name>.npy")
                plan.run.append("efid")
            else:
                plan.run.append("efid_sub")
                plan.notes.append("efid: no --coeffs folder, so the OpenCV substitute efid_sub is reported "
                                  "(not comparable with published E-FID)")
        elif m == "iqa":
            plan.iqa += [n for n in iqa_names() if n not in plan.iqa]
        elif m not in plan.iqa:
            plan.iqa.append(m)
    return plan


def _first_line(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Evaluator:
    """Loads the planned metric networks once; ``evaluate(pairing)`` -> {videos, metrics, skipped, notes, counts}."""

    def __init__(self, plan: MetricPlan, weights_dir=None, coeffs=None, frame_stride: int = 1,
                 device: Optional[str] = None, log: Callable[[str], None] = lambda s: None, detect_faces: bool = True):
        if int(frame_stride) != frame_stride or frame_stride < 1:
            raise FadaError(f"--frame-stride {frame_stride}: must be a positive integer")
        self.plan = plan
        self.weights_dir = weights_dir
        self.coeffs = Path(coeffs).expanduser() if coeffs is not None else None
        self.stride = int(frame_stride)
        self.device = device or default_device()
        self.log = log
        self.detect_faces = detect_faces
        self.models: dict = {}
        self.load_errors: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        from fada.metrics.fvd import FVDExtractor, I3DExtractor
        from fada.metrics.inception import FIDExtractor
        from fada.metrics.syncnet import SyncNetScorer

        makers = {"fid": FIDExtractor, "fvd": FVDExtractor, "fvd_i": I3DExtractor, "sync": SyncNetScorer}
        for m in list(self.plan.run):
            if m in makers:
                try:
                    self.models[m] = makers[m].from_weights_dir(self.weights_dir, device=self.device)
                except FadaError as e:  # a file that is there but is not the expected network
                    self.plan.run.remove(m)
                    self.plan.skipped[m] = _first_line(e)
                    if m == "sync" and "sync_wf" not in self.plan.run:
                        self.plan.run.append("sync_wf")
                        self.plan.skipped[m] += "; reporting the weight-free sync_wf_* instead"

    # -- one video -----------------------------------------------------------------------------------------------
    def _per_video(self, pair: Pair, frames: np.ndarray, fps: float, row: dict, cropper) -> None:
        from fada.metrics.iqa import iqa_score

        for name in self.plan.iqa:
            try:
                row[name] = iqa_score(frames, name)
            except FadaError as e:
                row["errors"][name] = _first_line(e)
        sync_kinds = [m for m in ("sync", "sync_wf") if m in self.plan.run]
        if not sync_kinds:
            return
        try:
            from fada.data.media import read_audio_track

            audio = read_audio_track(pair.generated, SYNC_SR)
            crops, how = cropper.crops(frames)
            row["face"] = how
        except FadaError as e:
            for k in sync_kinds:
                row["errors"][k] = _first_line(e)
            return
        if "sync" in sync_kinds:
            try:
                s = self.models["sync"].score(crops, audio, SYNC_SR, fps)
                row.update(sync_c=s["sync_c"], sync_d=s["sync_d"], sync_offset=s["offset"])
            except FadaError as e:
                row["errors"]["sync"] = _first_line(e)
        if "sync_wf" in sync_kinds:
            from fada.evaluation.faces import mouth_box
            from fada.metrics.av_sync import WeightFreeSync

            try:
                # shifts up to +-15 frames, fewer for clips so short that a shift would leave < 6 frames
                shift = max(1, min(WF_MAX_OFFSET, crops.shape[0] - 6))
                s = WeightFreeSync(max_offset=shift, mouth_box=mouth_box()).score(crops, audio, SYNC_SR, fps)
                row.update(sync_wf_conf=s["av_corr_conf"], sync_wf_corr=s["av_corr"], sync_wf_offset=s["av_offset"])
            except FadaError as e:
                row["errors"]["sync_wf"] = _first_line(e)

    def _regions(self, frames: np.ndarray, fps: float, ref: np.ndarray, ref_fps: float, row: dict) -> None:
        """Mouth / elsewhere scores of a generated video against its reference, cropped as the portrait was."""
        from fada.evaluation.faces import portrait_crops
        from fada.evaluation.regions import region_scores

        try:
            if abs(float(fps) - float(ref_fps)) > 0.01:
                raise FadaError(f"regions: the generated video is {fps:g} fps and its reference {ref_fps:g}; "
                                "frames must pair one to one (generate with --fps of the reference)")
            if frames.shape[1] != frames.shape[2]:
                raise FadaError(f"regions: the generated frames are {frames.shape[2]}x{frames.shape[1]}, not a "
                                "square portrait crop")
            truth = portrait_crops(ref, int(frames.shape[1]))
            got = region_scores(truth, frames)
            still = region_scores(truth, np.repeat(truth[:1], len(truth), axis=0))
        except FadaError as e:
            row["errors"]["regions"] = _first_line(e)
            return
        row.update({k: got[k] for k in REGION_KEYS[:4]})
        row.update(still_psnr_mouth=still["psnr_mouth"], still_psnr_elsewhere=still["psnr_elsewhere"])

    def _set_features(self, frames: np.ndarray) -> dict:
        """Features of one video for the set metrics: {metric: frame rows (N, D) or one video vector}."""
        out = {}
        sub = frames[::self.stride]
        if "fid" in self.plan.run:
            out["fid"] = self.models["fid"].features(sub)
        if "fvd" in self.plan.run:
            out["fvd"] = self.models["fvd"].features(frames)
        if "fvd_i" in self.plan.run:
            try:  # StyleGAN-V leaves out videos under 16 frames: this one only, the others metrics still count it
                out["fvd_i"] = self.models["fvd_i"].features(frames)
            except FadaError as e:
                out["errors"] = {"fvd_i": _first_line(e)}
        if "efid_sub" in self.plan.run:
            from fada.metrics.efid import expression_features_sub

            out["efid_sub"] = expression_features_sub(sub)
        return out

    # -- all videos ----------------------------------------------------------------------------------------------
    def evaluate(self, pairing: Pairing, extra_rows: Optional[dict[str, dict]] = None) -> dict:
        from fada.data.media import read_video
        from fada.evaluation.faces import FaceCropper

        cropper = FaceCropper(detect=self.detect_faces)
        frame_sets = ("fid", "efid_sub")
        video_sets = ("fvd", "fvd_i")
        # frame sets pool per-frame rows, video sets one row per video; both as streaming statistics
        ddof = {"fvd": COVARIANCE_DDOF["fvd"], "fvd_i": COVARIANCE_DDOF["fvd_i"]}
        running = {m: (RunningGaussian(ddof=ddof.get(m, 1)), RunningGaussian(ddof=ddof.get(m, 1)))
                   for m in frame_sets + video_sets if m in self.plan.run}
        set_metrics = [m for m in self.plan.run if m in frame_sets + video_sets]
        coeff_pairs: list[tuple[Path, Path]] = []
        rows = []
        n = len(pairing.items)
        for i, pair in enumerate(pairing.items, 1):
            self.log(f"[{i}/{n}] {pair.name}" + ("" if pair.paired else " (no reference)"))
            row: dict = {"name": pair.name, "generated": str(pair.generated),
                         "reference": str(pair.reference) if pair.reference else None, "errors": {}}
            row.update((extra_rows or {}).get(pair.name, {}))
            rows.append(row)
            try:
                frames, fps = read_video(pair.generated)
            except FadaError as e:
                row["errors"]["video"] = _first_line(e)
                continue
            row.update(frames=int(frames.shape[0]), fps=float(fps),
                       seconds=float(frames.shape[0] / fps) if fps else None)
            self._per_video(pair, frames, fps, row, cropper)
            if not pair.paired:
                continue
            if "efid" in self.plan.run:
                coeff_pairs.append((self._coeff_file("generated", pair.name), self._coeff_file("reference", pair.name)))
            if not set_metrics and "regions" not in self.plan.run:
                continue
            try:
                ref, ref_fps = read_video(pair.reference)
            except FadaError as e:
                row["errors"]["reference"] = _first_line(e)
                continue
            if "regions" in self.plan.run:
                self._regions(frames, fps, ref, ref_fps, row)
            if not set_metrics:
                continue
            try:
                g, r = self._set_features(frames), self._set_features(ref)
            except FadaError as e:
                row["errors"]["features"] = _first_line(e)
                continue
            for side in (g, r):
                row["errors"].update(side.pop("errors", {}))
            for m in running:
                if m in g and m in r:
                    running[m][0].update(g[m])
                    running[m][1].update(r[m])
        return self._aggregate(pairing, rows, running, coeff_pairs)

    def _coeff_file(self, side: str, name: str) -> Path:
        folder = self.coeffs / side
        for ext in (".npy", ".safetensors"):
            if (folder / f"{name}{ext}").is_file():
                return folder / f"{name}{ext}"
        return folder / f"{name}.npy"

    def _aggregate(self, pairing, rows, running, coeff_pairs) -> dict:
        from fada.metrics.efid import efid_from_coeff_files

        agg: dict = {}
        skipped = dict(self.plan.skipped)
        n_pairs = len(pairing.pairs)
        no_pairs = ("no generated video has a reference video of the same name" if pairing.reference_given
                    else "no reference videos (give --reference, or 'reference' in the --testset rows)")
        for m, (a, b) in running.items():
            if n_pairs == 0:
                skipped[m] = no_pairs
            elif min(a.n, b.n) < 2:
                what = "frames" if m in ("fid", "efid_sub") else "paired videos"
                extra = " (FVD is a distance over videos)" if m.startswith("fvd") else ""
                skipped[m] = f"{m} needs at least 2 {what} per side{extra}, got {min(a.n, b.n)}"
            else:
                agg[m] = frechet_running(a, b)
        if "efid" in self.plan.run:
            if not coeff_pairs:
                skipped["efid"] = no_pairs
            else:
                try:
                    agg["efid"] = efid_from_coeff_files([g for g, _ in coeff_pairs], [r for _, r in coeff_pairs])
                except FadaError as e:
                    skipped["efid"] = _first_line(e)
        per_keys = list(self.plan.iqa)
        if "sync" in self.plan.run:
            per_keys += ["sync_c", "sync_d", "sync_offset"]
        if "sync_wf" in self.plan.run:
            per_keys += ["sync_wf_conf", "sync_wf_corr", "sync_wf_offset"]
        if "regions" in self.plan.run:
            per_keys += list(REGION_KEYS)
        for k in per_keys:
            vals = [r[k] for r in rows if r.get(k) is not None]
            if vals:
                agg[k] = float(np.mean(vals))
            else:
                group = "sync_wf" if k.startswith("sync_wf") else "sync" if k.startswith("sync_") else \
                    "regions" if k in REGION_KEYS else k
                errs = [r["errors"].get(group) for r in rows if r["errors"].get(group)]
                errs += [r["errors"]["video"] for r in rows if "video" in r["errors"]]
                if group == "regions" and n_pairs == 0:
                    errs = [no_pairs]
                skipped.setdefault(group, errs[0] if errs else "no readable generated video")
        # generation cost (``--model``)
        if any("nfe_d" in r for r in rows):
            agg["nfe_d"] = float(np.mean([r["nfe_d"] for r in rows if "nfe_d" in r]))
            secs = sum(r["gen_seconds"] for r in rows if "gen_seconds" in r)
            vsecs = sum(r["video_seconds"] for r in rows if "video_seconds" in r)
            if vsecs > 0:
                agg["wall_s_per_video_s"] = secs / vsecs
        for r in rows:
            if not r["errors"]:
                del r["errors"]
        counts = pairing.summary()
        counts["failed"] = [r["name"] for r in rows if "errors" in r and
                            ({"video", "reference", "features"} & set(r["errors"]))]
        protocols = {m: PROTOCOLS[m] for m in agg if m in PROTOCOLS}
        return {"metrics": agg, "skipped": skipped, "notes": list(self.plan.notes), "protocols": protocols,
                "counts": counts, "videos": rows}
