"""Behaviour of the tracker modules that the HF parity tests do not pin down (no transformers needed)."""

import pytest
import torch
import torch.nn.functional as F

from conceptseg.model.common import MLP, LayerNorm2d
from conceptseg.model.configs import tiny_config
from conceptseg.model.tracker.tracker import Tracker

CONFIG = tiny_config()
G = CONFIG.vit.grid_size


@pytest.fixture(scope="module")
def tracker():
    torch.manual_seed(0)
    model = Tracker(CONFIG).eval()
    with torch.no_grad():  # non-trivial values for the zero/1e-6-initialised parameters
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def features(batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CONFIG.d_model, s, s, generator=generator) for s in (4 * G, 2 * G, G)]


def test_mlp_is_relu_between_linear_layers():
    mlp = MLP(4, 8, 2, 3, sigmoid_output=True)
    assert [k for k in mlp.state_dict() if k.endswith("weight")] == [f"layers.{i}.weight" for i in range(3)]
    x = torch.randn(5, 4)
    a, b, c = mlp.layers
    assert torch.allclose(mlp(x), torch.sigmoid(c(F.relu(b(F.relu(a(x)))))))


def test_layer_norm_2d_normalises_each_pixel_over_channels():
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(2, 6, 3, 4)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(norm(x), expected, atol=1e-6)


def test_single_mask_output_falls_back_to_best_multimask_when_unstable(tracker):
    decoder = tracker.sam_mask_decoder
    stable = torch.full((4, 4), 10.0)  # confident logits: thresholds at +-0.05 give the same mask
    unstable = torch.full((4, 4), 0.01)  # inside (-0.05, 0.05]: IoU 0 between the two thresholded masks
    masks = torch.stack([torch.stack([first, torch.zeros(4, 4), torch.ones(4, 4), 2 * torch.ones(4, 4)])
                         for first in (stable, unstable)])
    iou = torch.tensor([[0.1, 0.2, 0.9, 0.3], [0.1, 0.2, 0.9, 0.3]])
    chosen, chosen_iou = decoder.select_stable_mask(masks, iou)
    assert torch.equal(chosen[0, 0], stable) and chosen_iou[0, 0] == 0.1
    assert torch.equal(chosen[1, 0], torch.ones(4, 4)) and chosen_iou[1, 0] == 0.9


def test_mask_only_prompt_has_no_sparse_tokens(tracker):
    """Like the official predictor (unlike HF, which adds two padding points), a mask alone adds no token."""
    mask = torch.randn(2, 1, 4 * G, 4 * G)
    sparse, dense = tracker.sam_prompt_encoder(None, None, mask, batch_size=2)
    assert sparse.shape == (2, 0, CONFIG.d_model) and dense.shape == (2, CONFIG.d_model, G, G)
    masks, iou, scores = tracker.predict_masks(features(), mask_input=mask)
    assert masks.shape == (2, 3, 4 * G, 4 * G) and iou.shape == (2, 3) and scores.shape == (2, 1)


def test_points_get_a_padding_token_and_boxes_two_corner_tokens(tracker):
    points, labels = torch.tensor([[[10.0, 20.0]]]), torch.tensor([[1]])
    coords, merged = tracker._merge_box_and_points(points, labels, torch.tensor([[1.0, 2.0, 30.0, 40.0]]))
    assert merged.tolist() == [[2, 3, 1]] and coords.tolist() == [[[1, 2], [30, 40], [10, 20]]]
    sparse, _ = tracker.sam_prompt_encoder(coords, merged, None, batch_size=1)
    assert sparse.shape == (1, 4, CONFIG.d_model)
    assert torch.equal(sparse[0, -1], tracker.sam_prompt_encoder.not_a_point_embed.weight[0])


def test_shared_image_equals_repeated_image_and_batch_is_independent(tracker):
    points = torch.tensor([[[30.0, 40.0]], [[80.0, 15.0]]])
    labels = torch.ones(2, 1, dtype=torch.long)
    shared = tracker.predict_masks(features(1), points, labels, multimask=False)
    two_copies = [f.expand(2, -1, -1, -1) for f in features(1)]
    repeated = tracker.predict_masks(two_copies, points, labels, multimask=False)
    alone = tracker.predict_masks(features(1), points[1:], labels[1:], multimask=False)
    for a, b, c in zip(shared, repeated, alone):
        assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a[1:], c, atol=1e-5)


