"""Reconstruction targets computed from a tokenizer's patchified input.

A target is a registered function ``patches -> target`` whose keyword arguments configure it.
:class:`~maezoo.core.mae.MaskedAutoencoder` takes a target as a registered name (``"norm"``), a
``{"name": "norm", "args": {...}}`` mapping or any callable; :func:`resolve_target` turns each into a
``patches -> target`` callable and checks the arguments up front.

``norm`` covers both published normalisations:
    * MAE's ``norm_pix_loss``: per token over all its values, unbiased variance,
      ``(x - mean) / sqrt(var + 1e-6)`` (the defaults);
    * VideoMAE's: per colour channel over a tubelet's pixels, ``(x - mean) / (std + 1e-6)`` with the
      unbiased std: ``{"name": "norm", "args": {"axes": "channel", "channels": 3, "eps_mode": "std"}}``.

Shapes:
    patches: ``[B, N, P]`` (``P`` values per token; for ``axes="channel"`` laid out ``[..., pixels, C]``,
    i.e. ``P = pixels * C`` with the channel fastest, MAE's ``(p, q, c)`` order) -> target ``[B, N, P]``
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal

from torch import Tensor

from maezoo.registry import check_kwargs, get, register

TargetFn = Callable[[Tensor], Tensor]
TargetSpec = str | Mapping[str, Any] | TargetFn
NormAxes = Literal["token", "channel"]
EpsMode = Literal["var", "std"]


@register("target", "raw")
def raw_target(patches: Tensor) -> Tensor:
    """The token's own values (MAE without ``norm_pix_loss``; GraphMAE's node features)."""
    return patches


def check_norm_args(
    eps: float = 1e-6, axes: NormAxes = "token", channels: int | None = None, unbiased: bool = True,
    eps_mode: EpsMode = "var",
) -> None:
    """Raise ``ValueError`` for options :func:`norm_target` cannot use (called before training starts)."""
    if axes not in ("token", "channel"):
        raise ValueError(f"norm target axes must be 'token' (per token) or 'channel' (per channel within a token), "
                         f"got {axes!r}")
    if eps_mode not in ("var", "std"):
        raise ValueError(f"norm target eps_mode must be 'var' ((x-m)/sqrt(var+eps), MAE) or 'std' ((x-m)/(std+eps), "
                         f"VideoMAE), got {eps_mode!r}")
    if axes == "channel" and (channels is None or int(channels) < 1):
        raise ValueError("norm target with axes='channel' needs channels=<C> (values laid out [..., pixels, C]), "
                         f"got channels={channels!r}")
    if not eps >= 0:
        raise ValueError(f"norm target eps must be >= 0, got {eps}")


@register("target", "norm")
def norm_target(
    patches: Tensor,
    eps: float = 1e-6,
    axes: NormAxes = "token",
    channels: int | None = None,
    unbiased: bool = True,
    eps_mode: EpsMode = "var",
) -> Tensor:
    """Standardise each token (``axes="token"``) or each channel within a token (``axes="channel"``).

    ``eps_mode="var"``: ``(x - m) / sqrt(var + eps)`` (MAE); ``"std"``: ``(x - m) / (std + eps)`` (VideoMAE).
    ``unbiased`` picks the ``n - 1`` denominator (both papers use it).

    Shapes:
        patches ``[B, N, P]`` -> ``[B, N, P]``; ``axes="channel"`` needs ``P % channels == 0``
    """
    check_norm_args(eps, axes, channels, unbiased, eps_mode)
    x, dim = patches, -1
    if axes == "channel":
        c = int(channels)  # type: ignore[arg-type]
        if patches.shape[-1] % c:
            raise ValueError(f"norm target: {patches.shape[-1]} values per token do not split into {c} channels")
        x, dim = patches.reshape(*patches.shape[:-1], patches.shape[-1] // c, c), -2
    mean = x.mean(dim=dim, keepdim=True)
    var = x.var(dim=dim, keepdim=True, unbiased=unbiased)
    out = (x - mean) / ((var + eps) ** 0.5 if eps_mode == "var" else var.sqrt() + eps)
    return out.reshape(patches.shape)


def resolve_target(spec: TargetSpec) -> tuple[str, TargetFn]:
    """``(name, fn)`` for a registered name, a ``{"name": ..., "args": {...}}`` mapping or a callable.

    Unknown names list the known ones; unknown arguments raise ``TypeError`` naming the valid ones; a
    registered target may define ``check_args(**args)`` to reject bad values at construction.
    """
    if isinstance(spec, str):
        return spec, get("target", spec)
    if isinstance(spec, Mapping):
        if "name" not in spec or set(spec) - {"name", "args"}:
            raise ValueError(f"a target mapping is {{'name': <registered target>, 'args': {{...}}}}, got {dict(spec)}")
        name, args = str(spec["name"]), dict(spec.get("args") or {})
        fn = get("target", name)
        check_kwargs(fn, args, f"target {name!r}")
        checker = getattr(fn, "check_args", None)
        if checker is not None:
            checker(**args)
        return name, functools.partial(fn, **args) if args else fn
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    raise ValueError(f"target must be a registered name, {{'name': ..., 'args': {{...}}}} or a callable, got {spec!r}")


norm_target.check_args = check_norm_args  # type: ignore[attr-defined]

__all__ = ["raw_target", "norm_target", "check_norm_args", "resolve_target"]
