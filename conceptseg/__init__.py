"""conceptseg: SAM 3 (Segment Anything with Concepts) in clean, portable PyTorch.

    import conceptseg
    predictor = conceptseg.ImagePredictor(conceptseg.load_model())   # embedded model, or "sam3.pt", "facebook/sam3"
    predictor.set_image("shapes.png")
    results = predictor.predict(text="red circle")                      # masks, boxes (XYXY pixels), scores

Attributes are imported on first use, so `import conceptseg.data.synthetic` (torch-free) stays light.
"""

from __future__ import annotations

from conceptseg.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "conceptseg.checkpoint",
    "save_model": "conceptseg.checkpoint",
    "SAM3": "conceptseg.model.sam3",
    "SAM3Config": "conceptseg.model.configs",
    "ViTConfig": "conceptseg.model.configs",
    "TextConfig": "conceptseg.model.configs",
    "TrackerConfig": "conceptseg.model.configs",
    "tiny_config": "conceptseg.model.configs",
    "embedded_config": "conceptseg.model.configs",
    "tokenize": "conceptseg.model.tokenizer",
    "preprocess": "conceptseg.predict.transforms",
    "ImagePredictor": "conceptseg.predict.image",
    "Results": "conceptseg.predict.results",
    "VideoPredictor": "conceptseg.predict.video",
    "VideoSettings": "conceptseg.predict.video_settings",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
