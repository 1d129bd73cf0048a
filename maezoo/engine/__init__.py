"""The training engine shared by every modality."""

from maezoo.engine.checkpoint import latest_checkpoint, load_model, save_model
from maezoo.engine.system import RunContext, System
from maezoo.engine.trainer import Trainer, TrainerConfig, TrainSummary

__all__ = ["RunContext", "System", "Trainer", "TrainerConfig", "TrainSummary", "latest_checkpoint", "load_model", "save_model"]
