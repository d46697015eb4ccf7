"""2-D axial RoPE (conceptseg.model.rope): the one implementation behind the ViT and the memory attention."""

import pytest
import torch

from conceptseg.model.configs import tiny_config
from conceptseg.model.rope import apply_rope, axial_rope_angles
from conceptseg.model.vit import Block


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    return apply_rope(x, angles.cos(), angles.sin())


def test_rope_preserves_norms_and_depends_on_relative_position():
    angles = axial_rope_angles(3, 5, head_dim=8)
    q = torch.randn(1, 1, 1, 8).expand(1, 1, 15, 8)
    rotated = rotate(q, angles)
    assert torch.allclose(rotated.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    scores = rotated[0, 0] @ rotated[0, 0].T  # same vector at every position: depends on the offset only
    grid = scores.view(3, 5, 3, 5)
    assert torch.allclose(grid[0, 0, 1, 2], grid[1, 1, 2, 3], atol=1e-5)
    assert not torch.allclose(grid[0, 0, 1, 2], grid[0, 0, 2, 1], atol=1e-3)
    with pytest.raises(ValueError, match="whole number"):
        rotate(torch.randn(1, 1, 16, 8), angles)


def test_columns_turn_the_first_half_of_the_pairs_rows_the_rest():
    angles = axial_rope_angles(2, 3, 8, theta=100.0)  # 2 x-pairs then 2 y-pairs, frequencies 1, 1/10
    freqs = torch.tensor([1.0, 0.1])
    assert torch.allclose(angles[5], torch.cat((2 * freqs, 1 * freqs)))  # token 5: column 2, row 1
    assert torch.equal(axial_rope_angles(2, 3, 8, theta=100.0, scale=0.5), angles * 0.5)


def test_several_frames_share_one_table():
    angles = axial_rope_angles(2, 2, head_dim=4)
    frames = torch.randn(2, 3, 4, 4)  # B x frames x tokens x D
    together = rotate(frames.flatten(1, 2), angles)
    one_by_one = torch.cat([rotate(frames[:, i], angles) for i in range(3)], dim=1)
    assert torch.equal(together, one_by_one)
    assert rotate(torch.randn(2, 0, 4), angles).shape == (2, 0, 4)


def test_vit_global_blocks_see_the_window_grid_scale():
    vit = tiny_config().vit  # 4 x 4 windows on a 8 x 8 grid
    window, global_ = Block(vit, vit.window_size), Block(vit, 0)
    head_dim = vit.width // vit.num_heads
    assert torch.equal(global_.rope_cos, axial_rope_angles(8, 8, head_dim, theta=vit.rope_theta, scale=0.5).cos())
    assert torch.equal(window.rope_cos, axial_rope_angles(4, 4, head_dim, theta=vit.rope_theta).cos())
    # the token at global position (2, 2) gets the angles of window position (1, 1)
    assert torch.allclose(global_.rope_cos[2 * 8 + 2], window.rope_cos[1 * 4 + 1])


def test_bf16_input_is_rotated_in_float32_and_returned_in_bf16():
    angles = axial_rope_angles(2, 2, head_dim=4)
    x = torch.randn(1, 4, 4)
    out = rotate(x.bfloat16(), angles)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), rotate(x.bfloat16().float(), angles), atol=1e-2)
