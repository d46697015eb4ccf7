"""SAM 2.1-style tracker of SAM 3: SAM prompt encoder + mask decoder, memory encoder and memory attention.

It has no backbone: it reads the second ("sam2") neck's maps at 4g, 2g and g (288, 144, 72 for 1008 px).
Attribute names follow the official `tracker.*` checkpoint keys.

Video tracking is one object at a time (batch 1), with a caller-owned `MemoryBank` per object
(`memory_bank.py`). Each frame is two calls, so that a detect-and-track loop can change masks (overlap
suppression) between prediction and memory encoding:

    bank = tracker.new_memory_bank(num_frames=len(frames))         # num_frames=None when streaming
    out = tracker.track_step(maps[0], bank, 0, points=xy, point_labels=labels)   # or box=..., or mask=...
    tracker.remember(maps[0], bank, 0, out)                         # a conditioning memory
    for t in range(1, len(frames)):                                 # backward: t descending, reverse=True
        out = tracker.track_step(maps[t], bank, t)                  # reads the memory
        tracker.remember(maps[t], bank, t, out)                     # or with mask_logits=edited, ...

`maps[t]` are the tracker-neck maps of frame t ([1, C, 4g, 4g], [1, C, 2g, 2g], [1, C, g, g]); prompts are in
model-input pixels. A correction on a later frame is a prompted `track_step` on that frame (it becomes a
conditioning frame, predicted from its prompts alone); to remove an object, drop its bank. `out.mask_logits`
is [1, 1, 4g, 4g] (-1024 where the object is absent); the object is present iff `out.object_score_logits > 0`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.common import MLP
from conceptseg.model.configs import SAM3Config
from conceptseg.model.position_encoding import sine_position_encoding
from conceptseg.model.tracker.mask_decoder import MaskDecoder
from conceptseg.model.tracker.memory_attention import MemoryAttention
from conceptseg.model.tracker.memory_bank import (
    FrameMemory,
    MemoryBank,
    MemoryReadout,
    pointer_temporal_encoding,
    split_pointer_tokens,
)
from conceptseg.model.tracker.memory_encoder import MASK_STRIDE, MemoryEncoder
from conceptseg.model.tracker.prompt_encoder import NOT_A_POINT, PromptEncoder

BOX_CORNER_LABELS = (2, 3)  # top-left, bottom-right
USER_POINT_LABELS = (-1, 0, 1)  # padding, negative, positive
# Mask probabilities are mapped to [-10, 10] before the memory encoder.
MEMORY_MASK_SCALE = 20.0
MEMORY_MASK_BIAS = -10.0
NO_OBJECT_LOGIT = -1024.0  # every mask logit of a frame where the object is absent (SAM 2's NO_OBJ_SCORE)
# A mask prompt is used as the output: 0/1 -> -10/+10 logits (and the object-score logit is +-10).
MASK_PROMPT_SCALE = 20.0
MASK_PROMPT_BIAS = -10.0
BFLOAT16 = torch.bfloat16  # how SAM 2/3 and transformers store memory features (see memory_bank.py)
MULTIMASK_MAX_POINTS = 1  # multimask output (best by predicted IoU) for 0 or 1 point; box corners count as 2


@dataclass(frozen=True)
class TrackerOutput:
    """One object's prediction on one frame.

    mask_logits: [1, 1, 4g, 4g], NO_OBJECT_LOGIT everywhere when the object is absent; high_res_mask_logits:
    [1, 1, S, S] (S = model input size), what `remember` encodes by default; iou: [1, 1] predicted IoU of the
    chosen mask (1 for a mask prompt); object_score_logits: [1, 1], the object is present iff > 0;
    object_pointer: [1, C]; is_conditioning: the frame had prompts (its memory is a conditioning memory).
    """

    mask_logits: torch.Tensor
    high_res_mask_logits: torch.Tensor
    iou: torch.Tensor
    object_score_logits: torch.Tensor
    object_pointer: torch.Tensor
    is_conditioning: bool


class Tracker(nn.Module):
    """Interactive (SAM-1 task) mask prediction, and video tracking of one object per call with its memory
    bank (see the module docstring)."""

    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        dim, cfg = config.d_model, config.tracker
        self.image_size = config.vit.image_size
        self.grid_size = config.vit.grid_size
        self.max_cond_frames_in_attn = cfg.max_cond_frames_in_attn
        self.max_obj_ptrs_in_encoder = cfg.max_obj_ptrs_in_encoder
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

        pix_feat: [B, C, g, g] tracker-neck features (without memory conditioning); mask_logits:
        [B, 1, H, W] high-res mask logits (any size); object_score_logits: [B, 1]. At inference a mask that
        comes from clicks is binarised instead of passed through a sigmoid. Frames where the object is absent
        (logit <= 0) get `no_obj_embed_spatial`. Returns memory features and their position encoding, both
        [B, memory_dim, g, g].
        """
        side = MASK_STRIDE * pix_feat.shape[-1]
        if mask_logits.shape[-2:] != (side, side):
            # The logits are resized to the encoder's input (16g) before the sigmoid/binarisation, as
            # transformers does and as the official detect-and-track loop does (it upsamples logits to 1152
            # itself). The official SAM 2-style predictor maps first and resizes inside the mask downsampler;
            # the two differ only along mask edges.
            resized = F.interpolate(mask_logits.float(), size=(side, side), mode="bilinear",
                                    align_corners=False, antialias=True)
            mask_logits = resized.to(mask_logits.dtype)
        if is_mask_from_points and not self.training:
            mask = (mask_logits > 0).to(pix_feat.dtype)
        else:
            mask = mask_logits.sigmoid()
        features, pos = self.maskmem_backbone(pix_feat, mask * MEMORY_MASK_SCALE + MEMORY_MASK_BIAS)
        absent = (object_score_logits <= 0).to(features.dtype)[..., None, None]  # [B, 1, 1, 1]
        return features + absent * self.no_obj_embed_spatial[..., None, None], pos

    # video tracking -----------------------------------------------------------------------------------------

    def new_memory_bank(self, num_frames: int | None = None, memory_dtype: torch.dtype | None = BFLOAT16,
                        max_conditioning_frames: int | None = None) -> MemoryBank:
        """An empty bank for one object, with this tracker's window sizes (see `MemoryBank`)."""
        num_maskmem = self.maskmem_tpos_enc.shape[0]
        return MemoryBank(num_maskmem, self.max_cond_frames_in_attn, self.max_obj_ptrs_in_encoder, num_frames,
                          memory_dtype, max_conditioning_frames)

    def track_step(
        self,
        image_features: list[torch.Tensor],
        bank: MemoryBank,
        frame_idx: int,
        reverse: bool = False,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        box: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> TrackerOutput:
        """Predict one object's mask on one frame from its memory or from this frame's prompts.

        image_features: tracker-neck maps [1, C, 4g, 4g], [1, C, 2g, 2g], [1, C, g, g]; bank: the object's
        memories (only read: call `remember` next); reverse: tracking backward in time. Prompts, in
        model-input pixels: points [1, N, 2] xy with point_labels [1, N] (1 positive, 0 negative) and/or box
        [1, 4] xyxy, or mask [1, 1, H, W] (binary, any size), used directly as the output as in SAM 2. A frame
        with prompts is a conditioning frame predicted without memory (as SAM 2/3 do on a frame not tracked
        yet); without prompts the bank must hold a conditioning memory. The best of three masks (by predicted
        IoU) is taken for 0-1 points and when tracking, the single-mask output otherwise.
        """
        feat_s0, feat_s1, pix_feat = self._check_features(image_features)
        if pix_feat.shape[0] != 1:
            raise ValueError(f"track_step runs one object on one frame: batch 1, got {pix_feat.shape[0]}")
        self._prompt_batch_size(points, point_labels, box, None, 1)
        high_res = (self.sam_mask_decoder.conv_s0(feat_s0), self.sam_mask_decoder.conv_s1(feat_s1))
        if mask is not None:
            if points is not None or box is not None:
                raise ValueError("a mask prompt cannot be combined with points or a box")
            return self._mask_as_output(pix_feat, high_res, mask)
        coords, labels = self._merge_box_and_points(points, point_labels, box)
        prompted = coords is not None
        if prompted:
            embedding = pix_feat + self.no_mem_embed.view(1, -1, 1, 1)
        else:
            embedding = self._condition_on_memory(pix_feat, bank, frame_idx, reverse)
            coords, labels = self._padding_point(pix_feat)
        multimask = not prompted or labels.shape[1] <= MULTIMASK_MAX_POINTS
        return self._decode(embedding, high_res, coords, labels, None, multimask, prompted)

    def remember(
        self,
        image_features: list[torch.Tensor],
        bank: MemoryBank,
        frame_idx: int,
        output: TrackerOutput,
        mask_logits: torch.Tensor | None = None,
        object_score_logits: torch.Tensor | None = None,
        conditioning: bool | None = None,
        binarize_mask: bool | None = None,
    ) -> FrameMemory:
        """Encode one object's memory of a frame from its `track_step` output and add it to its bank.

        mask_logits [1, 1, H, W] (any size, e.g. the 4g x 4g logits after overlap suppression) and
        object_score_logits [1, 1] replace the output's high-res logits and score; the pointer stays the
        output's. conditioning (default: the output's) stores a conditioning memory. The mask is binarised
        for conditioning memories and sigmoid-scaled otherwise; binarize_mask overrides that (transformers
        encodes all objects of a frame in one batch and binarises every mask when any object had prompts:
        pass True for the others to reproduce it).
        """
        pix_feat = self._check_features(image_features)[-1]
        conditioning = output.is_conditioning if conditioning is None else conditioning
        binarize = conditioning if binarize_mask is None else binarize_mask
        masks = output.high_res_mask_logits if mask_logits is None else mask_logits
        scores = output.object_score_logits if object_score_logits is None else object_score_logits
        features, pos = self.encode_memory(pix_feat, masks, scores, binarize)
        memory = FrameMemory(frame_idx, conditioning, features, pos, output.object_pointer, scores)
        bank.add(memory)
        return memory

    def _condition_on_memory(
        self, pix_feat: torch.Tensor, bank: MemoryBank, frame_idx: int, reverse: bool
    ) -> torch.Tensor:
        """Memory attention of the g x g features to the bank's memories -> [1, C, g, g]."""
        if not bank.conditioning_frames:
            raise ValueError("the object has no conditioning memory: prompt it (points, box or mask) first")
        if bank.num_maskmem != self.maskmem_tpos_enc.shape[0]:
            raise ValueError(f"bank built for num_maskmem={bank.num_maskmem}, the tracker has "
                             f"{self.maskmem_tpos_enc.shape[0]}: use Tracker.new_memory_bank")
        memory, memory_pos, num_pointer_tokens = self._memory_tokens(bank.read(frame_idx, reverse), pix_feat)
        height, width = pix_feat.shape[-2:]
        pos = sine_position_encoding(height, width, pix_feat.shape[1], pix_feat.device, pix_feat.dtype)
        return self.memory_attention(pix_feat, pos, memory, memory_pos, num_pointer_tokens)

    def _memory_tokens(
        self, readout: MemoryReadout, pix_feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Memory tokens [1, M, memory_dim], their positions (spatial + temporal) and the pointer count."""
        num_rows = self.maskmem_tpos_enc.shape[0]
        tokens, positions = [], []
        for distance, memory in readout.spatial:
            # conditioning frames (distance 0) share the last row; a frame d steps away uses row d - 1
            temporal = self.maskmem_tpos_enc[num_rows - 1 if distance == 0 else distance - 1].view(1, 1, -1)
            features = memory.features.to(pix_feat.dtype)
            tokens.append(features.flatten(2).transpose(1, 2))  # [1, m, g, g] -> [1, g*g, m]
            positions.append(memory.pos.to(pix_feat.dtype).flatten(2).transpose(1, 2) + temporal)
        num_pointer_tokens = 0
        if readout.pointers:
            distances = torch.tensor([d for d, _ in readout.pointers], device=pix_feat.device)
            distances = distances / readout.pointer_range
            encoding = pointer_temporal_encoding(distances, pix_feat.shape[1]).to(pix_feat.dtype)
            pointers = torch.cat([p for _, p in readout.pointers]).to(pix_feat.dtype)  # [N, C]
            pointer_tokens = split_pointer_tokens(pointers, self.maskmem_tpos_enc.shape[-1])
            pieces = pointer_tokens.shape[0] // pointers.shape[0]
            tokens.append(pointer_tokens[None])
            positions.append(self.obj_ptr_tpos_proj(encoding).repeat_interleave(pieces, dim=0)[None])
            num_pointer_tokens = pointer_tokens.shape[0]
        return torch.cat(tokens, dim=1), torch.cat(positions, dim=1), num_pointer_tokens

    def _decode(
        self,
        embedding: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor | None,
        multimask: bool,
        is_conditioning: bool,
    ) -> TrackerOutput:
        """SAM heads on one (memory-conditioned) embedding; the best mask by IoU, masked out if absent."""
        sparse, dense = self.sam_prompt_encoder(coords, labels, mask_input, 1)
        masks, iou, tokens, object_score_logits = self.sam_mask_decoder(
            embedding, self.sam_prompt_encoder.dense_pe(), sparse, dense, multimask, high_res
        )
        best = iou.argmax(dim=-1)  # [1]; argmax of one output is 0
        masks, iou, token = masks[:, best], iou[:, best], tokens[:, best][:, 0]
        present = object_score_logits > 0  # [1, 1]
        masks = torch.where(present[..., None, None], masks, NO_OBJECT_LOGIT)
        high_res_masks = F.interpolate(masks.float(), size=(self.image_size,) * 2, mode="bilinear",
                                       align_corners=False)
        pointer = torch.where(present, self.obj_ptr_proj(token), self.no_obj_ptr)
        return TrackerOutput(masks, high_res_masks.to(masks.dtype), iou, object_score_logits, pointer,
                             is_conditioning)

    def _mask_as_output(
        self, pix_feat: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
    ) -> TrackerOutput:
        """A mask prompt [1, 1, H, W] is the output; the SAM heads only produce its object pointer."""
        if mask.ndim != 4 or mask.shape[:2] != (1, 1):
            raise ValueError(f"mask must be [1, 1, H, W], got {tuple(mask.shape)}")
        size, low_side = self.image_size, self.sam_prompt_encoder.mask_input_size
        mask = mask.to(pix_feat.dtype)
        if mask.shape[-2:] != (size, size):  # resized to the input size and binarised, as in add_new_mask
            resized = F.interpolate(mask.float(), size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=True)
            mask = (resized >= 0.5).to(pix_feat.dtype)
        high_res_masks = mask * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        low_res_masks = F.interpolate(high_res_masks.float(), size=(low_side, low_side), mode="bilinear",
                                      align_corners=False, antialias=True).to(mask.dtype)
        dense = F.interpolate(self.mask_downsample(mask).float(), size=(low_side, low_side), mode="bilinear",
                              align_corners=False, antialias=True).to(mask.dtype)  # [1, 1, S/4, S/4] -> 4g
        # The pointer comes from the raw features (no memory, no `no_mem_embed`), as in SAM 2.
        coords, labels = self._padding_point(pix_feat)
        pointer = self._decode(pix_feat, high_res, coords, labels, dense, True, True).object_pointer
        # Presence follows the mask, not the decoder's object score.
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True)  # [1, 1]
        pointer = torch.where(present, pointer, self.no_obj_ptr)
        score = present.to(pix_feat.dtype) * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        return TrackerOutput(low_res_masks, high_res_masks, torch.ones_like(score), score, pointer, True)

    @staticmethod
    def _padding_point(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The single not-a-point prompt SAM 2/3 give the decoder on frames without clicks."""
        labels = torch.full((1, 1), NOT_A_POINT, dtype=torch.long, device=like.device)
        return like.new_zeros(1, 1, 2), labels

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
