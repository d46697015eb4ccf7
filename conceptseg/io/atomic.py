"""Writing files atomically: a reader, or a run killed at any moment, finds the previous complete file or the new
one, never a partial one.

The new content goes to a hidden temporary file in the same folder (so os.replace never crosses file systems),
is flushed to disk (fsync), then os.replace moves it over the target; on any failure the temporary file is
removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike


def temporary_sibling(path: PathLike, suffix: str = ".tmp") -> Path:
    """A new, unused hidden name next to `path`, e.g. `.results.json.4242.9f3a.tmp`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def commit(temporary: PathLike, path: PathLike) -> Path:
    """Flush the finished `temporary` file to disk and move it over `path` (atomic on POSIX and Windows)."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_folder(Path(path).parent)  # makes the rename itself durable
    return Path(path)


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path to write; when the block ends without error it replaces `path`, else it is removed.

    `suffix` is the temporary file's ending, for writers that pick their format from it (".mp4").
    """
    temporary = temporary_sibling(path, suffix)
    try:
        yield temporary
        commit(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing ("w" text, "wb" binary) that replaces `path` when the block ends
    without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as temporary, open(temporary, "x" + mode[1:]) as handle:
        yield handle


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Replace `path` by `text`, atomically."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def write_json_atomic(path: PathLike, data: Any) -> Path:
    """Replace `path` by `data` as JSON, atomically (streamed: the encoded text is never held whole in memory)."""
    with atomic_open(path) as handle:
        json.dump(data, handle)
    return Path(path)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder for fsync; its rename is durable on its own
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
