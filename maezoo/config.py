"""Recipes: YAML data validated against typed dataclasses, with ``key=value`` overrides.

A recipe file names a registered ``system`` and that system's options; nothing in it can import or
run code (YAML is read with ``safe_load`` and components are looked up by registered name only).
Unknown keys fail with the valid ones listed.

The first comment lines of each recipe carry the exact command that runs it.

Every key has a declared type (the dataclass annotation) and, where it has one, a range (:func:`option`'s
``ge``/``gt``/``le``/``lt``/``choices`` in the field metadata); :func:`from_dict` checks both before any work
starts and names the key, the value and what is allowed. Numbers written as ``1e-4`` (which YAML reads as a
string) are read as numbers wherever a number is expected.

Overrides: ``a.b=3`` sets one key; ``a.b={x: 1}`` replaces the whole mapping ``a.b`` (it does not merge).

Per-dataset settings (:func:`expand_datasets`): a recipe may list ``datasets: [A, B]``; it then runs once per
entry, with ``data.args.name`` set to the entry and ``per_dataset.<entry>`` merged over the recipe.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import hashlib
import inspect
import json
import operator
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
_PACKAGED_RECIPES = Path(__file__).resolve().parent / "recipes"


class ConfigError(ValueError):
    """A recipe or override is invalid; the message says which key and what is accepted."""


def recipes_dir() -> Path:
    """``recipes/`` of a source checkout, or the copy packaged inside the wheel."""
    return RECIPES_DIR if RECIPES_DIR.is_dir() else _PACKAGED_RECIPES


def list_recipes() -> list[str]:
    root = recipes_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def data_root() -> Path:
    """Where datasets live: ``$MAEZOO_DATA``, else ``~/.cache/maezoo/data``."""
    return Path(os.environ.get("MAEZOO_DATA") or Path.home() / ".cache" / "maezoo" / "data").expanduser()


def resolve_recipe(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    cand = recipes_dir() / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    raise ConfigError(f"unknown recipe {name_or_path!r}; known recipes: {', '.join(list_recipes())} (or a path to a .yaml file)")


def parse_overrides(items: list[str]) -> list[tuple[list[str], Any]]:
    """``["a.b=3", "c=[1,2]"]`` -> ``[(["a", "b"], 3), (["c"], [1, 2])]``; values parsed as YAML."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. trainer.max_steps=200)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key part; write e.g. trainer.max_steps=200")
        out.append((parts, value))
    return out


def apply_overrides(raw: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """``raw`` with each ``key=value`` set in order; a mapping value replaces the whole mapping at ``key``."""
    out = copy.deepcopy(raw)
    for parts, value in parse_overrides(items):
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is {nxt!r}, not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def expand_datasets(raw: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """One recipe per entry of ``datasets`` (``[(None, raw)]`` when it has none).

    For entry ``A``: ``data.args.name = A``, then ``per_dataset.A`` (a mapping of the recipe's own sections)
    merged over the recipe; ``datasets`` and ``per_dataset`` are removed from each result. Entries of
    ``per_dataset`` for datasets not listed are unused.
    """
    raw = dict(raw)
    names = raw.pop("datasets", None)
    per = raw.pop("per_dataset", None) or {}
    if not isinstance(per, dict):
        raise ConfigError(f"per_dataset must map dataset names to settings, got {per!r}")
    if names is None:
        if per:
            raise ConfigError("per_dataset needs a `datasets:` list naming the datasets it applies to")
        return [(None, raw)]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"datasets must be a non-empty list of dataset names, got {names!r}")
    out = []
    for name in names:
        entry = per.get(name) or {}
        if not isinstance(entry, dict):
            raise ConfigError(f"per_dataset.{name} must be a mapping of recipe sections, got {entry!r}")
        if "datasets" in entry or "per_dataset" in entry:
            raise ConfigError(f"per_dataset.{name} may not set datasets or per_dataset")
        r = copy.deepcopy(raw)
        data = r.setdefault("data", {})
        if not isinstance(data, dict):
            raise ConfigError(f"data must be a mapping, got {data!r}")
        data.setdefault("args", {})
        data["args"] = {**(data["args"] or {}), "name": name}
        out.append((name, merge(r, copy.deepcopy(entry))))
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:  # includes tags that would construct Python objects
        raise ConfigError(f"{path}: not a valid recipe (plain YAML only, no tags that run code): {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values")
    return data


def recipe_digest(name_or_path: str) -> str:
    """A digest of what a recipe file says (its parsed keys and values, not its comments or layout): two runs of
    the same recipe name ran the same recipe only when their digests agree (``maezoo bench`` keys its records and
    run folders on it)."""
    data = load_yaml(resolve_recipe(name_or_path))
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Range:
    """A declared numeric range (``ge <= v``, ``gt < v``, ``v <= le``, ``v < lt``), for dataclass fields
    (:func:`option`) and for builder arguments (``Annotated[float, Range(gt=0, lt=1)]``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __repr__(self) -> str:
        return f"Range{self.interval()}"

    def interval(self) -> str:
        """``(0, 1)``, ``[1, inf)`` ..."""
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else "(-inf"
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else "inf)"
        return f"{lo}, {hi}"

    def check(self, value: Any, key: str, shown: Any = None) -> None:
        """Raise a :class:`ConfigError` naming ``key``, the value and the range when ``value`` is outside it."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        bounds = [(b, sign, op) for b, sign, op in ((self.ge, ">=", operator.ge), (self.gt, ">", operator.gt),
                  (self.le, "<=", operator.le), (self.lt, "<", operator.lt)) if b is not None]
        if all(op(value, b) for b, _, op in bounds):
            return
        allowed = " and ".join(f"{sign} {_num(b)}" for b, sign, _ in bounds)
        raise ConfigError(f"{key}={shown if shown is not None else value!r} is out of range {self.interval()}: "
                          f"it must be {allowed}")


