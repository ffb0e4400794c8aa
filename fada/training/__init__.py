"""Training machinery shared by the teacher and distillation stages."""

from fada.training.checkpoint import (EMAWeights, latest_checkpoint, list_checkpoints, load_checkpoint,
                                      load_model_weights, save_checkpoint)
from fada.training.loop import TrainResult, TrainTask, train
from fada.training.sampler import ResumableBatchSampler

__all__ = ["EMAWeights", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model_weights",
           "save_checkpoint", "TrainResult", "TrainTask", "train", "ResumableBatchSampler"]
