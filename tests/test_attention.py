"""Our MultiheadAttention: PyTorch's parameters, initialisation and results, batch-first, output only."""

import pytest
import torch
from torch import nn

from conceptseg.model.common import MultiheadAttention


def pair(dim: int = 32, heads: int = 4) -> tuple[MultiheadAttention, nn.MultiheadAttention]:
    torch.manual_seed(3)
    ours = MultiheadAttention(dim, heads)
    torch.manual_seed(3)
    theirs = nn.MultiheadAttention(dim, heads, batch_first=True)
    return ours.eval(), theirs.eval()


def test_same_parameter_names_and_seeded_initialisation() -> None:
    ours, theirs = pair()
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for name, tensor in theirs_state.items():
        assert torch.equal(ours_state[name], tensor), name


@pytest.mark.parametrize("case", ["self", "cross", "padding", "bias", "bias+padding", "causal"])
def test_matches_pytorch(case: str) -> None:
    ours, theirs = pair()
    with torch.no_grad():  # random, not initial, parameters: zero biases would hide a mixed-up bias
        for parameter in ours.parameters():
            parameter.normal_(0, 0.3)
    theirs.load_state_dict(ours.state_dict())
    generator = torch.Generator().manual_seed(5)
    batch, queries, keys, dim, heads = 2, 5, 7, 32, 4
    query = torch.randn(batch, queries, dim, generator=generator)
    memory = torch.randn(batch, keys, dim, generator=generator)
    value = torch.randn(batch, keys, dim, generator=generator)
    padding = torch.zeros(batch, keys, dtype=torch.bool)
    padding[1, -3:] = True
    bias = torch.randn(batch, heads, queries, keys, generator=generator)
    if case == "self":
        args, ours_kw, theirs_kw = (query, query, query), {}, {}
    elif case == "causal":
        causal = torch.full((queries, queries), float("-inf")).triu(1)
        args, ours_kw, theirs_kw = (query, query, query), {"attn_mask": causal}, {"attn_mask": causal}
    else:
        args = (query, memory, value)
        ours_kw = {"key_padding_mask": padding} if "padding" in case else {}
        if "bias" in case:
            ours_kw["attn_mask"] = bias
        theirs_kw = dict(ours_kw)
        if "bias" in case:
            theirs_kw["attn_mask"] = bias.flatten(0, 1)  # PyTorch's layout: [B * heads, Nq, Nk]
    expected = theirs(*args, need_weights=False, **theirs_kw)[0]
    torch.testing.assert_close(ours(*args, **ours_kw), expected, rtol=1e-5, atol=1e-5)
