"""``maezoo convert SRC DST --to maezoo|timm|hf`` and ``maezoo zoo`` (registered by :mod:`maezoo.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    c = subparsers.add_parser("convert", help="convert a checkpoint between the maezoo, timm and Hugging Face layouts")
    c.add_argument("src", help="published .pth/.safetensors file, HF/timm folder, or maezoo run/checkpoint folder")
    c.add_argument("dst", help="output folder")
    c.add_argument("--to", choices=["maezoo", "timm", "hf"], default="maezoo")
    c.add_argument("--img-size", type=int, default=None, help="timm/hf: image size the position table is written for")
    c.add_argument("--context-length", type=int, default=None, help="hf PatchTST: the look-back window (steps)")
    c.add_argument("--channels", type=int, default=None, help="hf PatchTST: num_input_channels of the config")
    c.add_argument("--num-heads", type=int, default=None, help="override the inferred encoder head count")
    z = subparsers.add_parser("zoo", help="published checkpoints and the maezoo model each maps to")
    z.add_argument("--download", default=None, metavar="NAME", help="download one entry into the cache and print its path")


def main(args: argparse.Namespace) -> int:
    if args.command == "zoo":
        from maezoo.hub.zoo import download, zoo_table

        print(download(args.download) if args.download else zoo_table())
        return 0
    from maezoo.hub import export, load_pretrained
    from maezoo.hub.exporters import read_maezoo
    from maezoo.hub.io import is_maezoo_checkpoint
    from maezoo.registry import build

    src = Path(args.src)
    if is_maezoo_checkpoint(src):
        state, spec = read_maezoo(src)
        model = build("model", spec["name"], **spec.get("kwargs", {}))
        model.load_state_dict(state)
    else:
        overrides = {"num_heads": args.num_heads} if args.num_heads else {}
        model, spec = load_pretrained(src, **overrides)
    out = export(model, args.dst, to=args.to, spec=spec, img_size=args.img_size, context_length=args.context_length,
                 num_channels=args.channels)
    print(f"wrote {out} ({args.to})")
    return 0

