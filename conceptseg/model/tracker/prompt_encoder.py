"""SAM prompt encoder: clicks and box corners -> sparse tokens, a low-res mask -> a dense embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

from conceptseg.model.common import LayerNorm2d

NOT_A_POINT = -1  # padding label: the token carries `not_a_point_embed` and no position


class RandomFourierEncoding(nn.Module):
    """Position encoding with random spatial frequencies (a fixed Gaussian [2, C/2] matrix, a buffer)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_channels // 2))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: [..., 2] xy normalised to [0, 1] -> [..., C] as [sin, cos] of the projected coords."""
        matrix = self.positional_encoding_gaussian_matrix
        coords = (2 * coords.to(matrix.dtype) - 1) @ matrix
        coords = 2 * math.pi * coords
        return torch.cat((coords.sin(), coords.cos()), dim=-1)

    def dense(self, height: int, width: int) -> torch.Tensor:
        """Encoding of the pixel centres of an H x W grid -> [1, C, H, W]."""
        matrix = self.positional_encoding_gaussian_matrix
        y = (torch.arange(height, device=matrix.device, dtype=matrix.dtype) + 0.5) / height
        x = (torch.arange(width, device=matrix.device, dtype=matrix.dtype) + 0.5) / width
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # H x W x (x, y)
        return self(grid).permute(2, 0, 1)[None]


class PromptEncoder(nn.Module):
    """Encodes points (labels 0 neg, 1 pos, 2/3 box corners, -1 padding) and mask logits for the SAM decoder.

    Boxes are given to this encoder as their two corner points (labels 2, 3), as SAM 2/3 always do.
    A padding point is appended to every point set, again as SAM 2/3 do.
    """

    def __init__(self, embed_dim: int, image_size: int, grid_size: int, mask_in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_size = image_size
        self.grid_size = grid_size
        self.pe_layer = RandomFourierEncoding(embed_dim)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        # Sequential indices (0, 1, 3, 4, 6 hold weights) are the checkpoint key names.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def mask_input_size(self) -> int:
        """Side of the mask logits accepted as a dense prompt (4x the embedding grid)."""
        return 4 * self.grid_size

    def dense_pe(self) -> torch.Tensor:
        """Position encoding of the image embedding grid -> [1, C, g, g]."""
        return self.pe_layer.dense(self.grid_size, self.grid_size)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords [B, N, 2] in input-image pixels, labels [B, N] -> [B, N + 1, C] (plus a padding point)."""
        batch = coords.shape[0]
        coords = torch.cat((coords + 0.5, coords.new_zeros(batch, 1, 2)), dim=1)  # +0.5: centre of the pixel
        labels = torch.cat((labels, labels.new_full((batch, 1), NOT_A_POINT)), dim=1)[..., None]
        tokens = self.pe_layer(coords / self.image_size)
        tokens = torch.where(labels == NOT_A_POINT, self.not_a_point_embed.weight, tokens)
        for label, embedding in enumerate(self.point_embeddings):
            tokens = torch.where(labels == label, tokens + embedding.weight, tokens)
        return tokens

    def forward(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse tokens [B, N(+1), C] (N = 0 without points) and a dense embedding [B, C, g, g].

        mask_input: [B, 1, 4g, 4g] mask logits (e.g. a previous prediction) or None.
        """
        weight = self.no_mask_embed.weight
        if coords is None:
            sparse = weight.new_zeros(batch_size, 0, self.embed_dim)
        else:
            sparse = self.embed_points(coords, labels)
        if mask_input is None:
            dense = weight.view(1, -1, 1, 1).expand(batch_size, -1, self.grid_size, self.grid_size)
        else:
            dense = self.mask_downscaling(mask_input)
        return sparse, dense
