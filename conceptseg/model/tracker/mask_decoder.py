"""SAM 2.1 mask decoder: output + prompt tokens through a two-way transformer -> masks, IoU, object score."""

from __future__ import annotations

import torch
from torch import nn

from conceptseg.model.common import MLP, LayerNorm2d
from conceptseg.model.configs import TrackerConfig
from conceptseg.model.tracker.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts 1 + `num_multimask_outputs` masks from the g x g embedding and the stride-4/8 skip features.

    Output token order: object-score token, IoU token, mask tokens (mask 0 = single-mask output).
    """

    def __init__(self, dim: int, config: TrackerConfig) -> None:
        super().__init__()
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.stability_delta = config.dynamic_multimask_stability_delta
        self.stability_thresh = config.dynamic_multimask_stability_thresh
        self.transformer = TwoWayTransformer(
            config.decoder_depth, dim, config.decoder_heads, config.decoder_mlp_dim,
            config.attention_downsample,
        )
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        # Sequential indices (0, 1, 3 hold weights) are the checkpoint key names; see `upscale`.
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth, sigmoid_output=True
        )
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def upscale(self, image: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> torch.Tensor:
        """[B, C, g, g] -> [B, C/8, 4g, 4g]; the projected skip features are added before each activation."""
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        x = act1(norm(conv1(image) + feat_s1))
        return act2(conv2(x) + feat_s0)

    def forward(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool,
        high_res_features: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode masks for B prompts.

        image: [B or 1, C, g, g] embedding; image_pe: [1, C, g, g]; sparse: [B, N, C]; dense: [B, C, g, g];
        high_res_features: (conv_s0 output [B or 1, C/8, 4g, 4g], conv_s1 output [B or 1, C/4, 2g, 2g]).
        Returns mask logits [B, K, 4g, 4g], IoU predictions [B, K], the chosen mask tokens [B, K, C] (for
        object pointers) and object-score logits [B, 1]; K = 3 with `multimask`, else 1.
        """
        batch = sparse.shape[0]
        output_tokens = torch.cat(
            (self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight)
        )
        tokens = torch.cat((output_tokens.expand(batch, -1, -1), sparse), dim=1)
        src = image.expand(batch, -1, -1, -1) + dense
        tokens, src = self.transformer(src, image_pe.expand(batch, -1, -1, -1), tokens)

        mask_tokens = tokens[:, 2 : 2 + self.num_mask_tokens]
        upscaled = self.upscale(src.transpose(1, 2).reshape(dense.shape), *high_res_features)
        mlps = self.output_hypernetworks_mlps
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(mlps)], dim=1)  # [B, K, C/8]
        masks = (hyper @ upscaled.flatten(2)).unflatten(-1, upscaled.shape[-2:])
        iou = self.iou_prediction_head(tokens[:, 1])
        object_score_logits = self.pred_obj_score_head(tokens[:, 0])

        if multimask:
            return masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:], object_score_logits
        if not self.training:
            masks, iou = self.select_stable_mask(masks, iou)
        else:
            masks, iou = masks[:, :1], iou[:, :1]
        return masks, iou, mask_tokens[:, :1], object_score_logits

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta: [..., H, W] -> [...] (1 if both empty)."""
        flat = mask_logits.flatten(-2)
        inner = (flat > self.stability_delta).sum(-1).float()
        outer = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer.clamp(min=1), 1.0)

    def select_stable_mask(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output, falling back to the best-IoU multimask output when mask 0 is unstable.

        masks: [B, 1 + M, H, W], iou: [B, 1 + M] -> [B, 1, H, W], [B, 1].
        """
        best = iou[:, 1:].argmax(dim=-1) + 1
        rows = torch.arange(masks.shape[0], device=masks.device)
        stable = self.stability_scores(masks[:, 0]) >= self.stability_thresh
        chosen = torch.where(stable, torch.zeros_like(best), best)
        return masks[rows, chosen][:, None], iou[rows, chosen][:, None]
