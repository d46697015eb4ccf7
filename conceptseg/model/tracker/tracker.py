"""SAM 2.1-style tracker of SAM 3: SAM prompt encoder + mask decoder, memory encoder and memory attention.

It has no backbone: it reads the second ("sam2") neck's maps at 4g, 2g and g (288, 144, 72 for 1008 px).
Attribute names follow the official `tracker.*` checkpoint keys.
"""

from __future__ import annotations

import torch
from torch import nn

from conceptseg.model.common import MLP
from conceptseg.model.configs import SAM3Config
from conceptseg.model.tracker.mask_decoder import MaskDecoder
from conceptseg.model.tracker.memory_attention import MemoryAttention
from conceptseg.model.tracker.memory_encoder import MemoryEncoder
from conceptseg.model.tracker.prompt_encoder import PromptEncoder

BOX_CORNER_LABELS = (2, 3)  # top-left, bottom-right
USER_POINT_LABELS = (-1, 0, 1)  # padding, negative, positive
# Mask probabilities are mapped to [-10, 10] before the memory encoder.
MEMORY_MASK_SCALE = 20.0
MEMORY_MASK_BIAS = -10.0


class Tracker(nn.Module):
    """Interactive (SAM-1 task) mask prediction plus the memory modules SAM 3 tracks objects with in video
    (loaded and tested module by module; no video propagation is built on them yet)."""

    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        dim, cfg = config.d_model, config.tracker
        self.image_size = config.vit.image_size
        self.grid_size = config.vit.grid_size
        self.sam_prompt_encoder = PromptEncoder(dim, self.image_size, self.grid_size, cfg.mask_in_chans)
        self.sam_mask_decoder = MaskDecoder(dim, cfg)
        self.maskmem_backbone = MemoryEncoder(dim, cfg.memory_dim)
        # A ModuleDict only to reproduce the official key prefix `transformer.encoder.`.
        memory_attention = MemoryAttention(
            dim, cfg.memory_dim, cfg.memory_attention_layers, cfg.memory_attention_mlp_dim
        )
        self.transformer = nn.ModuleDict({"encoder": memory_attention})
        self.obj_ptr_proj = MLP(dim, dim, dim, 3)  # decoder output token -> object pointer
        self.obj_ptr_tpos_proj = nn.Linear(dim, cfg.memory_dim)  # temporal encoding of object pointers
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, cfg.memory_dim))
        # Added to the g x g map of frames without memory (first frame, interactive prediction).
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, dim))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, cfg.memory_dim))
        # Turns a mask prompt used directly as output into low-res logits.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        for param in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr,
                      self.no_obj_embed_spatial):
            nn.init.trunc_normal_(param, std=0.02)

    @property
    def memory_attention(self) -> MemoryAttention:
        return self.transformer["encoder"]

    def predict_masks(
        self,
        image_features: list[torch.Tensor],
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SAM-1-style prediction on one frame without memory (official `predict_inst`).

        image_features: tracker-neck maps [Bi, C, 4g, 4g], [Bi, C, 2g, 2g], [Bi, C, g, g], Bi = B or 1
        (one image shared by B prompts). points: [B, N, 2] xy in model-input pixels with point_labels [B, N]
        (1 positive, 0 negative, -1 padding); boxes: [B, 4] xyxy in model-input pixels; mask_input:
        [B, 1, 4g, 4g] mask logits, e.g. a previous prediction. Returns mask logits [B, K, 4g, 4g]
        (not clamped, no -1024 for absent objects), predicted IoU [B, K] and object-score logits [B, 1];
        K = 3 with `multimask`, else 1 (the single-mask output, or the best multimask output when the
        single one is unstable).
        """
        feat_s0, feat_s1, embedding = self._check_features(image_features)
        batch = self._prompt_batch_size(points, point_labels, boxes, mask_input, embedding.shape[0])
        coords, labels = self._merge_box_and_points(points, point_labels, boxes)
        sparse, dense = self.sam_prompt_encoder(coords, labels, mask_input, batch)
        decoder = self.sam_mask_decoder
        high_res = (decoder.conv_s0(feat_s0), decoder.conv_s1(feat_s1))
        embedding = embedding + self.no_mem_embed.view(1, -1, 1, 1)  # this frame has no memory
        masks, iou, _, object_score_logits = decoder(
            embedding, self.sam_prompt_encoder.dense_pe(), sparse, dense, multimask, high_res
        )
        return masks, iou, object_score_logits

    def encode_memory(
        self,
        pix_feat: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_points: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a frame and its predicted mask into a memory.

        pix_feat: [B, C, g, g] tracker-neck features (without memory conditioning); mask_logits: [B, 1, H, W]
        high-res mask logits (any size, resized to 16g inside); object_score_logits: [B, 1]. At inference a
        mask that comes from clicks is binarised instead of passed through a sigmoid. Frames where the object
        is absent (logit <= 0) get `no_obj_embed_spatial`. Returns memory features and their position
        encoding, both [B, memory_dim, g, g].
        """
        if is_mask_from_points and not self.training:
            mask = (mask_logits > 0).to(pix_feat.dtype)
        else:
            mask = mask_logits.sigmoid()
        features, pos = self.maskmem_backbone(pix_feat, mask * MEMORY_MASK_SCALE + MEMORY_MASK_BIAS)
        absent = (object_score_logits <= 0).to(features.dtype)[..., None, None]  # [B, 1, 1, 1]
        return features + absent * self.no_obj_embed_spatial[..., None, None], pos

    def _check_features(self, image_features: list[torch.Tensor]) -> list[torch.Tensor]:
        g = self.grid_size
        sizes = [4 * g, 2 * g, g]
        if len(image_features) != 3 or [f.shape[-1] for f in image_features] != sizes:
            got = [tuple(f.shape) for f in image_features]
            raise ValueError(f"image_features must be 3 tracker-neck maps of sides {sizes}, got shapes {got}")
        return image_features

    def _prompt_batch_size(
        self,
        points: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        image_batch: int,
    ) -> int:
        """Validate the prompt shapes and return the number of prompts B."""
        if (points is None) != (point_labels is None):
            raise ValueError("points and point_labels must be given together")
        if points is not None:
            if points.ndim != 3 or points.shape[-1] != 2 or point_labels.shape != points.shape[:2]:
                raise ValueError(f"points must be [B, N, 2] with labels [B, N], got {tuple(points.shape)} "
                                 f"and {tuple(point_labels.shape)}")
            if not torch.isin(point_labels, point_labels.new_tensor(USER_POINT_LABELS)).all():
                raise ValueError(f"point_labels must be in {USER_POINT_LABELS} (padding, negative, positive)")
        if boxes is not None and (boxes.ndim != 2 or boxes.shape[-1] != 4):
            raise ValueError(f"boxes must be [B, 4] xyxy, got {tuple(boxes.shape)}")
        side = self.sam_prompt_encoder.mask_input_size
        if mask_input is not None and (mask_input.ndim != 4 or mask_input.shape[1:] != (1, side, side)):
            raise ValueError(
                f"mask_input must be [B, 1, {side}, {side}] logits, got {tuple(mask_input.shape)}"
            )
        sizes = {x.shape[0] for x in (points, boxes, mask_input) if x is not None} or {image_batch}
        if len(sizes) > 1 or image_batch not in (1, *sizes):
            raise ValueError("points, boxes, mask_input and image_features disagree on the batch size")
        return sizes.pop()

    @staticmethod
    def _merge_box_and_points(
        points: torch.Tensor | None, point_labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A box becomes two corner points (labels 2, 3) placed before the clicks, as in SAM 2/3."""
        if boxes is None:
            return points, point_labels
        corners = boxes.reshape(-1, 2, 2)
        corner_labels = torch.tensor(BOX_CORNER_LABELS, device=boxes.device).expand(corners.shape[0], 2)
        if points is None:
            return corners, corner_labels
        return torch.cat((corners, points), dim=1), torch.cat((corner_labels, point_labels.long()), dim=1)
