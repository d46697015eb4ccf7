"""Behaviour of the tracker modules that the HF parity tests do not pin down (no transformers needed)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conceptseg.model.common import MLP, LayerNorm2d
from conceptseg.model.configs import tiny_config
from conceptseg.model.tracker.memory_bank import FrameMemory, MemoryBank, pointer_temporal_encoding
from conceptseg.model.tracker.tracker import NO_OBJECT_LOGIT, Tracker

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


# video tracking: the memory bank ------------------------------------------------------------------------------

VIDEO_CONFIG = dataclasses.replace(CONFIG, d_model=128)  # pointers split into 64-d tokens: C must be a multiple


def memory(frame: int, conditioning: bool = False) -> FrameMemory:
    """A small stand-in memory whose pointer records its frame."""
    return FrameMemory(frame, conditioning, torch.zeros(1, 64, 2, 2), torch.zeros(1, 64, 2, 2),
                       torch.full((1, 128), float(frame)), torch.ones(1, 1))


def pointer_frames(readout) -> list[tuple[int, int]]:
    """(distance, frame the pointer came from) pairs."""
    return [(distance, int(pointer[0, 0])) for distance, pointer in readout.pointers]


@pytest.mark.parametrize("reverse", [False, True])
def test_bank_keeps_only_what_the_window_can_reach(reverse):
    bank = MemoryBank()
    frames = list(range(99, -1, -1)) if reverse else list(range(100))
    bank.add(memory(frames[0], conditioning=True))
    sizes = []
    for frame in frames[1:]:
        bank.add(memory(frame))
        sizes.append((len(bank), sum(m.features is not None for m in bank.memories())))
    assert sizes[15:] == [(1 + 15, 1 + 6)] * (len(frames) - 16)  # conditioning + P - 1 pointers, 6 with features
    newest = frames[-1]
    assert bank.recent_frames == sorted(frames[-15:]) and bank.conditioning_frames == [frames[0]]
    with_features = [m.frame_idx for m in bank.memories() if m.features is not None and not m.is_conditioning]
    assert with_features == sorted(frames[-6:]) and newest in with_features


def test_read_takes_the_closest_conditioning_frames_then_recent_frames():
    bank = MemoryBank()
    for frame in (0, 5, 12, 30, 40):
        bank.add(memory(frame, conditioning=True))
    for frame in range(13, 18):
        bank.add(memory(frame))
    readout = bank.read(18)
    # before: 12, at or after: 30, then the closest others: 5 (13 away) and 0 (18 away); 40 is left out
    assert [(d, m.frame_idx) for d, m in readout.spatial] == [(0, 12), (0, 30), (0, 5), (0, 0)] + [
        (18 - t, t) for t in range(13, 18)]
    # pointers: the selected conditioning frames in the past, then the recent frames, nearest first
    assert pointer_frames(readout) == [(6, 12), (13, 5), (18, 0)] + [(18 - t, t) for t in range(17, 12, -1)]
    assert readout.pointer_range == 15


def test_unselected_conditioning_frames_serve_as_recent_frames_backward():
    bank = MemoryBank()
    for frame in (0, 2, 4, 6, 8):
        bank.add(memory(frame, conditioning=True))
    readout = bank.read(3, reverse=True)
    # selected: 2 (before), 4 (after), 0 and 6 (3 away, in insertion order); 8 is read as the frame 5 steps on
    assert [(d, m.frame_idx) for d, m in readout.spatial] == [(0, 2), (0, 4), (0, 0), (0, 6), (5, 8)]
    # backward, the pointers of conditioning frames at or after the current frame, distances mirrored
    assert pointer_frames(readout) == [(1, 4), (3, 6), (5, 8)]


def test_video_length_limits_the_pointer_window():
    bank = MemoryBank(num_frames=4)
    bank.add(memory(0, conditioning=True))
    for frame in (1, 2):
        bank.add(memory(frame))
    readout = bank.read(3)
    assert readout.pointer_range == 3 and pointer_frames(readout) == [(3, 0), (1, 2), (2, 1)]
    assert bank.read(1, reverse=True).pointers == [(1, bank.get(2).object_pointer)]  # frames >= 4 do not exist


def test_bank_updates():
    bank = MemoryBank(max_conditioning_frames=2)
    for frame in (0, 10, 20):
        bank.add(memory(frame, conditioning=True))
    assert bank.conditioning_frames == [10, 20]  # the farthest from the newest went
    bank.add(memory(21))
    bank.add(memory(500, conditioning=True))  # a prompt far away leaves the tracking window alone
    assert bank.recent_frames == [21] and 21 in bank
    assert bank.conditioning_frames == [20, 500]
    bank.add(memory(21, conditioning=True))  # re-conditioning a tracked frame; 500 is now the farthest
    assert bank.recent_frames == [] and bank.conditioning_frames == [20, 21]
    bank.add(memory(22))
    bank.drop_recent()
    bank.remove_frame(20)
    assert [m.frame_idx for m in bank.memories()] == [21] and bank.get(22) is None


def test_memory_features_are_stored_in_bfloat16_unless_asked():
    assert MemoryBank().memory_dtype == torch.bfloat16
    for dtype in (torch.bfloat16, torch.float32):
        bank = MemoryBank(memory_dtype=dtype)
        bank.add(memory(0, conditioning=True))
        assert bank.get(0).features.dtype == dtype and bank.get(0).pos.dtype == torch.float32


def test_pointer_temporal_encoding_is_sin_then_cos_with_paired_frequencies():
    distances = torch.tensor([0.0, 0.5, 1.0])
    encoding = pointer_temporal_encoding(distances, 8)
    frequencies = 1.0 / 10000 ** (torch.tensor([0, 0, 2, 2]) / 4)
    angles = distances[:, None] * frequencies
    assert torch.allclose(encoding, torch.cat((angles.sin(), angles.cos()), dim=-1))


# video tracking: track_step and remember -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_tracker():
    torch.manual_seed(1)
    model = Tracker(VIDEO_CONFIG).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def video_features(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 128, s, s, generator=generator) for s in (4 * G, 2 * G, G)]


CLICK = dict(points=torch.tensor([[[40.0, 50.0]]]), point_labels=torch.tensor([[1]]))


@torch.no_grad()
def test_tracking_a_long_video_keeps_the_bank_bounded(video_tracker):
    bank = video_tracker.new_memory_bank()
    out = video_tracker.track_step(video_features(0), bank, 0, **CLICK)
    video_tracker.remember(video_features(0), bank, 0, out)
    counts = []
    for frame in range(1, 100):
        features = video_features(frame % 5)
        out = video_tracker.track_step(features, bank, frame)
        video_tracker.remember(features, bank, frame, out)
        stored = [t for m in bank.memories() for t in (m.features, m.pos, m.object_pointer) if t is not None]
        counts.append((len(bank), len(stored), sum(t.numel() for t in stored)))
    assert out.mask_logits.shape == (1, 1, 4 * G, 4 * G) and out.object_pointer.shape == (1, 128)
    assert len(set(counts[15:])) == 1 and counts[-1][0] == 16


@torch.no_grad()
def test_track_step_follows_predict_masks_on_prompted_frames(video_tracker):
    """A prompted frame ignores the memory; 0-1 clicks take the best of three masks, a box the single mask."""
    features = video_features(1)
    bank = video_tracker.new_memory_bank()
    box = torch.tensor([[10.0, 20.0, 90.0, 80.0]])
    for prompt, multimask in ((CLICK, True), (dict(box=box), False)):
        out = video_tracker.track_step(features, bank, 0, **prompt)
        masks, iou, scores = video_tracker.predict_masks(features, prompt.get("points"), prompt.get("point_labels"),
                                                         prompt.get("box"), multimask=multimask)
        best = iou.argmax(dim=-1)
        expected = masks[:, best] if scores.item() > 0 else torch.full_like(out.mask_logits, NO_OBJECT_LOGIT)
        assert torch.allclose(out.mask_logits, expected) and torch.allclose(out.iou, iou[:, best])
        video_tracker.remember(features, bank, 0, out)
    assert torch.equal(video_tracker.track_step(features, bank, 0, **CLICK).mask_logits,
                       video_tracker.track_step(features, video_tracker.new_memory_bank(), 0, **CLICK).mask_logits)


@torch.no_grad()
def test_absent_object_gets_no_object_masks_and_pointer(video_tracker):
    head = video_tracker.sam_mask_decoder.pred_obj_score_head.layers[-1]
    bias = head.bias.clone()
    head.bias.fill_(-1e4)
    try:
        out = video_tracker.track_step(video_features(2), video_tracker.new_memory_bank(), 0, **CLICK)
    finally:
        head.bias.copy_(bias)
    assert out.object_score_logits.item() < 0 and out.is_conditioning
    assert (out.mask_logits == NO_OBJECT_LOGIT).all() and (out.high_res_mask_logits == NO_OBJECT_LOGIT).all()
    assert torch.equal(out.object_pointer, video_tracker.no_obj_ptr)


@torch.no_grad()
def test_mask_prompt_is_used_as_the_output(video_tracker):
    size = VIDEO_CONFIG.vit.image_size
    mask = torch.zeros(1, 1, 4 * G, 4 * G)
    mask[..., 8:20, 4:16] = 1
    out = video_tracker.track_step(video_features(3), video_tracker.new_memory_bank(), 0, mask=mask)
    resized = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False, antialias=True) >= 0.5
    assert torch.equal(out.high_res_mask_logits, torch.where(resized, 10.0, -10.0))
    assert out.mask_logits.shape == (1, 1, 4 * G, 4 * G) and out.object_score_logits.item() == 10.0
    assert out.iou.item() == 1.0 and out.is_conditioning
    empty = video_tracker.track_step(video_features(3), video_tracker.new_memory_bank(), 0, mask=0 * mask)
    assert empty.object_score_logits.item() == -10.0 and torch.equal(empty.object_pointer, video_tracker.no_obj_ptr)


@torch.no_grad()
def test_remember_encodes_the_mask_the_caller_settled_on(video_tracker):
    features = video_features(4)
    bank = video_tracker.new_memory_bank(memory_dtype=torch.float32)
    out = video_tracker.track_step(features, bank, 0, **CLICK)
    edited, score = torch.full((1, 1, 4 * G, 4 * G), -10.0), torch.tensor([[-10.0]])  # e.g. suppressed
    memory = video_tracker.remember(features, bank, 0, out, mask_logits=edited, object_score_logits=score,
                                    conditioning=False)
    expected, pos = video_tracker.encode_memory(features[-1], edited, score, is_mask_from_points=False)
    assert torch.equal(memory.features, expected) and torch.equal(memory.pos, pos)
    assert torch.equal(memory.object_pointer, out.object_pointer) and not memory.is_conditioning
    assert bank.recent_frames == [0] and bank.conditioning_frames == []


def test_track_step_rejects_what_it_cannot_track(video_tracker):
    features = video_features(5)
    with pytest.raises(ValueError, match="no conditioning memory"):
        video_tracker.track_step(features, video_tracker.new_memory_bank(), 0)
    with pytest.raises(ValueError, match="cannot be combined"):
        video_tracker.track_step(features, MemoryBank(), 0, mask=torch.ones(1, 1, 8, 8), **CLICK)
    with pytest.raises(ValueError, match="batch 1"):
        video_tracker.track_step([f.expand(2, -1, -1, -1) for f in features], MemoryBank(), 0, **CLICK)
    bank = MemoryBank(num_maskmem=3)
    bank.add(memory(0, conditioning=True))
    with pytest.raises(ValueError, match="num_maskmem"):
        video_tracker.track_step(features, bank, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@torch.no_grad()
def test_video_tracking_runs_in_other_dtypes(dtype):
    model = Tracker(VIDEO_CONFIG).eval().to(dtype)
    features = [f.to(dtype) for f in video_features(6)]
    bank = model.new_memory_bank()
    mask = torch.zeros(1, 1, 4 * G, 4 * G)
    mask[..., 4:12, 4:12] = 1
    for frame in range(3):
        out = model.track_step(features, bank, frame, **(dict(mask=mask) if frame == 0 else {}))
        model.remember(features, bank, frame, out)
    assert out.mask_logits.dtype == out.object_pointer.dtype == dtype and bank.get(2).features.dtype == torch.bfloat16
