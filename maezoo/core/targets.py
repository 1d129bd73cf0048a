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


# -- inverses: a target's prediction back to patch units ---------------------------------------------------
# A registered target may define ``inverse(prediction, patches, **args)`` (with the target's own arguments):
# the prediction mapped back to the units of ``patches`` using the original patches' statistics, as the MAE
# and VideoMAE demos do to draw a normalised-target model's reconstruction. :func:`invert_target` calls it.


def raw_inverse(prediction: Tensor, patches: Tensor) -> Tensor:
    """Inverse of :func:`raw_target`: the identity (the prediction is already in patch units).

    Shapes: prediction ``[B, K, P]``, patches ``[B, K, P]`` -> ``[B, K, P]``
    """
    return prediction


def norm_inverse(
    prediction: Tensor, patches: Tensor, eps: float = 1e-6, axes: NormAxes = "token", channels: int | None = None,
    unbiased: bool = True, eps_mode: EpsMode = "var",
) -> Tensor:
    """Inverse of :func:`norm_target` with the same arguments: ``prediction * scale + mean``, the mean and
    scale (``sqrt(var + eps)`` or ``std + eps``) taken per token or per channel of the original ``patches``.

    ``norm_inverse(norm_target(x, **a), x, **a)`` recovers ``x`` up to float rounding (a constant token
    comes back as its mean).

    Shapes:
        prediction ``[B, K, P]``, patches ``[B, K, P]`` (the rows the prediction stands for) -> ``[B, K, P]``
    """
    check_norm_args(eps, axes, channels, unbiased, eps_mode)
    x, y, dim = patches, prediction, -1
    if axes == "channel":
        c = int(channels)  # type: ignore[arg-type]
        if patches.shape[-1] % c:
            raise ValueError(f"norm target: {patches.shape[-1]} values per token do not split into {c} channels")
        x, y, dim = patches.reshape(*patches.shape[:-1], -1, c), prediction.reshape(*prediction.shape[:-1], -1, c), -2
    mean = x.mean(dim=dim, keepdim=True)
    if eps_mode == "var":
        scale = (x.var(dim=dim, keepdim=True, unbiased=unbiased) + eps).sqrt()
    else:
        scale = x.std(dim=dim, keepdim=True, unbiased=unbiased) + eps
    return (y * scale + mean).reshape(prediction.shape)


raw_target.inverse = raw_inverse  # type: ignore[attr-defined]
norm_target.inverse = norm_inverse  # type: ignore[attr-defined]


def invert_target(target: TargetFn, prediction: Tensor, patches: Tensor) -> Tensor:
    """Map a model's prediction of ``target(patches)`` back to the units of ``patches``.

    ``target`` is what :func:`resolve_target` returns (a registered function, possibly bound to its
    arguments with ``functools.partial``); its ``inverse`` attribute is called with the same arguments.

    Shapes:
        prediction ``[B, K, P]``, patches ``[B, K, P]`` -> ``[B, K, P]``
    """
    fn, args = target, {}
    if isinstance(target, functools.partial):
        fn, args = target.func, dict(target.keywords)
    inverse = getattr(fn, "inverse", None)
    if inverse is None:
        name = getattr(fn, "__name__", type(fn).__name__)
        raise ValueError(f"target {name!r} has no inverse, so its predictions cannot be mapped back to patch units; "
                         "give the target function an attribute inverse(prediction, patches, **args) "
                         "(as maezoo.core.targets.norm_target.inverse)")
    if prediction.shape != patches.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and patches {tuple(patches.shape)} must match: "
                         "pass the original patches of the rows the prediction stands for")
    return inverse(prediction, patches, **args)


__all__ = ["raw_target", "norm_target", "check_norm_args", "resolve_target", "raw_inverse", "norm_inverse",
           "invert_target"]
