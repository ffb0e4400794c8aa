"""Evaluation metrics (paper §4.2): FID, FVD-R / FVD-I, Sync-C / Sync-D, E-FID, IQA, NFE-D and wall time.

The weighted metric networks (FID Inception-v3, 3D-ResNet-50, SyncNet, TorchScript I3D) are defined here in plain
torch with the upstream state-dict layouts and read from local files in ``--weights-dir`` (see ``weights``); the
Fréchet distance, the offset searches and the weight-free substitutes (``av_sync``, ``efid_sub``, ``iqa_*``) are
ours and need no weights. Names are re-exported lazily (PEP 562), so importing one light module (e.g. av_sync in curation workers) does
not load torch and every network.
"""

import importlib

_WHERE = {
    "WeightFreeSync": "av_sync",
    "audio_envelope": "av_sync",
    "envelope_flux": "av_sync",
    "mouth_motion": "av_sync",
    "offset_search": "av_sync",
    "efid_from_coeff_files": "efid",
    "efid_sub_from_videos": "efid",
    "expression_features_sub": "efid",
    "load_expression_coeffs": "efid",
    "frechet_distance": "frechet",
    "frechet_from_features": "frechet",
    "gaussian_stats": "frechet",
    "FVDExtractor": "fvd",
    "I3DExtractor": "fvd",
    "ResNet3D": "fvd",
    "fvd_from_videos": "fvd",
    "load_i3d_torchscript": "fvd",
    "load_resnet3d_50": "fvd",
    "resnet3d_50": "fvd",
    "FIDExtractor": "inception",
    "FIDInceptionV3": "inception",
    "load_fid_inception": "inception",
    "DEFAULT_IQA": "iqa",
    "get_iqa": "iqa",
    "iqa_names": "iqa",
    "iqa_score": "iqa",
    "register_iqa": "iqa",
    "Timer": "nfe",
    "nfe_per_clip": "nfe",
    "nfe_speedup": "nfe",
    "throughput": "nfe",
    "SyncNetScorer": "syncnet",
    "SyncNetS": "syncnet",
    "load_syncnet": "syncnet",
    "mfcc_psf": "syncnet",
    "sync_offset_search": "syncnet",
    "WEIGHT_FILES": "weights",
    "available": "weights",
    "locate": "weights",
    "weights_for": "weights",
}

__all__ = [
    "WeightFreeSync", "audio_envelope", "envelope_flux", "mouth_motion", "offset_search",
    "efid_from_coeff_files", "efid_sub_from_videos", "expression_features_sub", "load_expression_coeffs",
    "frechet_distance", "frechet_from_features", "gaussian_stats",
    "FVDExtractor", "I3DExtractor", "ResNet3D", "fvd_from_videos", "load_i3d_torchscript", "load_resnet3d_50",
    "resnet3d_50",
    "FIDExtractor", "FIDInceptionV3", "load_fid_inception",
    "DEFAULT_IQA", "get_iqa", "iqa_names", "iqa_score", "register_iqa",
    "Timer", "nfe_per_clip", "nfe_speedup", "throughput",
    "SyncNetScorer", "SyncNetS", "load_syncnet", "mfcc_psf", "sync_offset_search",
    "WEIGHT_FILES", "available", "locate", "weights_for",
]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"fada.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fada.metrics' has no attribute {name!r}")
