"""What ``maezoo run`` executes: a registered *system* with a typed config and a ``run`` method.

A recipe names its system (``system: mae``); the rest of the file is validated by the system's
``load_config(raw)`` (or its ``Config`` dataclass). :func:`maezoo.systems.runner.run_recipe` runs it once per
dataset (``datasets:``) and seed (``seeds:``), each in a run folder of its own, and merges the
:class:`~maezoo.results.Result` rows into one ``results.json`` (mean and std over seeds).

A system composes the engine's Trainer and registered protocols; it never trains in a loop of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from maezoo.results import Result


@dataclass
class RunContext:
    """Where and how one (dataset, seed) run of a system goes."""

    run_dir: Path
    seed: int = 0
    #: when set, run only this stage (e.g. ``linprobe``) on ``checkpoint``
    stage: str | None = None
    checkpoint: Path | None = None
    resume: bool = False


class System(Protocol):
    #: the dataclass recipes are validated against
    Config: ClassVar[type]

    @staticmethod
    def load_config(raw: dict[str, Any]) -> Any: ...

    @staticmethod
    def dump_config(cfg: Any) -> dict[str, Any]: ...

    def run(self, cfg: Any, ctx: RunContext) -> list[Result]: ...
