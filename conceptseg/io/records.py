"""Checks shared by the JSON readers (SA-Co, VEval, COCO): JSON loading, required keys, numbers and COCO RLE masks.

Every check takes `where`, a short description of the record being read (file, list index and id), so that
errors tell the user exactly which record to fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from conceptseg.io.rle import compress

PathLike = str | os.PathLike


def load_json(path: PathLike) -> Any:
    """Parse a JSON file, turning decoding errors into a ValueError that names the file."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def require_type(value: Any, expected: type, where: str) -> Any:
    # ValueError, like every other check here: the problem is the content of a file, not a caller's argument
    if not isinstance(value, expected):
        raise ValueError(
            f"{where}: expected a JSON {_json_name(expected)}, got {_json_name(type(value))}"
        )
    return value


def describe(where: str, record: Any, keys: Sequence[str]) -> str:
    """`where` followed by the identifying fields the record has, e.g. "annotations[3] (id=9, image_id=2)"."""
    if not isinstance(record, dict):
        return where
    found = [f"{key}={record[key]!r}" for key in keys if key in record]
    return f"{where} ({', '.join(found)})" if found else where


def require_keys(record: Any, keys: Sequence[str], where: str) -> dict:
    require_type(record, dict, where)
    missing = [key for key in keys if key not in record]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(repr(key) for key in missing)}")
    return record


def as_int(value: Any, where: str, minimum: int | None = None) -> int:
    """An integer field (JSON numbers such as 3.0 are accepted; booleans are not)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value != int(value):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def as_flag(value: Any, where: str) -> bool:
    """A 0/1 (or true/false) field such as `iscrowd` or `is_instance_exhaustive`."""
    if value not in (0, 1):
        raise ValueError(f"{where}: expected 0 or 1, got {value!r}")
    return bool(value)


def as_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def as_box(value: Any, where: str) -> list[float]:
    """An [x, y, w, h] box with non-negative width and height."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"{where}: expected a box [x, y, w, h], got {value!r}")
    box = [as_number(v, where) for v in value]
    if box[2] < 0 or box[3] < 0:
        raise ValueError(f"{where}: box {value!r} has a negative width or height")
    return box


def as_rle(value: Any, height: int, width: int, where: str) -> dict:
    """Check a COCO RLE mask against the expected [height, width] and return it compressed.

    Compressed RLE (`counts` a string) is kept as is. Uncompressed RLE (`counts` a list of run lengths,
    which some VEval files contain) is compressed, as the official evaluators do.
    """
    if not isinstance(value, dict) or "size" not in value or "counts" not in value:
        kind = "a polygon list" if isinstance(value, list) else _json_name(type(value))
        raise ValueError(f"{where}: segmentation must be a COCO RLE {{'size': [h, w], 'counts': ...}}, got {kind}")
    if list(value["size"]) != [height, width]:
        raise ValueError(
            f"{where}: RLE size {value['size']} does not match the image size [height, width] = "
            f"[{height}, {width}]"
        )
    counts = value["counts"]
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts}
    if isinstance(counts, list):
        if sum(counts) != height * width:
            raise ValueError(f"{where}: uncompressed RLE runs sum to {sum(counts)}, expected {height * width}")
        return compress(value, height, width)
    raise ValueError(f"{where}: RLE counts must be a string or a list of run lengths")


def _json_name(kind: type) -> str:
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(kind, "null" if kind is type(None) else kind.__name__)
