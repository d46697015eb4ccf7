"""What to label: folders, globs, manifests and video files become numbered items, each with its concepts.

A SOURCE is a folder (its image and video files, recursively, hidden ones skipped), a glob pattern, a manifest
(`.csv` with a `path` column, or `.jsonl` with a `path` key; an optional `concepts` column/key, comma-separated
or a JSON list, replaces the run's concepts for that item; relative paths are relative to the manifest), or one
image or video file. Items are numbered in the order the sources list them (folders and globs sorted), each
file once: the numbering, and so the shards, are the same on every run with the same arguments.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conceptseg.io.images import IMAGE_SUFFIXES
from conceptseg.io.video import VIDEO_SUFFIXES

MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Item:
    """One image or video to label: its number in the run, absolute path, kind and concepts."""

    index: int
    path: str
    kind: str  # "image" or "video"
    concepts: tuple[str, ...]


def parse_concepts(value: str | Sequence[str]) -> tuple[str, ...]:
    """'a, b,c' (or a list of phrases) -> ('a', 'b', 'c'): stripped, empty ones dropped, each phrase once."""
    phrases = value.split(",") if isinstance(value, str) else value
    if not all(isinstance(phrase, str) for phrase in phrases):
        raise ValueError(f"concepts must be phrases (strings), got {value!r}")
    return tuple(dict.fromkeys(p.strip() for p in phrases if p.strip()))


def read_concepts_file(path: str | os.PathLike) -> tuple[str, ...]:
    """One phrase per line; blank lines and lines starting with '#' are skipped."""
    lines = Path(path).read_text().splitlines()
    return parse_concepts([line for line in lines if not line.lstrip().startswith("#")])


def list_items(sources: Sequence[str], concepts: Sequence[str] = ()) -> list[Item]:
    """Expand SOURCEs into items; `concepts` apply to every item whose manifest row names none."""
    default = parse_concepts(concepts)
    entries: list[tuple[Path, tuple[str, ...]]] = []
    for source in sources:
        entries.extend(_expand(source, default))
    items, seen = [], set()
    for path, phrases in entries:
        key = os.path.normpath(path.resolve())
        if key in seen:
            continue
        if not phrases:
            raise ValueError(f"{path}: no concepts to label (give --concepts, or a 'concepts' column in its manifest)")
        seen.add(key)
        kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
        items.append(Item(len(items), key, kind, phrases))
    if not items:
        raise ValueError("no images or videos found in the given sources")
    return items


def _expand(source: str, concepts: tuple[str, ...]) -> list[tuple[Path, tuple[str, ...]]]:
    if glob.has_magic(source):
        matches = sorted(Path(match) for match in glob.glob(source, recursive=True))
        if not matches:
            raise ValueError(f"no files match {source!r}")
        return [(path, concepts) for match in matches for path in _files(match)]
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"{source!r} does not exist")
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return _read_manifest(path, concepts)
    return [(file, concepts) for file in _files(path)]


def _files(path: Path) -> list[Path]:
    """A file as itself (whatever its suffix: an unreadable one is reported when read); a folder's image and video
    files, recursively, in sorted order."""
    if not path.is_dir():
        return [path]
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    return sorted(
        file for file in path.rglob("*")
        if file.is_file() and file.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in file.relative_to(path).parts)
    )


def _read_manifest(path: Path, concepts: tuple[str, ...]) -> list[tuple[Path, tuple[str, ...]]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not a JSON object ({error.msg})") from error
    entries = []
    for number, row in enumerate(rows, start=1):
        where = f"{path}: row {number}"
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(f"{where}: needs a 'path'")
        file = Path(str(row["path"])).expanduser()
        file = file if file.is_absolute() else path.parent / file
        phrases = parse_concepts(row["concepts"]) if row.get("concepts") else concepts
        entries.append((file, phrases))
    return entries