def test_runs_in_float64(tracker):
    model = Tracker(CONFIG).eval().double()
    masks, iou, scores = model.predict_masks([f.double() for f in features()], torch.tensor([[[5.0, 9.0]]]),
                                             torch.tensor([[1]]))
    assert masks.dtype == iou.dtype == scores.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points": torch.zeros(1, 1, 2)}, "given together"),
        ({"points": torch.zeros(1, 1, 2), "point_labels": torch.tensor([[2]])}, "point_labels must be in"),
        ({"boxes": torch.zeros(1, 2, 4)}, "boxes must be"),
        ({"mask_input": torch.zeros(1, 1, 8, 8)}, "mask_input must be"),
        (
            {"points": torch.zeros(2, 1, 2), "point_labels": torch.ones(2, 1), "boxes": torch.zeros(3, 4)},
            "batch size",
        ),
    ],
)
def test_invalid_prompts_raise(tracker, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tracker.predict_masks(features(), **kwargs)


def test_wrong_feature_maps_raise(tracker):
    with pytest.raises(ValueError, match="tracker-neck maps"):
        tracker.predict_masks(features()[1:], torch.zeros(1, 1, 2), torch.ones(1, 1))


def test_encode_memory_marks_absent_objects_and_binarises_clicked_masks(tracker):
    pix_feat = torch.randn(1, CONFIG.d_model, G, G)
    logits = 3 * torch.randn(1, 1, 16 * G, 16 * G)
    present, _ = tracker.encode_memory(pix_feat, logits, torch.tensor([[1.0]]), is_mask_from_points=False)
    absent, pos = tracker.encode_memory(pix_feat, logits, torch.tensor([[-1.0]]), is_mask_from_points=False)
    embed = tracker.no_obj_embed_spatial[0][:, None, None]
    assert torch.allclose(absent - present, embed.expand_as(present), atol=1e-5)
    assert pos.shape == present.shape == (1, CONFIG.tracker.memory_dim, G, G)
    clicked, _ = tracker.encode_memory(pix_feat, logits, torch.tensor([[1.0]]), is_mask_from_points=True)
    saturated = 50 * logits.sign()  # sigmoid of these is 0 or 1 to float precision
    binary, _ = tracker.encode_memory(pix_feat, saturated, torch.tensor([[1.0]]), is_mask_from_points=False)
    assert torch.allclose(clicked, binary, atol=1e-4) and not torch.allclose(clicked, present, atol=1e-3)


def test_memory_encoder_resizes_masks_of_any_size(tracker):
    pix_feat = torch.randn(1, CONFIG.d_model, G, G)
    mask = torch.randn(1, 1, CONFIG.vit.image_size, CONFIG.vit.image_size)
    resized = F.interpolate(mask, size=(16 * G, 16 * G), mode="bilinear", align_corners=False, antialias=True)
    for a, b in zip(tracker.maskmem_backbone(pix_feat, mask), tracker.maskmem_backbone(pix_feat, resized)):
        assert torch.allclose(a, b)


def test_memory_attention_rotates_spatial_memory_but_not_object_pointers(tracker):
    attention = tracker.memory_attention
    generator = torch.Generator().manual_seed(2)
    feats, pos = torch.randn(2, 1, CONFIG.d_model, G, G, generator=generator)
    spatial = torch.randn(1, G * G, 64, generator=generator)
    pointers = torch.randn(1, 4, 64, generator=generator)
    memory = torch.cat((spatial, pointers), dim=1)
    no_pos = torch.zeros_like(memory)
    out = attention(feats, pos, memory, no_pos, num_obj_ptr_tokens=4)
    shuffled_pointers = torch.cat((spatial, pointers.flip(1)), dim=1)
    assert torch.allclose(out, attention(feats, pos, shuffled_pointers, no_pos, 4), atol=1e-5)
    shuffled_spatial = torch.cat((spatial.flip(1), pointers), dim=1)
    assert not torch.allclose(out, attention(feats, pos, shuffled_spatial, no_pos, 4), atol=1e-3)
