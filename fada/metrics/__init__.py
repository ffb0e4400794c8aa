"""Evaluation metrics (paper §4.2): FID, FVD-R / FVD-I, Sync-C / Sync-D, E-FID, IQA, NFE-D and wall time.

The weighted metric networks (FID Inception-v3, 3D-ResNet-50, SyncNet, TorchScript I3D) are defined here in plain
torch with the upstream state-dict layouts and read from local files in ``--weights-dir`` (see ``weights``); the
Fréchet distance, the offset searches and the weight-free substitutes (``av_sync``, ``efid_sub``, ``iqa_*``) are
ours and need no weights. Heavy modules are imported lazily by their users; this package only re-exports names.
"""

from fada.metrics.av_sync import WeightFreeSync, audio_envelope, envelope_flux, mouth_motion, offset_search
from fada.metrics.efid import efid_from_coeff_files, efid_sub_from_videos, expression_features_sub, \
    load_expression_coeffs
from fada.metrics.frechet import frechet_distance, frechet_from_features, gaussian_stats
from fada.metrics.fvd import FVDExtractor, I3DExtractor, ResNet3D, fvd_from_videos, load_i3d_torchscript, \
    load_resnet3d_50, resnet3d_50
from fada.metrics.inception import FIDExtractor, FIDInceptionV3, load_fid_inception
from fada.metrics.iqa import DEFAULT_IQA, get_iqa, iqa_names, iqa_score, register_iqa
from fada.metrics.nfe import Timer, nfe_per_clip, nfe_speedup, throughput
from fada.metrics.syncnet import SyncNetScorer, SyncNetS, load_syncnet, mfcc_psf, sync_offset_search
from fada.metrics.weights import WEIGHT_FILES, available, locate, weights_for

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
