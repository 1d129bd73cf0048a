"""The training engine shared by every modality: one Trainer, checkpoints, logging, DDP. Imports no modality
and no protocol."""

from maezoo.engine.checkpoint import latest_checkpoint, load_model, save_model
from maezoo.engine.trainer import Trainer, TrainerConfig, TrainSummary

__all__ = ["Trainer", "TrainerConfig", "TrainSummary", "latest_checkpoint", "load_model", "save_model"]
