"""Where datasets come from.

Order of preference for every dataset: the data root (``$MAEZOO_DATA`` or ``~/.cache/maezoo/data``),
then a read-only copy in ``shared/data`` next to the repository (used by tests and CI; it is copied or
extracted into the data root, never written to), then the dataset's official download.

A dataset file that cannot be used (empty, truncated, corrupt, or without the expected layout) raises
:class:`DatasetFileError`, whose one-line message names the file, what is wrong and how to fix it, and
leaves nothing half-extracted behind in the data root.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

# what a damaged archive raises while being opened or read (OSError itself is left alone: disk full,
# permissions and the like are not the archive's fault)
ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError,
)
SHARED_COPY_FIX = (
    "replace it with an intact copy (check it against SHA256SUMS in the shared data folder), "
    "or point MAEZOO_SHARED_DATA at a folder holding a good one"
)


class DatasetFileError(ValueError):
    """A dataset file or folder is unusable; the message names it, says what is wrong and how to fix it."""


class DatasetMissingError(FileNotFoundError):
    """A dataset is neither in the data root nor in a shared copy, and its download failed (or is not offered)."""


def missing_dataset(name: str, expected: Path | str, url: str | None, exc: BaseException | None = None) -> DatasetMissingError:
    """The one-line error for a dataset that is nowhere to be found: where it was looked for, the download that
    was tried (and why it failed) and how to fix it (``MAEZOO_DATA``, a shared copy, or the network)."""
    tried = f"; the download from {url} failed ({type(exc).__name__}: {exc})" if url and exc else ""
    tried = tried or ("" if url else "; it has no automatic download")
    root = os.environ.get("MAEZOO_DATA") or "(unset: ~/.cache/maezoo/data)"
    return DatasetMissingError(
        f"{name} not found at {expected} (data root MAEZOO_DATA={root}) nor in a shared/data copy "
        f"(MAEZOO_SHARED_DATA){tried}. Fix: put the files at {expected}, set MAEZOO_DATA to a folder that holds "
        "them, or run once with network access")


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failed download: no network, DNS, refused connection, HTTP, time-out."""
    import socket
    import urllib.error

    if isinstance(exc, urllib.error.URLError | socket.timeout | socket.gaierror | ConnectionError | TimeoutError):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_network_error(cause)


def download_or_explain(name: str, expected: Path | str, url: str, fetch: Callable[[], object]) -> object:
    """Run ``fetch()`` (a download); a network failure becomes :class:`DatasetMissingError` naming ``MAEZOO_DATA``."""
    try:
        return fetch()
    except Exception as exc:
        if is_network_error(exc):
            raise missing_dataset(name, expected, url, exc) from None
        raise


def dataset_file_error(path: Path | str, problem: str, fix: str) -> DatasetFileError:
    """``DatasetFileError("<path>: <problem>. Fix: <fix>")``, on one line (``problem``'s whitespace is collapsed)."""
    return DatasetFileError(f"{path}: {' '.join(problem.split())}. Fix: {fix}")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def shared_data_dirs() -> list[Path]:
    """Candidate ``shared/data`` folders, best first: ``$MAEZOO_SHARED_DATA``, then beside the checkout."""
    cands = [Path(os.environ["MAEZOO_SHARED_DATA"])] if os.environ.get("MAEZOO_SHARED_DATA") else []
    return cands + [repo_root().parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def find_shared_data(relative: str) -> Path | None:
    """``shared/data/<relative>`` beside the checkout (or under ``$MAEZOO_SHARED_DATA``), if present."""
    for base in shared_data_dirs():
        p = base / relative
        if p.exists():
            return p
    return None


def _unpack(archive: Path, into: Path) -> None:
    """Extract a ``.zip`` or a (compressed) tar into ``into``; raises one of ``ARCHIVE_ERRORS`` if it is damaged."""
    if archive.suffix.lower() == ".zip":
        with zipfile.ZipFile(archive) as zf:  # member CRCs are checked while extracting
            zf.extractall(into)
        return
    with tarfile.open(archive) as tf:
        tf.extractall(into, filter="data")
        # tarfile stops quietly when a tar is cut exactly between two members: require the end-of-archive block
        assert tf.fileobj is not None
        tf.fileobj.seek(tf.offset)
        if len(tf.fileobj.read(tarfile.BLOCKSIZE)) < tarfile.BLOCKSIZE:
            raise tarfile.ReadError("unexpected end of data (the end-of-archive marker is missing)")


def extract_archive(archive: Path, final: Path, fix: str, pick: Callable[[Path], Path] | None = None) -> Path:
    """Unpack ``archive`` (tar or zip) so that it becomes the folder ``final``, atomically.

    The archive is extracted into a temporary folder beside ``final``; ``pick(tmp)`` returns the folder
    inside it that becomes ``final`` (the whole extraction by default) and raises ``ValueError("what is
    wrong")`` when the layout is not the expected one. An empty, truncated or corrupt archive, or a wrong
    layout, raises :class:`DatasetFileError` naming ``archive`` with ``fix``; the temporary folder is
    always removed, so a failed attempt leaves nothing behind and the next one starts clean.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: no such dataset archive")
    if archive.stat().st_size == 0:
        raise dataset_file_error(archive, "the archive is empty (0 bytes)", fix)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        try:
            _unpack(archive, tmp)
        except ARCHIVE_ERRORS as exc:
            raise dataset_file_error(
                archive, f"the archive is truncated or corrupt ({type(exc).__name__}: {exc})", fix) from exc
        try:
            top = pick(tmp) if pick is not None else tmp
        except ValueError as exc:
            raise dataset_file_error(archive, str(exc), fix) from exc
        try:
            top.replace(final)
        except OSError:
            if not final.is_dir():  # a concurrent extractor that won the race is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def extract_tar(tar_path: Path, dest: Path, marker: str, *, fix: str = SHARED_COPY_FIX,
                pick: Callable[[Path], Path] | None = None) -> Path:
    """Extract ``tar_path`` into ``dest/marker`` once (atomically; see :func:`extract_archive`)."""
    final = dest / marker
    if final.exists():
        return final
    return extract_archive(Path(tar_path), final, fix, pick)


def prepared_folder(base: Path, name: str, what: str, layout: Callable[[Path], Path], shared: str | None,
                    download: Callable[[Path, Path], Path] | None = None, *, pick: Callable[[Path], Path] | None = None,
                    fix: str = SHARED_COPY_FIX, stale_fix: str = "delete this folder and run again to extract it afresh"
                    ) -> Path:
    """``base/name`` ready to read: the folder itself when it exists, else extracted once from the read-only
    ``shared/data/<shared>`` archive (atomically, :func:`extract_tar`), else ``download(base, folder)``.

    ``layout(folder)`` returns the folder to read (or raises ``ValueError("what is wrong")``): an existing folder
    that fails it raises :class:`DatasetFileError` naming it with ``stale_fix``; ``pick`` chooses the folder inside
    the extracted archive (:func:`extract_archive`) and ``fix`` is the advice for a damaged archive. Without a shared
    copy and a ``download``, :class:`DatasetMissingError` says where the data was looked for.
    """
    folder = base / name
    if folder.exists():
        try:
            return layout(folder)
        except ValueError as exc:
            raise dataset_file_error(folder, f"incomplete {what} folder: {exc}", stale_fix) from exc
    archive = find_shared_data(shared) if shared else None
    if archive is not None:
        return layout(extract_tar(archive, base, name, fix=fix, pick=pick))
    if download is None:
        raise missing_dataset(what, folder, None)
    return download(base, folder)
