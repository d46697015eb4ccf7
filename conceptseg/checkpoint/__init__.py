"""Weights in and out: the official `sam3.pt` (`official`), Hugging Face layouts (`hf`, `hf_tracker`), our own
format and the loader that tells them apart (`loading`), and the embedded model's place in the package."""

from conceptseg.checkpoint.embedded import embedded_model_dir, embedded_model_location
from conceptseg.checkpoint.loading import checkpoint_identity, load_model, resolve_checkpoint, save_model

__all__ = [
    "checkpoint_identity", "embedded_model_dir", "embedded_model_location", "load_model", "resolve_checkpoint",
    "save_model",
]
