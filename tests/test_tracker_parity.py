"""The tracker against transformers' Sam3TrackerModel / Sam3TrackerVideoModel with the same tiny random
weights.

Weights go through `hf_tracker_state_dict_to_official`, so these tests also check the key mapping.
"""

import dataclasses

import pytest
import torch
from hf_reference import hf_tracker_kwargs, randomize_, with_tied_fourier_matrix
from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerVideoConfig, Sam3TrackerVideoModel

from conceptseg.checkpoint.hf_tracker import hf_tracker_state_dict_to_official
from conceptseg.model.configs import SAM3Config, tiny_config
from conceptseg.model.tracker.tracker import Tracker

TOLERANCE = 1e-4
MEMORY_PREFIXES = ("maskmem_", "transformer.", "obj_ptr_", "no_mem_pos_enc", "no_obj_", "mask_downsample.")


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


@pytest.fixture(scope="module")
def image_pair():
    config = tiny_config()
    hf = Sam3TrackerModel(Sam3TrackerConfig(**hf_tracker_kwargs(config)))
    hf = with_tied_fourier_matrix(randomize_(hf, 0).eval())
    ours = Tracker(config).eval()
    result = ours.load_state_dict(hf_tracker_state_dict_to_official(hf.state_dict()), strict=False)
    return hf, ours, result


@pytest.fixture(scope="module")
def video_pair():
    """HF's video tracker needs hidden size > 64 (object pointers are split into 64-d tokens)."""
    config = dataclasses.replace(tiny_config(), d_model=128)
    tracker = dataclasses.replace(config.tracker, memory_attention_layers=2)
    config = dataclasses.replace(config, tracker=tracker)
    t = config.tracker
    hf_config = Sam3TrackerVideoConfig(
        **hf_tracker_kwargs(config), num_maskmem=t.num_maskmem, memory_attention_hidden_size=128,
        memory_attention_num_layers=t.memory_attention_layers,
        memory_attention_feed_forward_hidden_size=t.memory_attention_mlp_dim, memory_encoder_hidden_size=128,
        memory_encoder_output_channels=t.memory_dim, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=4 * 128, image_size=config.vit.image_size,
    )
    hf = with_tied_fourier_matrix(randomize_(Sam3TrackerVideoModel(hf_config), 1).eval())
    ours = Tracker(config).eval()
    ours.load_state_dict(hf_tracker_state_dict_to_official(hf.state_dict()), strict=True)
    return hf, ours


def test_image_tracker_weights_fill_everything_but_memory(image_pair):
    _, _, result = image_pair
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith(MEMORY_PREFIXES) for k in result.missing_keys)


def test_mapping_strips_hub_prefix_and_skips_other_parts(video_pair):
    hf, _ = video_pair
    plain = hf_tracker_state_dict_to_official(hf.state_dict())
    hub = {f"tracker_model.{k}": v for k, v in hf.state_dict().items()}
    hub["detector_model.some.weight"] = torch.zeros(1)
    hub["tracker_neck.fpn_layers.0.proj1.weight"] = torch.zeros(1)
    converted = hf_tracker_state_dict_to_official(hub)
    assert converted.keys() == plain.keys()
    weight = hf.prompt_encoder.point_embed.weight
    for i in range(4):
        assert torch.equal(converted[f"sam_prompt_encoder.point_embeddings.{i}.weight"], weight[i : i + 1])


def test_mapping_rejects_unknown_keys():
    with pytest.raises(ValueError, match="not Hugging Face tracker weights"):
        hf_tracker_state_dict_to_official({"detr_decoder.layers.0.weight": torch.zeros(1)})