@dataclasses.dataclass(frozen=True)
class Divides:
    """A builder argument that must divide another one (``num_heads`` divides ``embed_dim``)."""

    other: str


def _num(v: float | None) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def option(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a declared range, checked by :func:`from_dict` (``ge <= v``, ``gt < v`` ...)."""
    meta = {"range": Range(ge, gt, le, lt)} if any(b is not None for b in (ge, gt, le, lt)) else {}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _check_range(f: dataclasses.Field, value: Any, key: str, shown: Any = None) -> None:
    if "range" in f.metadata:
        f.metadata["range"].check(value, key, shown)


def check_args(fn: Any, args: dict[str, Any], path: str, defaults: dict[str, Any] | None = None) -> None:
    """Check keyword arguments ``args`` of ``fn`` (a builder) against its typed signature before anything is built.

    Names must be parameters of ``fn`` (unless it takes ``**kwargs``); values must fit the annotations (the
    ``Literal`` choices, ``int``/``float``/``str``/``bool``, lists, mappings, ``None`` where allowed) and the
    declared ranges (``Annotated[..., Range(...)]``); a parameter marked ``Divides("other")`` must divide
    ``other``'s value (given, from ``defaults``, or the signature's default). Errors name ``path.<key>``, the
    value and what is allowed. Annotations that cannot be resolved are not type-checked.
    """
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, ValueError, SyntaxError):
        sig = inspect.signature(fn)
    params = sig.parameters
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(args) - set(named))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(f'{path}.{k}' for k in unknown)}; valid keys: "
                              f"{', '.join(named)}")
    values = {n: p.default for n, p in named.items() if p.default is not p.empty}
    values.update(defaults or {})
    values.update(args)
    for name, value in args.items():
        annotation = named[name].annotation if name in named else inspect.Parameter.empty
        if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
            _coerce(annotation, value, f"{path}.{name}")
    for name, p in named.items():
        for mark in _metadata(p.annotation):
            other = values.get(mark.other) if isinstance(mark, Divides) else None
            if isinstance(other, int) and isinstance(values.get(name), int) and values[name] > 0 \
                    and other % values[name]:
                raise ConfigError(f"{path}.{name}={values[name]} must divide {path}.{mark.other}={other}")


def _metadata(tp: Any) -> list[Any]:
    """The ``Annotated`` metadata of ``tp`` (looking inside ``X | None``)."""
    if typing.get_origin(tp) is typing.Annotated:
        return list(tp.__metadata__)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _metadata(a)]
    return []


#: keys recipes used to spell differently: the error for an old key names the new one
RENAMED = {"amp": "precision"}


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses and checking types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in {path}" if path else ""
        renamed = [f"{k} is now {RENAMED[k]}" for k in unknown if RENAMED.get(k) in fields]
        hint = f" ({'; '.join(renamed)})" if renamed else ""
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}{where}{hint}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        kwargs[name] = _coerce(hints[name], value, key)
        _check_range(fields[name], kwargs[name], key, value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ check
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        out = _coerce(typing.get_args(tp)[0], value, key)
        for mark in tp.__metadata__:
            if isinstance(mark, Range):
                mark.check(out, key, value)
        return out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key} must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2:  # typed values (e.g. dict[str, Ablation]) are checked like fields
            return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value != value:  # NaN
                raise ConfigError(f"{key} must be a number, got nan")
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        what = {"int": "a whole number", "str": "a string", "bool": "true or false"}[tp.__name__]
        raise ConfigError(f"{key} must be {what}, got {value!r}")
    return value


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
