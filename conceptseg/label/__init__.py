"""Batch concept labelling of image and video collections (`conceptseg label`): one pipeline of stages
(list -> read -> model -> encode -> write), run in-process or on Ray Data, into resumable Parquet shards.

    from conceptseg.label import label
    label(["photos/"], ["red car", "person"], "labels/")

Names are imported on first use, so that `conceptseg --help` loads neither pyarrow nor the model.
"""

from __future__ import annotations

from conceptseg.lazy import lazy_exports

_EXPORTS = {
    "label": "conceptseg.label.run",
    "LabelSummary": "conceptseg.label.run",
    "LabelSettings": "conceptseg.label.stages",
    "RayOptions": "conceptseg.label.engines",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
