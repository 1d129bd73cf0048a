"""Image-caption shards as img2dataset writes them, for the multimodal tests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path


def _jpeg(value: int, size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value % 256, 40, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def _tar(path: Path, samples: list[dict[str, bytes]]) -> Path:
    """A shard as img2dataset writes it: ``<key>.<ext>`` members, a sample's files next to each other."""
    with tarfile.open(path, "w") as tf:
        for s in samples:
            for ext, data in s.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _pair(i: int) -> dict[str, bytes]:
    return {"__key__": f"{i:09d}", "jpg": _jpeg(i), "txt": f"a photo of item {i % 5} in a box".encode(),
            "json": json.dumps({"key": f"{i:09d}", "status": "success"}).encode(), "cls": str(i).encode()}
