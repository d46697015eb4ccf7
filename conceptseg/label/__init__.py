"""Batch concept labelling of image and video collections (`conceptseg label`): one pipeline of stages
(list -> read -> model -> encode -> write), run in-process or on Ray Data, into resumable Parquet shards.

    from conceptseg.label import label
    label(["photos/"], ["red car", "person"], "labels/")

Names are imported on first use, so that `conceptseg --help` loads neither pyarrow nor the model.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "label": "conceptseg.label.run",
    "LabelSummary": "conceptseg.label.run",
    "LabelSettings": "conceptseg.label.stages",
    "RayOptions": "conceptseg.label.engines",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'conceptseg.label' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
