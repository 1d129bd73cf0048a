"""``maezoo shard SRC DST``: write WebDataset shards (and their ``shards.json`` index) from a registered dataset.

``SRC`` is a registered dataset name (``maezoo list`` shows them); ``--arg key=value`` passes builder arguments
(``--split``, ``--transform`` as for recipes). A folder dataset's files are copied as they are (``image_folder``,
``cifar10``: images; ``video``: clips; ``audio_folder``, ``fsdd``: audio clips; ``text_lines``, ``text_jsonl``,
``wordnet``: ``.txt`` texts and the vocabulary) and ``shards.json`` records how to decode them
(:mod:`maezoo.data.decoders`: the dataset's own augmentation then runs at read time); other datasets are written
as their samples (``.npy`` tensors, ``.cls`` labels).

Registration in ``maezoo/cli.py``::

    from maezoo import shard_cmd; shard_cmd.add_parser(sub)        # beside the other sub-commands
    if args.cmd == "shard": return shard_cmd.main(args)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("shard", help="write WebDataset tar shards from a registered dataset")
    p.add_argument("src", help="a registered dataset name (see `maezoo list`)")
    p.add_argument("dst", help="output folder (shard-000000.tar ... and shards.json)")
    p.add_argument("--split", default="train")
    p.add_argument("--transform", default="eval", help="the builder's transform (ignored for raw folder files)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="builder argument (YAML value)")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard")
    return p


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg {pair!r}: write KEY=VALUE (e.g. --arg image_size=32)")
        out[key] = yaml.safe_load(value)
    return out


def _resolved(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The builder's arguments with its defaults filled in (e.g. ``image_size``, which the index records)."""
    import inspect

    from maezoo.registry import get

    params = inspect.signature(get("dataset", name)).parameters
    return {**{k: p.default for k, p in params.items() if p.default is not p.empty}, **kwargs}


def main(args: argparse.Namespace) -> int:
    import maezoo  # noqa: F401  (registers the datasets)
    from maezoo.data.shards import write_shards
    from maezoo.registry import build, names

    known = names("dataset")
    if args.src not in known:
        raise SystemExit(f"maezoo shard: unknown dataset {args.src!r}; registered: {', '.join(sorted(known))}")
    kwargs = {"split": args.split, "transform": args.transform, **_parse_args(args.arg)}
    dataset = build("dataset", args.src, **kwargs)
    index = write_shards(dataset, Path(args.dst), maxcount=args.maxcount, builder_kwargs=_resolved(args.src, kwargs))
    print(f"wrote {index} ({len(dataset)} samples)")  # type: ignore[arg-type]
    return 0
