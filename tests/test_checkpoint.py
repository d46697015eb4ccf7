"""Checkpoint formats: official sam3.pt layout, Hugging Face layout, our own format; strict, safe loading."""

import json

import pytest
import torch
from hf_reference import hf_model_for, randomize_
from safetensors.torch import load_file, save_file

from conceptseg import SAM3, load_model, save_model, tiny_config, tokenize
from conceptseg.checkpoint.loading import read_safetensors
from conceptseg.checkpoint.official import OFFICIAL_PREFIXES, ours_to_official


@pytest.fixture(scope="module")
def tiny_model():
    return randomize_(SAM3(tiny_config()), seed=3).eval()


@pytest.fixture(scope="module")
def inputs():
    images = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    return images, tokenize(["striped star"]), torch.tensor([[[0.4, 0.5, 0.3, 0.2]]])


def outputs_equal(a: SAM3, b: SAM3, inputs) -> bool:
    images, ids, boxes = inputs
    with torch.no_grad():
        out_a, out_b = a.detect(images, ids, boxes=boxes), b.detect(images, ids, boxes=boxes)
    return all(torch.equal(out_a[k], out_b[k]) for k in ("pred_logits", "pred_boxes", "pred_masks", "semantic_seg"))


def test_official_layout_round_trip_equals_hf_layout_load(tmp_path, inputs):
    """Weights converted to the official sam3.pt layout load and give the same outputs as the HF-format load."""
    hf = hf_model_for(tiny_config(), seed=5)
    hf.save_pretrained(tmp_path / "hf")
    from_hf = load_model(tmp_path / "hf")
    official = ours_to_official(from_hf)
    assert any(k.endswith("attn.freqs_cis") and v.is_complex() for k, v in official.items())
    assert all(k.startswith(("detector.", "tracker.")) for k in official)
    torch.save({"model": official}, tmp_path / "sam3.pt")
    from_official = load_model(tmp_path / "sam3.pt", config=from_hf.config)
    assert outputs_equal(from_hf, from_official, inputs)


def test_official_layout_key_names_match_the_reference_for_the_released_dims():
    """Spot-check official key names and shapes (sam3-architecture.md Appendix A) at full size, on meta."""
    with torch.device("meta"):
        model = SAM3(__import__("conceptseg").SAM3Config())
    official = {k: v.shape for k, v in ours_to_official(model).items()}
    expected = {
        "detector.backbone.vision_backbone.trunk.pos_embed": (1, 577, 1024),
        "detector.backbone.vision_backbone.trunk.blocks.7.attn.freqs_cis": (5184, 32),
        "detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis": (576, 32),
        "detector.backbone.vision_backbone.trunk.blocks.31.attn.qkv.weight": (3072, 1024),
        "detector.backbone.vision_backbone.convs.1.dconv_2x2.weight": (1024, 512, 2, 2),
        "detector.backbone.vision_backbone.sam2_convs.0.dconv_2x2_1.weight": (512, 256, 2, 2),
        "detector.backbone.vision_backbone.convs.3.conv_1x1.weight": (256, 1024, 1, 1),
        "detector.backbone.language_backbone.encoder.text_projection": (1024, 512),
        "detector.backbone.language_backbone.encoder.transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        "detector.backbone.language_backbone.resizer.weight": (256, 1024),
        "detector.geometry_encoder.boxes_pos_enc_project.weight": (256, 258),
        "detector.geometry_encoder.encode.2.cross_attn_image.in_proj_weight": (768, 256),
        "detector.transformer.encoder.layers.5.norm3.weight": (256,),
        "detector.transformer.decoder.layers.5.ca_text.in_proj_weight": (768, 256),
        "detector.transformer.decoder.boxRPB_embed_x.layers.1.weight": (8, 256),
        "detector.transformer.decoder.reference_points.weight": (200, 4),
        "detector.segmentation_head.pixel_decoder.conv_layers.2.weight": (256, 256, 3, 3),
        "detector.segmentation_head.mask_predictor.mask_embed.layers.2.weight": (256, 256),
        "detector.dot_prod_scoring.prompt_mlp.out_norm.weight": (256,),
    }
    for key, shape in expected.items():
        assert tuple(official[key]) == shape, key
    detector_params = sum(v.numel() for k, v in model.state_dict().items() if not k.startswith("tracker."))
    assert detector_params == 848_311_862  # the official `detector.*` count


def test_own_format_round_trip_restores_config_and_outputs(tmp_path, tiny_model, inputs):
    save_model(tiny_model, tmp_path / "mine")
    meta = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert meta["format"] == "conceptseg" and meta["config"]["d_model"] == 32
    loaded = load_model(tmp_path / "mine")
    assert loaded.config == tiny_model.config
    assert outputs_equal(tiny_model, loaded, inputs)


def test_bfloat16_load_runs(tmp_path, tiny_model, inputs):
    save_model(tiny_model, tmp_path / "mine")
    model = load_model(tmp_path / "mine", dtype=torch.bfloat16)
    images, ids, boxes = inputs
    with torch.no_grad():
        out = model.detect(images, ids, boxes=boxes)
        reference = tiny_model.detect(images, ids, boxes=boxes)
    assert out["pred_masks"].dtype == torch.bfloat16
    assert torch.isfinite(out["pred_logits"].float()).all()
    assert (out["pred_boxes"].float() - reference["pred_boxes"]).abs().max() < 0.05


