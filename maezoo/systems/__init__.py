"""Systems: pre-training + protocol pipelines, above the engine and the protocols, below the CLI."""

from maezoo.systems import pretrain  # noqa: F401  (registers the `mae` system)
from maezoo.systems.base import RunContext, System
from maezoo.systems.runner import load_recipe, run_recipe

__all__ = ["RunContext", "System", "load_recipe", "run_recipe"]
