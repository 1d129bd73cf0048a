"""Named model presets, timm style: every registered size is a function whose name is its registry name.

::

    @register("model", "wave_mae_tiny")
    @preset(wave_mae, embed_dim=192, depth=12, num_heads=3)
    def wave_mae_tiny(**kwargs: Any) -> MaskedAutoencoder:
        \"\"\"WaveMAE ViT-Ti ...\"\"\"
        return wave_mae(**kwargs)

The decorated function receives the preset's values under the caller's keyword arguments, and its signature
is ``base``'s with the preset's values as defaults, so recipes are checked against it
(:func:`maezoo.config.check_args`) and ``inspect.signature`` shows the real defaults. A ``smoke_kwargs`` of
``base`` (the tiny configuration the registry test builds) carries over unless the preset sets its own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def preset(base: Callable[..., T], **values: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Declare the decorated builder as ``base`` with ``values`` as its defaults (module docstring)."""
    sig = inspect.signature(base, eval_str=True)
    unknown = sorted(set(values) - set(sig.parameters))
    if unknown:
        raise TypeError(f"preset of {base.__name__} sets {', '.join(unknown)}, which it does not take")
    params = [p.replace(default=values[p.name]) if p.name in values else p for p in sig.parameters.values()]

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def builder(**kwargs: Any) -> T:
            return fn(**{**values, **kwargs})

        builder.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        builder.preset_of = base  # type: ignore[attr-defined]
        builder.preset_values = dict(values)  # type: ignore[attr-defined]
        if hasattr(base, "smoke_kwargs") and not hasattr(fn, "smoke_kwargs"):
            builder.smoke_kwargs = dict(base.smoke_kwargs)  # type: ignore[attr-defined]
        return builder

    return decorate


__all__ = ["preset"]
