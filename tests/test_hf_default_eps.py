"""Hugging Face checkpoints whose configs leave every `layer_norm_eps` at transformers' default.

transformers reads that field for its ViT, text encoder and tracker prompt encoder, but builds the detector's
LayerNorms with PyTorch's default eps. A loader that trusts the field gets the detector wrong by ~5e-4, in
float64 too, so these tests compare in both precisions, with weights perturbed away from their init values
(unit norm weights would hide an eps error).
"""

import dataclasses

import pytest
import torch
from hf_reference import hf_config_for, hf_tracker_kwargs, with_tied_fourier_matrix
from safetensors.torch import load_file
from test_tracker_parity import neck_features, prompts, relative_error, run_hf
from transformers import (
    Sam3Config,
    Sam3Model,
    Sam3TrackerConfig,
    Sam3TrackerModel,
    Sam3TrackerVideoConfig,
    Sam3TrackerVideoModel,
)

from conceptseg import load_model, tiny_config, tokenize
from conceptseg.checkpoint.hf_tracker import hf_tracker_state_dict_to_official
from conceptseg.model.tracker.tracker import Tracker

OUTPUTS = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks", "semantic_seg")
TOLERANCES = {torch.float32: 1e-4, torch.float64: 1e-6}


def without_eps(config: dict) -> dict:
    """A config dict with every `layer_norm_eps` removed, so that each sub-config takes its default."""
    return {key: without_eps(value) if isinstance(value, dict) else value
            for key, value in config.items() if key != "layer_norm_eps"}


def perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            param.add_(0.02 * torch.randn(param.shape, generator=generator))
    return module.eval()


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    torch.manual_seed(0)
    hf = perturbed(Sam3Model(Sam3Config(**without_eps(hf_config_for(tiny_config()).to_dict()))), seed=1)
    assert hf.config.detr_encoder_config.layer_norm_eps == 1e-6  # transformers' default, not SAM 3's 1e-5
    directory = tmp_path_factory.mktemp("hf_default_eps")
    hf.save_pretrained(directory)
    return hf, directory


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_detector_with_default_eps_matches_transformers(detector_dir, dtype):
    hf, directory = detector_dir
    ours = load_model(directory, dtype=dtype)
    reference = Sam3Model.from_pretrained(directory).to(dtype).eval()
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 112, 112, generator=generator, dtype=dtype)
    ids = tokenize(["red circle", "a yellow school bus"])
    boxes = torch.tensor([[[0.4, 0.5, 0.3, 0.2]], [[0.6, 0.3, 0.2, 0.4]]], dtype=dtype)
    labels = torch.ones(2, 1, dtype=torch.long)
    with torch.no_grad():
        got = ours.detect(images, ids, boxes=boxes, box_labels=labels)
        expected = reference(pixel_values=images, input_ids=ids, attention_mask=(ids != 0).long(),
                             input_boxes=boxes, input_boxes_labels=labels)
    for name in OUTPUTS:
        assert got[name].dtype == dtype
        assert relative_error(got[name], getattr(expected, name)) <= TOLERANCES[dtype], name


def through_saved_file(hf: torch.nn.Module, directory, config) -> Tracker:
    """Our tracker with the weights of `hf.save_pretrained(directory)`."""
    hf.save_pretrained(directory)
    ours = Tracker(config)
    # the image tracker has no memory weights: those keep their init
    ours.load_state_dict(hf_tracker_state_dict_to_official(load_file(str(directory / "model.safetensors"))),
                         strict=False)
    return ours.eval()


@pytest.fixture(scope="module")
def tracker_pairs(tmp_path_factory):
    """HF's image tracker (prompt encoder, mask decoder) and video tracker (memory encoder) with default eps."""
    config = dataclasses.replace(tiny_config(), d_model=128)  # HF's video tracker needs > 64 channels
    video_config = Sam3TrackerVideoConfig(
        **hf_tracker_kwargs(config), memory_attention_hidden_size=128, memory_encoder_hidden_size=128,
        memory_attention_num_layers=config.tracker.memory_attention_layers,
        memory_attention_feed_forward_hidden_size=config.tracker.memory_attention_mlp_dim,
        mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=512,
        image_size=config.vit.image_size,
    )
    torch.manual_seed(3)
    image = with_tied_fourier_matrix(perturbed(Sam3TrackerModel(Sam3TrackerConfig(**hf_tracker_kwargs(config))), 4))
    video = with_tied_fourier_matrix(perturbed(Sam3TrackerVideoModel(video_config), seed=5))
    pairs = [(hf, through_saved_file(hf, tmp_path_factory.mktemp(name), config))
             for name, hf in (("image", image), ("video", video))]
    return pairs, config


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tracker_with_default_eps_matches_transformers(tracker_pairs, dtype):
    ((hf_image, ours_image), (hf_video, ours_video)), config = tracker_pairs
    assert hf_image.config.prompt_encoder_config.layer_norm_eps == 1e-6
    features = [f.to(dtype) for f in neck_features(config, batch=2, seed=6)]
    chosen = {k: v.to(dtype) if v.is_floating_point() else v for k, v in prompts(config, batch=2, seed=7).items()}
    g = config.vit.grid_size
    generator = torch.Generator().manual_seed(8)
    pix_feat = torch.randn(2, 128, g, g, generator=generator, dtype=dtype)
    masks = 10 * torch.randn(2, 1, 16 * g, 16 * g, generator=generator, dtype=dtype)
    models = (hf_image, ours_image, hf_video, ours_video)
    try:
        with torch.no_grad():
            for model in models:
                model.to(dtype)
            reference = run_hf(hf_image, features, chosen["points"], chosen["labels"], chosen["boxes"],
                               chosen["mask"])
            got = ours_image.predict_masks(features, chosen["points"], chosen["labels"], chosen["boxes"],
                                           chosen["mask"])
            reference_memory = hf_video.memory_encoder(pix_feat, masks)
            got_memory = ours_video.maskmem_backbone(pix_feat, masks)
    finally:
        for model in models:
            model.float()
    for name, mine, theirs in zip(("masks", "iou", "object score", "memory", "memory pos"),
                                  (*got, *got_memory), (*reference, *reference_memory)):
        assert mine.dtype == dtype
        assert relative_error(mine, theirs) <= TOLERANCES[dtype], name
