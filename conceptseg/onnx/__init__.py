"""ONNX export (`conceptseg export --format onnx`) and an ONNX Runtime predictor returning the same `Results`.

    from conceptseg.onnx import export_onnx, OnnxPredictor
    export_onnx(load_model(), "exported/")
    predictor = OnnxPredictor("exported/")

Needs the onnx extra (`pip install 'conceptseg[onnx]'`); names are imported on first use.
"""

from __future__ import annotations

from conceptseg.lazy import lazy_exports

_EXPORTS = {"export_onnx": "conceptseg.onnx.export", "OnnxPredictor": "conceptseg.onnx.runtime"}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
