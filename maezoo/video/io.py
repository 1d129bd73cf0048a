"""Reading and writing video files: decord when installed, PyAV otherwise (and PyAV to write H.264 mp4).

Every failure is a :class:`VideoReadError` (a :class:`~maezoo.data.sources.DatasetFileError`, so a
``ValueError``) whose message names the file, what is wrong and the fix: a missing or 0-byte file, a file
no decoder can read, a file with no frames, or one shorter than the clip asked for.

Shapes:
    read_frames(path, indices) -> ``[len(indices), H, W, 3]`` uint8 (RGB)
    write_mp4(path, frames ``[T, H, W, 3]`` uint8)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from maezoo.data.sources import DatasetFileError, dataset_file_error

Backend = Literal["auto", "decord", "pyav"]


class VideoReadError(DatasetFileError):
    """A video file is missing, empty, unreadable or too short; the message names it and the fix."""


def _err(path: Path | str, problem: str, fix: str) -> VideoReadError:
    return VideoReadError(str(dataset_file_error(path, problem, fix)))


def available_backend(backend: Backend = "auto") -> str:
    """``decord`` when installed (and asked for or ``auto``), else ``pyav``; raise if the one asked for is absent."""
    has = {"decord": importlib.util.find_spec("decord") is not None, "pyav": importlib.util.find_spec("av") is not None}
    if backend == "auto":
        for name in ("decord", "pyav"):
            if has[name]:
                return name
        raise ImportError("reading video needs decord or PyAV: pip install decord  (or: pip install av)")
    if backend not in has:
        raise ValueError(f"video backend must be 'auto', 'decord' or 'pyav', got {backend!r}")
    if not has[backend]:
        raise ImportError(f"video backend {backend!r} is not installed: pip install {'av' if backend == 'pyav' else backend}")
    return backend


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise _err(path, "no such video file", "check the path (list-file paths are relative to the dataset root)")
    if path.stat().st_size == 0:
        raise _err(path, "the file is empty (0 bytes)", "re-download or re-encode it, or remove it from the list")


def _pyav_decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise _err(path, "the file holds no video stream", "remove it from the dataset")
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def read_video(path: str | Path, backend: Backend = "auto") -> np.ndarray:
    """Every frame of a video, ``[T, H, W, 3]`` uint8 RGB (raises :class:`VideoReadError` on bad files)."""
    return read_frames(path, None, backend)


def read_frames(path: str | Path, indices: Sequence[int] | None, backend: Backend = "auto") -> np.ndarray:
    """Frames ``indices`` (all when ``None``) of a video as ``[K, H, W, 3]`` uint8 RGB.

    Raises :class:`VideoReadError` for a missing, 0-byte or corrupt file, a file without frames, and
    indices past the last frame (the video is shorter than the clip).
    """
    return read_clip(path, lambda n: list(range(n)) if indices is None else [int(i) for i in indices], backend)


def read_clip(path: str | Path, pick: Callable[[int], list[int]], backend: Backend = "auto") -> np.ndarray:
    """Open a video once and read the frames ``pick(num_frames)`` chooses, ``[K, H, W, 3]`` uint8 RGB.

    decord reads the frame count from the container and decodes only what is needed; PyAV decodes the video.
    Errors as :func:`read_frames`.
    """
    path = Path(path)
    _check_file(path)
    which = available_backend(backend)
    try:
        if which == "decord":
            import decord

            vr = decord.VideoReader(str(path), num_threads=1)
            n = len(vr)
            if n == 0:
                raise _err(path, "the video has no frames", "re-encode it or remove it from the dataset")
            idx = pick(n)
            _check_indices(path, idx, n)
            return vr.get_batch(idx).asnumpy()
        frames = _pyav_decode(path)
    except VideoReadError:
        raise
    except Exception as exc:  # decord.DECORDError, av.error.InvalidDataError, RuntimeError ...: a damaged file
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise _err(path, f"cannot decode the video ({type(exc).__name__}: {first})",
                   "re-download or re-encode it (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4), or remove it") from exc
    if not frames:
        raise _err(path, "the video has no frames", "re-encode it or remove it from the dataset")
    idx = pick(len(frames))
    _check_indices(path, idx, len(frames))
    return np.stack([frames[i] for i in idx])


def _check_indices(path: Path, idx: list[int], n: int) -> None:
    if idx and (max(idx) >= n or min(idx) < 0):
        raise _err(path, f"the video has {n} frame(s) but the clip needs frame {max(idx)}",
                   "sample fewer frames or a smaller frame_stride, or remove the short video")


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 10, crf: int = 18) -> Path:
    """Encode ``[T, H, W, 3]`` uint8 RGB frames as H.264 (libx264, yuv420p) mp4 with PyAV; even H and W."""
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4 expects [T, H, W, 3] uint8 frames, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {frames.shape[1]}x{frames.shape[2]}")
    if "libx264" not in av.codecs_available:
        raise RuntimeError("this PyAV build has no libx264 encoder; install PyAV wheels from PyPI (pip install av)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    return path