def prompts(config: SAM3Config, batch: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size, side = config.vit.image_size, config.mask_size
    corners = (torch.rand(batch, 2, 2, generator=generator) * size).sort(dim=1).values  # [B, (min, max), xy]
    return {
        "points": torch.rand(batch, 3, 2, generator=generator) * size,
        "labels": torch.tensor([[1, 0, 1], [1, 1, 0]])[:batch],
        "boxes": corners.flatten(1),
        "mask": 5 * torch.randn(batch, 1, side, side, generator=generator),
    }


def neck_features(config: SAM3Config, batch: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    g, d = config.vit.grid_size, config.d_model
    return [torch.randn(batch, d, s, s, generator=generator) for s in (4 * g, 2 * g, g)]


def run_hf(
    hf, features, points=None, labels=None, boxes=None, mask=None, multimask=True, prompts_per_image=1
):
    """HF expects `image_embeddings` with the skip features projected and the no-memory embedding added."""
    decoder = hf.mask_decoder
    embeddings = [decoder.conv_s0(features[0]), decoder.conv_s1(features[1]),
                  features[2] + hf.no_memory_embedding.view(1, -1, 1, 1)]

    def per_image(x):  # [B, ...] -> [images, prompts per image, ...]
        return None if x is None else x.unflatten(0, (-1, prompts_per_image))

    out = hf(image_embeddings=embeddings, input_points=per_image(points), input_labels=per_image(labels),
             input_boxes=per_image(boxes), input_masks=mask, multimask_output=multimask)
    return [x.flatten(0, 1) for x in (out.pred_masks, out.iou_scores, out.object_score_logits)]


CASES = {
    "one positive point": ("points1", "labels1"),
    "positive and negative points": ("points", "labels"),
    "box": ("boxes",),
    "box and points": ("boxes", "points", "labels"),
    "mask input and a point": ("mask", "points1", "labels1"),
}


def select(all_prompts: dict, names: tuple[str, ...]) -> dict:
    chosen = {}
    for name in names:
        key = name.removesuffix("1")
        chosen[key] = all_prompts[key][:, :1] if name.endswith("1") else all_prompts[key]
    return chosen


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_interactive_prediction_matches_hf(image_pair, case, multimask):
    hf, ours, _ = image_pair
    config = tiny_config()
    features = neck_features(config, batch=2, seed=3)
    chosen = select(prompts(config, batch=2, seed=4), CASES[case])
    with torch.no_grad():
        reference = run_hf(hf, features, multimask=multimask, **chosen)
        got = ours.predict_masks(features, chosen.get("points"), chosen.get("labels"), chosen.get("boxes"),
                                 chosen.get("mask"), multimask=multimask)
    num_masks = 3 if multimask else 1
    assert [tuple(x.shape) for x in got] == [(2, num_masks, 32, 32), (2, num_masks), (2, 1)]
    for ours_out, ref_out in zip(got, reference):
        assert relative_error(ours_out, ref_out) <= TOLERANCE


def test_one_image_with_several_prompts_matches_hf(image_pair):
    hf, ours, _ = image_pair
    config = tiny_config()
    features = neck_features(config, batch=1, seed=5)
    chosen = prompts(config, batch=2, seed=6)
    with torch.no_grad():
        reference = run_hf(hf, features, chosen["points"], chosen["labels"], prompts_per_image=2)
        got = ours.predict_masks(features, chosen["points"], chosen["labels"])
    for ours_out, ref_out in zip(got, reference):
        assert relative_error(ours_out, ref_out) <= TOLERANCE


def test_memory_encoder_matches_hf(video_pair):
    hf, ours = video_pair
    g = ours.grid_size
    generator = torch.Generator().manual_seed(7)
    pix_feat = torch.randn(2, 128, g, g, generator=generator)
    masks = 10 * torch.randn(2, 1, 16 * g, 16 * g, generator=generator)
    with torch.no_grad():
        reference = hf.memory_encoder(pix_feat, masks)
        got = ours.maskmem_backbone(pix_feat, masks)
    for ours_out, ref_out in zip(got, reference):
        assert ours_out.shape == (2, 64, g, g)
        assert relative_error(ours_out, ref_out) <= TOLERANCE


@pytest.mark.parametrize("frames, pointers", [(1, 0), (3, 8)])
def test_memory_attention_matches_hf(video_pair, frames, pointers):
    hf, ours = video_pair
    g = ours.grid_size
    generator = torch.Generator().manual_seed(8)
    features, pos = torch.randn(2, 2, 128, g, g, generator=generator)
    memory, memory_pos = torch.randn(2, 2, frames * g * g + pointers, 64, generator=generator)
    with torch.no_grad():
        reference = hf.memory_attention(  # HF is sequence-first: [HW, B, C] and [M, B, 64]
            current_vision_features=features.flatten(2).permute(2, 0, 1), memory=memory.transpose(0, 1),
            current_vision_position_embeddings=pos.flatten(2).permute(2, 0, 1),
            memory_posision_embeddings=memory_pos.transpose(0, 1), num_object_pointer_tokens=pointers,
        )[0].transpose(1, 2).reshape(features.shape)
        got = ours.memory_attention(features, pos, memory, memory_pos, pointers)
    assert relative_error(got, reference) <= TOLERANCE


@pytest.mark.parametrize("from_points", [False, True])
@pytest.mark.parametrize("object_logit", [2.0, -2.0])
def test_encode_memory_matches_hf(video_pair, from_points, object_logit):
    """HF stores memories in bfloat16, hence the bf16-level tolerance."""
    hf, ours = video_pair
    g = ours.grid_size
    generator = torch.Generator().manual_seed(9)
    pix_feat = torch.randn(1, 128, g, g, generator=generator)
    masks = 10 * torch.randn(1, 1, 16 * g, 16 * g, generator=generator)
    logits = torch.tensor([[object_logit]])
    with torch.no_grad():
        sequence_first = pix_feat.flatten(2).permute(2, 0, 1)
        reference, reference_pos = hf._encode_new_memory(sequence_first, masks, logits, from_points)
        got, pos = ours.encode_memory(pix_feat, masks, logits, from_points)
    assert relative_error(got, reference.float().permute(1, 2, 0).reshape(got.shape)) <= 1e-2
    assert relative_error(pos, reference_pos.permute(1, 2, 0).reshape(pos.shape)) <= TOLERANCE
