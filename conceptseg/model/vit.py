"""ViT trunk (Perception Encoder "L+"): patch embedding, tiled abs pos-embed, windowed/global blocks, 2-D RoPE.

Shapes for the released model: image [B, 3, 1008, 1008] -> tokens [B, 72, 72, 1024] -> map [B, 1024, 72, 72].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conceptseg.model.configs import ViTConfig
from conceptseg.model.rope import apply_rope, axial_rope_angles

MLP_CHUNK_TOKENS = 1024  # tokens per MLP chunk in inference (see `MLP.forward`)


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv and RoPE on queries and keys.

    Not the tracker's `Attention`: the checkpoint stores this one's input projection fused (`qkv`, `proj`), the
    tracker's as `q_proj`/`k_proj`/`v_proj`/`out_proj`.
    """

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        batch, tokens, width = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # B x N x 3 x h x d -> 3 x B x h x N x d
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class MLP(nn.Module):
    """fc1 -> GELU -> fc2. Not `common.MLP` (ReLU, checkpoint names `layers.N`): names and activation differ."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.fc2(F.gelu(self.fc1(x)))
        # Without a graph, run the tokens in chunks: at 1008 px the hidden layer of all 5,184 tokens is two
        # 98 MB maps (fc1 and GELU); a chunk's are 19 MB. Each token's result is the same.
        tokens = x.reshape(-1, x.shape[-1])
        out = tokens.new_empty(len(tokens), self.fc2.out_features)
        for start in range(0, len(tokens), MLP_CHUNK_TOKENS):
            chunk = slice(start, start + MLP_CHUNK_TOKENS)
            out[chunk] = self.fc2(F.gelu(self.fc1(tokens[chunk])))
        return out.view(*x.shape[:-1], -1)


class Block(nn.Module):
    """Pre-norm transformer block; attention runs inside non-overlapping windows unless window_size is 0."""

    def __init__(self, config: ViTConfig, window_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = Attention(config.width, config.num_heads)
        self.norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = MLP(config.width, config.mlp_dim)
        self.reset_rope(config)

    def reset_rope(self, config: ViTConfig, device: torch.device | None = None) -> None:
        """(Re)compute the RoPE tables; they are derived from the config, so checkpoints do not store them."""
        side = self.window_size or config.grid_size
        # global blocks see positions scaled to the window grid, as in pre-training (24 / 72 at 1008 px)
        angles = axial_rope_angles(side, side, config.width // config.num_heads, theta=config.rope_theta,
                                   scale=config.window_size / side)
        self.register_buffer("rope_cos", angles.cos().to(device), persistent=False)
        self.register_buffer("rope_sin", angles.sin().to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C] -> [B, H, W, C]."""
        batch, height, width, _ = x.shape
        y = self.norm1(x)
        if self.window_size:
            y = partition_windows(y, self.window_size)
        tokens = y.flatten(1, 2)  # B' x h x w x C -> B' x hw x C
        tokens = self.attn(tokens, self.rope_cos, self.rope_sin)
        y = tokens.view_as(y)
        if self.window_size:
            y = merge_windows(y, batch, height, width)
        x = x + y
        return x + self.mlp(self.norm2(x))


def partition_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * H/window * W/window, window, window, C]."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels)


def merge_windows(windows: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `partition_windows`."""
    window, channels = windows.shape[1], windows.shape[-1]
    x = windows.view(batch, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


class PatchEmbed(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.width, config.patch_size, config.patch_size, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)  # B x C x H x W -> B x H x W x C


class ConvStem(nn.Module):
    """Patch embedding by stride-2 3x3 convolutions (doubling the channels up to `width`) and a 1x1 projection.

    Early convolutions make a ViT trained from scratch see shapes far sooner than a linear patch embedding
    (Xiao et al., 2021); `ViTConfig.conv_stem` chooses it, the official model has the linear one.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.patch_size & (config.patch_size - 1):
            raise ValueError(f"a convolutional stem needs a power-of-two patch_size, not {config.patch_size}")
        layers: list[nn.Module] = []
        channels_in, channels = 3, max(config.width // 4, 8)
        for _ in range(config.patch_size.bit_length() - 1):
            layers += [nn.Conv2d(channels_in, channels, 3, 2, 1), nn.GroupNorm(1, channels), nn.GELU()]
            channels_in, channels = channels, min(2 * channels, config.width)
        layers.append(nn.Conv2d(channels_in, config.width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).permute(0, 2, 3, 1)  # B x C x H x W -> B x H x W x C


class ViT(nn.Module):
    """The vision trunk: image [B, 3, S, S] -> feature map [B, width, S/patch, S/patch]."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(f"image_size {config.image_size} must be a multiple of patch_size {config.patch_size}")
        if config.grid_size % config.window_size or config.grid_size % config.pretrain_grid:
            raise ValueError(
                f"the token grid ({config.grid_size}) must be a multiple of window_size ({config.window_size}) "
                f"and of pretrain_grid ({config.pretrain_grid})"
            )
        self.config = config
        self.patch_embed = ConvStem(config) if config.conv_stem else PatchEmbed(config)
        # one unused slot in front (the pre-training CLS token) keeps the official [1, 1 + 24*24, C] layout
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pretrain_grid**2, config.width))
        self.ln_pre = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList(
            Block(config, 0 if i in config.global_layers else config.window_size) for i in range(config.depth)
        )

    def tiled_pos_embed(self) -> torch.Tensor:
        """The learned pos-embed grid repeated (not interpolated) over the token grid -> [1, G, G, C]."""
        side, repeats = self.config.pretrain_grid, self.config.grid_size // self.config.pretrain_grid
        grid = self.pos_embed[:, 1:].view(1, side, side, -1)
        return grid.repeat(1, repeats, repeats, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(self.patch_embed(images) + self.tiled_pos_embed())
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)  # B x H x W x C -> B x C x H x W
