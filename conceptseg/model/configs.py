"""Model configuration as frozen dataclasses.

The defaults are the released SAM 3 model (`sam3.pt`, `facebook/sam3`). Small configurations for tests
and for the embedded model are built with `dataclasses.replace` or from dictionaries (`config_from_dict`),
and every checkpoint written by `conceptseg.save_model` stores its config next to the weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ViTConfig:
    """Perception-Encoder ViT trunk: windowed + global attention, 2-D axial RoPE, tiled abs pos-embed."""

    image_size: int = 1008
    patch_size: int = 14
    width: int = 1024
    depth: int = 32
    num_heads: int = 16
    mlp_dim: int = 4736
    window_size: int = 24  # tokens per window side; also the RoPE reference grid
    global_layers: tuple[int, ...] = (7, 15, 23, 31)
    pretrain_grid: int = 24  # side of the learned abs pos-embed grid (336 px / 14), tiled to the token grid
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-5
    # Not in SAM 3: embed patches with a few stride-2 3x3 convolutions instead of one linear projection. Only the
    # small embedded model uses it: trained from scratch, a linear 8-pixel patch embedding does not learn to tell
    # a star from a heart within a CPU budget, the convolutional stem does (see docs/embedded-model.md).
    conv_stem: bool = False

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    """CLIP-style causal text transformer followed by a linear resizer to the detector width."""

    vocab_size: int = 49408
    width: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 4096
    context_length: int = 32
    projection_dim: int = 512  # CLIP's `text_projection`; stored in checkpoints, unused by SAM 3
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class TrackerConfig:
    """SAM 2.1-style prompt encoder, mask decoder and memory (interactive segmentation and video tracking)."""

    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample: int = 2
    num_multimask_outputs: int = 3
    iou_head_hidden_dim: int = 256
    iou_head_depth: int = 3
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    memory_dim: int = 64
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    memory_attention_mlp_dim: int = 2048
    # memory-bank limits of video tracking (`model.tracker.memory_bank`), as HF configs carry them
    max_obj_ptrs_in_encoder: int = 16
    max_cond_frames_in_attn: int = 4


@dataclass(frozen=True)
class SAM3Config:
    """The whole model: backbone, detector heads and tracker. Defaults are the released SAM 3."""

    vit: ViTConfig = field(default_factory=ViTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    d_model: int = 256  # width of neck, geometry encoder, fusion encoder, decoder, heads
    num_heads: int = 8
    ffn_dim: int = 2048
    geometry_layers: int = 3
    fusion_layers: int = 6
    decoder_layers: int = 6
    num_queries: int = 200
    roi_size: int = 7
    layer_norm_eps: float = 1e-5
    scorer_clamp: float = 12.0
    # Not in SAM 3: start the decoder's reference boxes from the best-scoring fused image tokens (DINO's "mixed
    # query selection"). Only the small embedded model uses it, because learned queries trained from scratch
    # on a CPU budget never learn to localise (see docs/embedded-model.md).
    two_stage_queries: bool = False

    @property
    def mask_size(self) -> int:
        """Side of the predicted low-resolution masks (4x the ViT grid: 288 for 1008 px input)."""
        return 4 * self.vit.grid_size


def config_to_dict(config: SAM3Config) -> dict[str, Any]:
    """JSON-serialisable form of a config (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> SAM3Config:
    """Inverse of `config_to_dict`; unknown keys are an error so that typos do not pass silently."""
    sections = {"vit": ViTConfig, "text": TextConfig, "tracker": TrackerConfig}
    kwargs: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(SAM3Config)}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"unknown SAM3Config field {key!r}")
        if key in sections:
            section = sections[key]
            names = {f.name for f in dataclasses.fields(section)}
            unknown = set(value) - names
            if unknown:
                raise ValueError(f"unknown {section.__name__} fields {sorted(unknown)}")
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            kwargs[key] = section(**value)
        else:
            kwargs[key] = value
    return SAM3Config(**kwargs)


def tiny_config(image_size: int = 112) -> SAM3Config:
    """A few-hundred-thousand-parameter config of the same architecture, for tests."""
    return SAM3Config(
        vit=ViTConfig(
            image_size=image_size, width=64, depth=2, num_heads=2, mlp_dim=128,
            window_size=4, global_layers=(1,), pretrain_grid=4,
        ),
        text=TextConfig(width=32, depth=2, num_heads=2, mlp_dim=64, projection_dim=16),
        tracker=TrackerConfig(
            decoder_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32, memory_attention_layers=1,
            memory_attention_mlp_dim=64,
        ),
        d_model=32, num_heads=2, ffn_dim=64, geometry_layers=1, fusion_layers=1, decoder_layers=2,
        num_queries=10,
    )


def embedded_config() -> SAM3Config:
    """The small model shipped with the package (trained on the synthetic concept world, 128 px input).

    Patch 8 gives a 16x16 token grid and 64x64 masks (half the input resolution), which matters more for
    mask quality at high IoU than model width does.
    """
    return SAM3Config(
        vit=ViTConfig(
            image_size=128, patch_size=8, width=128, depth=4, num_heads=4, mlp_dim=512,
            window_size=8, global_layers=(1, 3), pretrain_grid=16, conv_stem=True,
        ),
        text=TextConfig(width=128, depth=2, num_heads=4, mlp_dim=512, projection_dim=64),
        tracker=TrackerConfig(
            decoder_heads=4, decoder_mlp_dim=256, iou_head_hidden_dim=64, memory_attention_layers=2,
            memory_attention_mlp_dim=256,
        ),
        d_model=64, num_heads=4, ffn_dim=256, geometry_layers=1, fusion_layers=2, decoder_layers=3,
        num_queries=32, two_stage_queries=True,
    )


CONFIGS = {"sam3": SAM3Config, "tiny": tiny_config, "embedded": embedded_config}
