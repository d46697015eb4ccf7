"""The concept detector: prompt encoders -> fusion encoder -> decoder -> scorer and segmentation head.

It consumes an image encoding (neck levels of the shared backbone) and a text encoding, both of which can be
computed once and reused across prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from conceptseg.model.box_ops import box_cxcywh_to_xyxy
from conceptseg.model.common import MLP, inverse_sigmoid
from conceptseg.model.configs import SAM3Config
from conceptseg.model.decoder import Decoder, DecoderOutput
from conceptseg.model.fusion import FusionEncoder
from conceptseg.model.geometry import GeometryEncoder
from conceptseg.model.scorer import DotProductScorer
from conceptseg.model.segmentation import SegmentationHead
from conceptseg.model.text import TextEncoder


@dataclass
class ImageEncoding:
    """Backbone output for a batch of images; reusable across prompts."""

    trunk: torch.Tensor  # [B, C_vit, G, G] ViT output (the tracker neck starts from it)
    levels: list[torch.Tensor]  # detector neck maps [B, d, 4G, 4G], [B, d, 2G, 2G], [B, d, G, G]
    pos: torch.Tensor  # [1, d, G, G] sine encoding of the stride-14 level
    # [B, G*G, d] the fusion encoder's image-only start (`Detector.attend_image` fills it in), kept with the image
    # so that a new prompt on it does not compute it again (like the levels, valid for the weights that made it)
    fusion_attended: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> ImageEncoding:
        """The encodings of images `index`."""
        attended = None if self.fusion_attended is None else self.fusion_attended[index]
        return ImageEncoding(self.trunk[index], [level[index] for level in self.levels], self.pos, attended)

    def expand(self, batch: int) -> ImageEncoding:
        """A batch-1 encoding as `batch` views of it, to pair one image with several prompts: at full size a copy
        per prompt would cost 130 MB (mostly the finest neck level) and its memory traffic."""
        attended = None if self.fusion_attended is None else self.fusion_attended.expand(batch, -1, -1)
        return ImageEncoding(self.trunk.expand(batch, -1, -1, -1),
                             [level.expand(batch, -1, -1, -1) for level in self.levels], self.pos, attended)

    def tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-14 level as tokens [B, G*G, d] and their position encoding [B, G*G, d]."""
        coarse = self.levels[-1]
        pos = self.pos.expand(coarse.shape[0], -1, -1, -1)
        return coarse.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2)


@dataclass
class TextEncoding:
    tokens: torch.Tensor  # [B, L, d]
    padding: torch.Tensor  # [B, L], True = padding

    def select(self, index: torch.Tensor) -> TextEncoding:
        return TextEncoding(self.tokens[index], self.padding[index])


@dataclass
class GeometryPrompt:
    """Exemplar boxes and points, normalised to [0, 1]; labels 1 positive, 0 negative, -1 padding."""

    boxes: torch.Tensor | None = None  # [B, K, 4] cxcywh
    box_labels: torch.Tensor | None = None  # [B, K]
    points: torch.Tensor | None = None  # [B, P, 2] xy
    point_labels: torch.Tensor | None = None  # [B, P]


@dataclass
class GeometryEncoding:
    """A geometric prompt encoded on an image (`Detector.encode_geometry`): reusable on other images, which is how
    exemplars drawn on one image prompt another."""

    tokens: torch.Tensor  # [B, K + 1, d]; the last one is the image-conditioned CLS token
    padding: torch.Tensor  # [B, K + 1], True = padding

    def select(self, index: torch.Tensor) -> GeometryEncoding:
        return GeometryEncoding(self.tokens[index], self.padding[index])


