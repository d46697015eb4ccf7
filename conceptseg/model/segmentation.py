"""Segmentation head: prompt-aware pixel decoder, instance masks from query embeddings, semantic logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.common import MLP, MultiheadAttention
from conceptseg.model.configs import SAM3Config


class PixelDecoder(nn.Module):
    """Top-down FPN: nearest-upsample, add the finer level, conv3x3 -> GroupNorm(8) -> ReLU."""

    def __init__(self, d_model: int, num_stages: int = 3) -> None:
        super().__init__()
        # Three stages are stored but only len(levels) - 1 = 2 run: the last pair is dead in the release.
        self.conv_layers = nn.ModuleList(nn.Conv2d(d_model, d_model, 3, padding=1) for _ in range(num_stages))
        self.norms = nn.ModuleList(nn.GroupNorm(8, d_model) for _ in range(num_stages))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """levels: finest first, e.g. [B, C, 4G, 4G], [B, C, 2G, 2G], [B, C, G, G] -> [B, C, 4G, 4G]."""
        # One step at a time with in-place add and ReLU: at 1008 px each finest map is 85 MB, and without
        # autograd every intermediate is freed as soon as the next one exists.
        x = levels[-1]
        for conv, norm, finer in zip(self.conv_layers, self.norms, reversed(levels[:-1])):
            x = F.interpolate(x, size=finer.shape[-2:], mode="nearest")
            x += finer
            x = conv(x)
            x = F.relu(norm(x), inplace=True)
        return x


class MaskPredictor(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mask_embed = MLP(d_model, d_model, d_model, 3)


class SegmentationHead(nn.Module):
    def __init__(self, config: SAM3Config) -> None:
        super().__init__()
        d = config.d_model
        self.cross_attend_prompt = MultiheadAttention(d, config.num_heads)
        self.cross_attn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.pixel_decoder = PixelDecoder(d)
        self.instance_seg_head = nn.Conv2d(d, d, 1)
        self.semantic_seg_head = nn.Conv2d(d, 1, 1)
        self.mask_predictor = MaskPredictor(d)

    def forward(
        self,
        queries: torch.Tensor,
        fused_image: torch.Tensor,
        levels: list[torch.Tensor],
        prompt: torch.Tensor,
        prompt_padding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks.

        queries: last decoder layer [B, Q, C]; fused_image: fusion-encoder tokens [B, G*G, C]; levels: neck maps,
        finest first; prompt: [B, T, C] with padding [B, T]. Returns instance mask logits [B, Q, 4G, 4G] and
        semantic logits [B, 1, 4G, 4G].
        """
        attended = self.cross_attend_prompt(
            self.cross_attn_norm(fused_image), prompt, prompt, key_padding_mask=prompt_padding
        )
        fused_image = fused_image + attended
        batch, channels, height, width = levels[-1].shape
        coarse = fused_image.transpose(1, 2).reshape(batch, channels, height, width)  # B x HW x C -> B x C x H x W
        pixels = self.pixel_decoder([*levels[:-1], coarse])
        # Both 1x1 heads are linear in the pixel embeddings p, so they fold into the query side: query e's mask is
        # (W^T e) . p + e . b and the semantic map is one more row. One matrix product then makes every map; at
        # full size this skips a 256-channel 288 x 288 map and two convolutions that run far below the GEMM rate.
        mask_embed = self.mask_predictor.mask_embed(queries)  # B x Q x C
        instance, semantic = self.instance_seg_head, self.semantic_seg_head
        rows = torch.cat((mask_embed @ instance.weight.flatten(1), semantic.weight.flatten(1).expand(batch, 1, -1)), 1)
        offsets = torch.cat((mask_embed @ instance.bias, semantic.bias.expand(batch, 1)), dim=1)
        logits = torch.baddbmm(offsets[..., None], rows, pixels.flatten(2)).unflatten(-1, pixels.shape[-2:])
        return logits[:, :-1], logits[:, -1:]
