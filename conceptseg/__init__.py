"""conceptseg: SAM 3 (Segment Anything with Concepts) in clean, portable PyTorch.

    model = conceptseg.load_model()                      # embedded model; or "sam3.pt", a HF dir, "facebook/sam3"
    out = model.detect(conceptseg.preprocess(image, model.config.vit.image_size), conceptseg.tokenize("red circle"))
"""

from .checkpoint import load_model, save_model
from .model.configs import SAM3Config, TextConfig, TrackerConfig, ViTConfig, tiny_config
from .model.sam3 import SAM3
from .model.tokenizer import tokenize
from .predict.transforms import preprocess

__version__ = "0.1.0"

__all__ = [
    "SAM3", "SAM3Config", "TextConfig", "TrackerConfig", "ViTConfig", "load_model", "preprocess", "save_model",
    "tiny_config", "tokenize",
]