class Detector(nn.Module):
    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        self.text_encoder = TextEncoder(config.text, config.d_model)
        self.geometry_encoder = GeometryEncoder(config)
        self.fusion_encoder = FusionEncoder(config)
        self.decoder = Decoder(config)
        self.scorer = DotProductScorer(config)
        self.segmentation_head = SegmentationHead(config)
        self.num_queries = config.num_queries
        self.two_stage = config.two_stage_queries
        if self.two_stage:
            self.proposal_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            self.proposal_head = MLP(config.d_model, config.d_model, 4, 3)

    def propose(
        self, fused: torch.Tensor, grid: tuple[int, int], prompt: torch.Tensor, prompt_padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-stage query selection: score every fused token against the prompt (with the shared scorer),
        regress a box around its cell, keep the Q best. Returns logits [B, Q] and boxes [B, Q, 4] cxcywh."""
        height, width = grid
        tokens = self.proposal_norm(fused)
        logits = self.scorer(tokens, prompt, prompt_padding)  # B x HW
        ys, xs = torch.meshgrid(torch.arange(height, device=fused.device), torch.arange(width, device=fused.device),
                                indexing="ij")
        centres = torch.stack(((xs.flatten() + 0.5) / width, (ys.flatten() + 0.5) / height), dim=-1)
        anchors = torch.cat((centres, torch.full_like(centres, 0.1)), dim=-1).to(fused.dtype)  # HW x 4
        boxes = (self.proposal_head(tokens) + inverse_sigmoid(anchors)).sigmoid()
        top = logits.topk(min(self.num_queries, logits.shape[1]), dim=1).indices
        return logits.gather(1, top), boxes.gather(1, top[..., None].expand(-1, -1, 4))

    def attend_image(self, image: ImageEncoding) -> ImageEncoding:
        """Fill in `image.fusion_attended` unless it is there (in place; returns `image`). Call it before pairing one
        image with several prompts, so that they share it."""
        if image.fusion_attended is None:
            image.fusion_attended = self.fusion_encoder.attend_image(*image.tokens())
        return image

    def encode_geometry(self, image: ImageEncoding, geometry: GeometryPrompt) -> GeometryEncoding:
        """The prompt tokens of exemplar boxes and points drawn on `image`, plus the CLS token."""
        coarse = image.levels[-1]
        pos = image.pos.expand(coarse.shape[0], -1, -1, -1)
        tokens, padding = self.geometry_encoder(
            coarse, pos, geometry.boxes, geometry.box_labels, geometry.points, geometry.point_labels
        )
        return GeometryEncoding(tokens, padding)

    def _segment(
        self, queries: torch.Tensor, fused: torch.Tensor, levels: list[torch.Tensor], prompt: torch.Tensor,
        prompt_padding: torch.Tensor, chunks: list[slice],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The segmentation head chunk by chunk, each chunk's maps written into the batch's as they come (a list
        of chunks and then their concatenation would hold every mask twice: 66 MB a prompt at full size)."""
        if len(chunks) == 1:
            return self.segmentation_head(queries, fused, levels, prompt, prompt_padding)
        masks = semantic = None
        for c in chunks:
            chunk_masks, chunk_semantic = self.segmentation_head(
                queries[c], fused[c], [level[c] for level in levels], prompt[c], prompt_padding[c])
            if masks is None:
                masks = chunk_masks.new_empty((len(prompt), *chunk_masks.shape[1:]))
                semantic = chunk_semantic.new_empty((len(prompt), *chunk_semantic.shape[1:]))
            masks[c], semantic[c] = chunk_masks, chunk_semantic
        return masks, semantic

    def forward(
        self, image: ImageEncoding, text: TextEncoding, geometry: GeometryPrompt | GeometryEncoding,
        prompt_chunk: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Detect every instance of the prompted concept. Image, text and geometry batches must already match (B);
        a `GeometryEncoding` may come from another image (SAM 3 always encodes the prompt on the image itself).

        Returns pred_logits [B, Q], presence_logits [B, 1], pred_boxes [B, Q, 4] normalised xyxy,
        pred_masks [B, Q, 4G, 4G] logits, semantic_seg [B, 1, 4G, 4G], and per-decoder-layer
        all_logits [L, B, Q], all_boxes [L, B, Q, 4] cxcywh, all_presence_logits [L, B, 1].
        prompt_chunk: run the fusion encoder, the decoder and the segmentation head on this many prompts at a time
        (None: the whole batch). All three work on every image token (or pixel) per prompt; on a CPU their cost
        per prompt grows with the batch (at full size, 2 threads: 2.5 s a prompt alone, 3.0 s in a batch of 10,
        and the pixel decoder's maps are 85 MB a prompt), so one at a time is fastest there, while the text
        encoder still sees the whole batch.
        """
        if isinstance(geometry, GeometryPrompt):
            geometry = self.encode_geometry(image, geometry)
        coarse = image.levels[-1]
        prompt = torch.cat((text.tokens, geometry.tokens), dim=1)
        prompt_padding = torch.cat((text.padding, geometry.padding), dim=1)

        tokens, tokens_pos = image.tokens()
        attended = self.attend_image(image).fusion_attended
        if prompt_chunk is None:  # no loop over the batch size, which stays a free dimension when exported
            chunks = [slice(None)]
        else:
            chunks = [slice(start, start + prompt_chunk) for start in range(0, len(prompt), prompt_chunk)]
        fused = _concat([self.fusion_encoder(tokens[c], tokens_pos[c], prompt[c], prompt_padding[c], attended[c])
                           for c in chunks])

        proposals = None
        if self.two_stage:
            proposals = self.propose(fused, coarse.shape[-2:], prompt, prompt_padding)
        parts = [self.decoder(fused[c], tokens_pos[c], coarse.shape[-2:], prompt[c], prompt_padding[c],
                              None if proposals is None else proposals[1][c]) for c in chunks]
        decoded = DecoderOutput(*(torch.cat(fields, dim=1) for fields in zip(
            *((part.hidden_states, part.reference_boxes, part.presence_logits) for part in parts))))
        all_boxes = (self.decoder.bbox_embed(decoded.hidden_states) + inverse_sigmoid(decoded.reference_boxes)).sigmoid()
        all_logits = self.scorer(decoded.hidden_states, prompt, prompt_padding)
        masks, semantic = self._segment(decoded.hidden_states[-1], fused, image.levels, prompt, prompt_padding, chunks)
        extra = {} if proposals is None else {"proposal_logits": proposals[0], "proposal_boxes": proposals[1]}
        return {
            **extra,
            "pred_logits": all_logits[-1],
            "presence_logits": decoded.presence_logits[-1],
            "pred_boxes": box_cxcywh_to_xyxy(all_boxes[-1]),
            "pred_masks": masks,
            "semantic_seg": semantic,
            "all_logits": all_logits,
            "all_boxes": all_boxes,
            "all_presence_logits": decoded.presence_logits,
        }


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat without its copy when there is one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
