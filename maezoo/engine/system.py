"""What ``maezoo run`` executes: a registered *system* with a typed config and a ``run`` method.

A recipe names its system (``system: mae``) and the rest of the file is validated against the
system's ``Config`` dataclass. A system runs its stages (pre-training, then the downstream protocols
it lists) inside a run folder and returns :class:`~maezoo.results.Result` rows, which the command line
writes to ``results.json``.

New modalities add a system with ``@register("system", "name")`` (or reuse ``mae`` with their own
tokenizer/model/dataset registrations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from maezoo.results import Result


@dataclass
class RunContext:
    """Where and how a system runs."""

    run_dir: Path
    recipe: str
    #: when set, run only this stage (e.g. ``linprobe``) on ``checkpoint``
    stage: str | None = None
    checkpoint: Path | None = None
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class System(Protocol):
    #: the dataclass recipes are validated against
    Config: ClassVar[type]
    modality: ClassVar[str]

    def run(self, cfg: Any, ctx: RunContext) -> list[Result]: ...