def test_unexpected_and_missing_keys_are_errors(tmp_path, tiny_model):
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_model(tiny_model, tmp_path / "extra")
    save_file({**state, "detector.bogus.weight": torch.zeros(1)}, str(tmp_path / "extra" / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected keys detector.bogus.weight"):
        load_model(tmp_path / "extra")
    state.pop("detector.decoder.query_embed.weight")
    save_model(tiny_model, tmp_path / "missing")
    save_file(state, str(tmp_path / "missing" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing keys detector.decoder.query_embed.weight"):
        load_model(tmp_path / "missing")


def test_wrong_dims_name_the_mismatch(tmp_path, tiny_model):
    official = ours_to_official(tiny_model)
    torch.save(official, tmp_path / "sam3.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_model(tmp_path / "sam3.pt")  # the released dims, not the tiny ones


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_unreadable_files_give_clear_errors(tmp_path, content):
    path = tmp_path / "sam3.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="weights-only PyTorch checkpoint"):
        load_model(path)


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}, "evil": print}, tmp_path / "sam3.pt")
    with pytest.raises(ValueError, match="weights-only"):
        load_model(tmp_path / "sam3.pt")


def test_missing_paths_and_offline_hub_ids_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path / "nothing" / "here.pt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="could not download 'someone/no-such-model'"):
        load_model("someone/no-such-model")


def test_official_prefix_table_covers_every_key(tiny_model):
    for key in tiny_model.state_dict():
        assert any(key.startswith(ours) for _, ours in OFFICIAL_PREFIXES), key


def test_hub_layout_with_video_config_loads_detector_and_tracker(tmp_path, inputs):
    """A `facebook/sam3`-style directory: Sam3VideoModel keys (detector_model.*, tracker_model.*,
    tracker_neck.*) and its video config; dims (tracker included) come from the config."""
    import dataclasses

    from hf_reference import hf_config_for, hf_tracker_kwargs
    from transformers import Sam3TrackerVideoConfig, Sam3VideoConfig, Sam3VideoModel

    config = dataclasses.replace(tiny_config(), d_model=128)  # HF's video tracker needs > 64 channels
    tracker = Sam3TrackerVideoConfig(
        **hf_tracker_kwargs(config), memory_attention_hidden_size=128,
        memory_attention_num_layers=config.tracker.memory_attention_layers,
        memory_attention_feed_forward_hidden_size=config.tracker.memory_attention_mlp_dim,
        memory_encoder_hidden_size=128, mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=512, image_size=config.vit.image_size,
    )
    hf = Sam3VideoModel(Sam3VideoConfig(detector_config=hf_config_for(config).to_dict(),
                                         tracker_config=tracker.to_dict()))
    randomize_(hf, seed=9).save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.d_model == 128 and model.config.tracker == config.tracker
    assert model.missing_components == ("detector_points",)
    images, ids, boxes = inputs
    with torch.no_grad():
        ours = model.detect(images, ids, boxes=boxes)
        theirs = hf.detector_model(pixel_values=images, input_ids=ids, attention_mask=(ids != 0).long(),
                                   input_boxes=boxes, input_boxes_labels=torch.ones(1, 1, dtype=torch.long))
    torch.testing.assert_close(ours["pred_logits"], theirs.pred_logits, rtol=1e-4, atol=1e-4)
    hf_neck = hf.tracker_neck.fpn_layers[0].proj2.weight
    assert torch.equal(model.backbone.tracker_neck.levels[0].conv_3x3.weight, hf_neck)
    assert torch.equal(model.tracker.no_mem_embed.flatten(), hf.tracker_model.no_memory_embedding.flatten())


def test_half_precision_storage_without_missing_components(tmp_path, tiny_model, inputs):
    tiny_model.missing_components = ("tracker",)
    try:
        save_model(tiny_model, tmp_path / "half", dtype=torch.float16)
    finally:
        tiny_model.missing_components = ()
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "half" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values())
    assert not any(k.startswith(("tracker.", "backbone.tracker_neck.")) for k in stored)
    loaded = load_model(tmp_path / "half")
    assert loaded.missing_components == ("tracker",) and loaded.dtype == torch.float32
    images, ids, boxes = inputs
    with torch.no_grad():
        a, b = tiny_model.detect(images, ids, boxes=boxes), loaded.detect(images, ids, boxes=boxes)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], rtol=1e-2, atol=1e-2)


def test_read_safetensors_matches_the_library_for_every_dtype(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=generator),
        "f16": torch.randn(7, generator=generator).half(),
        "bf16": torch.randn(2, 2, 2, generator=generator).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }
    path = tmp_path / "weights.safetensors"
    save_file(tensors, str(path), metadata={"format": "test"})
    ours, reference = read_safetensors(path), load_file(str(path))
    assert ours.keys() == reference.keys()
    for name, tensor in reference.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert torch.equal(ours[name], tensor), name

    path.write_bytes(path.read_bytes()[:-8])  # cut into the last tensor
    with pytest.raises(ValueError, match="truncated"):
        read_safetensors(path)
