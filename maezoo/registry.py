"""One registry for every pluggable component.

Built-ins register with a decorator::

    @register("tokenizer", "image")
    class PatchTokenizer(Tokenizer): ...

Third-party packages register without touching maezoo, through the entry-point group
``maezoo.<kind>s`` (``maezoo.tokenizers``, ``maezoo.maskings``, ``maezoo.models``, ...). An entry
point's value is either the component itself (registered under the entry point's name) or a module,
whose import runs its own ``@register`` decorators::

    [project.entry-points."maezoo.tokenizers"]
    wave = "maezoo_wave:WaveTokenizer"

Names are looked up lazily: plugins are loaded the first time a kind is listed or a name is
missing from the built-ins.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import types
from collections.abc import Callable
from typing import Any

KINDS = (
    "tokenizer",  # raw input -> tokens on a grid (image patches, tubelets, spectrogram patches, nodes)
    "vocab",  # text -> ids (word-piece vocabularies; what a text tokenizer embeds)
    "masking",  # token grid -> which tokens are hidden
    "target",  # tokenizer's patchified input -> reconstruction target (raw, norm)
    "loss",  # masked-only reconstruction losses
    "encoder",  # visible (or mask-replaced) tokens -> latent
    "decoder",  # latent -> per-token prediction
    "model",  # builders of whole systems (mae_vit_base_patch16, graphmae, ...)
    "head",  # downstream heads
    "metric",  # downstream metrics (top-1, mAP, MSE, ...)
    "dataset",  # dataset builders used by recipes
    "protocol",  # downstream protocols: (model, data, settings, env) -> ProtocolOutput (knn, linprobe, svm, ...)
    "system",  # what `maezoo run` executes for a recipe (pre-training + stages)
    "visualizer",  # per-tokenizer reconstruction figures, keyed by the tokenizer's registered name
)

_REGISTRY: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
_PLUGINS_LOADED: set[str] = set()


class RegistryError(KeyError):
    """Unknown kind or name; the message lists what is known."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise RegistryError(f"unknown registry kind {kind!r}; known kinds: {', '.join(KINDS)}")


def entry_point_group(kind: str) -> str:
    """The entry-point group third-party packages use for ``kind`` (e.g. ``maezoo.tokenizers``)."""
    return f"maezoo.{kind}s"


def register(kind: str, name: str, obj: Any = None, *, override: bool = False) -> Any:
    """Register ``obj`` as ``kind``/``name``; without ``obj`` works as a decorator."""
    _check_kind(kind)

    def _add(o: Any) -> Any:
        table = _REGISTRY[kind]
        if name in table and table[name] is not o and not override:
            raise RegistryError(
                f"{kind} {name!r} is already registered (by {_describe(table[name])}); "
                "pick another name or pass override=True"
            )
        table[name] = o
        return o

    return _add if obj is None else _add(obj)


def _describe(o: Any) -> str:
    return f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', repr(o))}"


def load_plugins(kind: str, *, force: bool = False) -> None:
    """Import the entry points of ``maezoo.<kind>s``; a broken plugin warns instead of crashing."""
    _check_kind(kind)
    if kind in _PLUGINS_LOADED and not force:
        return
    _PLUGINS_LOADED.add(kind)
    for ep in importlib.metadata.entry_points(group=entry_point_group(kind)):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party package must not break maezoo
            import warnings

            warnings.warn(f"maezoo plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        if isinstance(obj, types.ModuleType):
            continue
        if ep.name in _REGISTRY[kind] and _REGISTRY[kind][ep.name] is not obj:
            import warnings

            warnings.warn(
                f"maezoo plugin {ep.name!r} ({ep.value}) not registered: {kind} {ep.name!r} already exists "
                f"({_describe(_REGISTRY[kind][ep.name])})",
                stacklevel=2,
            )
            continue
        register(kind, ep.name, obj)


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind``, plugins included."""
    _ensure_builtins()
    load_plugins(kind)
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str) -> Any:
    """The component registered as ``kind``/``name``; unknown names fail listing the known ones."""
    _check_kind(kind)
    _ensure_builtins()
    if name not in _REGISTRY[kind]:
        load_plugins(kind)
    if name not in _REGISTRY[kind]:
        known = sorted(_REGISTRY[kind])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RegistryError(
            f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known) or '(none)'}. "
            f"Third-party {kind}s register through the entry-point group {entry_point_group(kind)!r}."
        )
    return _REGISTRY[kind][name]


def build(kind: str, name: str, /, **kwargs: Any) -> Any:
    """Call the registered factory with ``kwargs``, failing clearly on unknown arguments."""
    factory = get(kind, name)
    check_kwargs(factory, kwargs, f"{kind} {name!r}")
    return factory(**kwargs)


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise a ``TypeError`` naming unknown keyword arguments and the valid ones."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"{what} got unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")


_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    """Import the packages that register maezoo's built-ins, once, on the first lookup (lazily, so that
    ``import maezoo`` stays light and ``maezoo.registry`` has no import cycles)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib

    from maezoo import BUILTIN_MODULES

    for mod in BUILTIN_MODULES:
        importlib.import_module(f"maezoo.{mod}")


def sources(kind: str) -> dict[str, str]:
    """Each name registered for ``kind`` (plugins included) -> where it is written, ``module:qualname``
    (``maezoo.video.models:videomae_vit_base``); ``maezoo list --verbose`` prints them."""
    return {name: f"{getattr(o, '__module__', '?')}:{getattr(o, '__qualname__', type(o).__qualname__)}"
            for name, o in ((n, get(kind, n)) for n in names(kind))}


def name_of(kind: str, obj: Any) -> str | None:
    """The name under which ``obj`` (or its class) is registered for ``kind``, if any."""
    _ensure_builtins()
    for name, o in _REGISTRY[kind].items():
        if o is obj or (isinstance(o, type) and isinstance(obj, o) and type(obj) is o):
            return name
    return None
