"""Bad inputs to the model API raise errors that say what to fix; no global side effects at import."""

import subprocess
import sys

import pytest
import torch

from conceptseg import SAM3, tiny_config, tokenize


@pytest.fixture(scope="module")
def model():
    return SAM3(tiny_config()).eval()


@pytest.fixture(scope="module")
def images():
    return torch.zeros(1, 3, 112, 112)


@pytest.mark.parametrize(
    ("pixel_values", "error", "message"),
    [
        (torch.zeros(1, 3, 64, 64), ValueError, r"shape \[B, 3, 112, 112\]"),
        (torch.zeros(3, 112, 112), ValueError, "shape"),
        (torch.zeros(1, 4, 112, 112), ValueError, "shape"),
        (torch.zeros(1, 3, 112, 112, dtype=torch.uint8), TypeError, "preprocess"),
        (torch.zeros(1, 112, 112, 3).numpy(), TypeError, "float tensor"),
    ],
)
def test_bad_images(model, pixel_values, error, message):
    with pytest.raises(error, match=message):
        model.detect(pixel_values, tokenize("cat"))


def test_bad_token_ids(model, images):
    with pytest.raises(TypeError, match="tokenize"):
        model.detect(images, ["cat"])
    with pytest.raises(TypeError, match="LongTensor"):
        model.detect(images, torch.zeros(1, 32))
    with pytest.raises(ValueError, match="vocab|lie in"):
        model.detect(images, torch.full((1, 32), 10**6))


@pytest.mark.parametrize("text", ["", "   ", None, 3, [""], ["ok", 5], []])
def test_bad_texts(text):
    with pytest.raises((ValueError, TypeError)):
        tokenize(text)


@pytest.mark.parametrize(
    ("boxes", "labels", "message"),
    [
        (torch.tensor([[[0.5, 0.5, float("nan"), 0.1]]]), None, "finite"),
        (torch.tensor([[[0.5, 0.5, 1.5, 0.1]]]), None, r"normalised to \[0, 1\]"),
        (torch.tensor([[[-0.1, 0.5, 0.2, 0.1]]]), None, r"\[0, 1\]"),
        (torch.tensor([[[0.5, 0.5, 0.2]]]), None, r"shape \[B, N, 4\]"),
        (torch.tensor([[[0.5, 0.5, 0.2, 0.2]]]), torch.tensor([[2]]), "1 .positive., 0 .negative. or -1"),
        (torch.tensor([[[0.5, 0.5, 0.2, 0.2]]]), torch.tensor([[1, 1]]), "box_labels must have shape"),
        (torch.tensor([[[0.5, 0.5, 0.2, 0.2]]] * 3), None, "does not match the prompt batch"),
    ],
)
def test_bad_boxes(model, images, boxes, labels, message):
    with pytest.raises(ValueError, match=message):
        model.detect(images, tokenize("cat"), boxes=boxes, box_labels=labels)


def test_padding_boxes_may_hold_anything(model, images):
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [float("nan"), 9.0, 9.0, 9.0]]])
    with torch.no_grad():
        out = model.detect(images, tokenize("cat"), boxes=boxes, box_labels=torch.tensor([[1, -1]]))
        alone = model.detect(images, tokenize("cat"), boxes=boxes[:, :1])
    torch.testing.assert_close(out["pred_logits"], alone["pred_logits"], rtol=1e-5, atol=1e-5)


def test_points_prompt_runs(model, images):
    with torch.no_grad():
        out = model.detect(images, tokenize("visual"), points=torch.tensor([[[0.2, 0.3], [0.8, 0.5]]]),
                           point_labels=torch.tensor([[1, 0]]))
    assert out["pred_logits"].shape == (1, 10)


def test_mismatched_batches(model):
    with pytest.raises(ValueError, match="batches must match"):
        model.detect(torch.zeros(2, 3, 112, 112), tokenize(["a", "b", "c"]))


def test_import_has_no_global_side_effects():
    code = (
        "import torch; before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,"
        " torch.get_default_dtype(), torch.is_autocast_enabled('cpu'), torch.get_num_threads());"
        "import conceptseg, conceptseg.cli;"
        "after = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,"
        " torch.get_default_dtype(), torch.is_autocast_enabled('cpu'), torch.get_num_threads());"
        "assert before == after, (before, after)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_two_stage_queries_start_the_decoder_from_the_best_tokens():
    """The embedded model's (non-SAM 3) option: reference boxes come from the top-scoring fused tokens, so the
    learned reference boxes no longer matter."""
    import dataclasses

    model = SAM3(dataclasses.replace(tiny_config(), two_stage_queries=True)).eval()
    images, ids = torch.randn(2, 3, 112, 112), tokenize(["cat", "dog"])
    with torch.no_grad():
        out = model.detect(images, ids)
        model.detector.decoder.reference_points.weight.normal_()
        again = model.detect(images, ids)
    assert out["proposal_logits"].shape == (2, 10) and out["proposal_boxes"].shape == (2, 10, 4)
    assert (out["proposal_logits"][:, :-1] >= out["proposal_logits"][:, 1:]).all()  # best first
    assert torch.equal(out["pred_boxes"], again["pred_boxes"])


def test_conv_stem_embeds_patches_to_the_same_grid_and_has_no_official_layout():
    """The embedded model's (non-SAM 3) convolutional patch stem: same token grid as the linear embedding, trained
    end to end, saved in our format and refused by the official layout."""
    import dataclasses

    from conceptseg.checkpoint.official import ours_to_official
    from conceptseg.model.configs import config_from_dict, config_to_dict

    base = tiny_config(image_size=128)
    config = dataclasses.replace(base, vit=dataclasses.replace(base.vit, patch_size=8, pretrain_grid=8,
                                                               conv_stem=True))
    assert config_from_dict(config_to_dict(config)) == config
    model = SAM3(config)
    images = torch.randn(2, 3, 128, 128)
    stem_tokens = model.backbone.trunk.patch_embed(images)
    linear = SAM3(dataclasses.replace(config, vit=dataclasses.replace(config.vit, conv_stem=False)))
    assert stem_tokens.shape == linear.backbone.trunk.patch_embed(images).shape == (2, 16, 16, 64)
    out = model.detect(images, tokenize(["cat", "dog"]))
    out["pred_logits"].sum().backward()
    assert model.backbone.trunk.patch_embed.layers[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="convolutional patch stem"):
        ours_to_official(model)
    with pytest.raises(ValueError, match="power-of-two"):
        SAM3(dataclasses.replace(tiny_config(), vit=dataclasses.replace(tiny_config().vit, conv_stem=True)))


@pytest.mark.parametrize("two_stage", [False, True])
def test_prompts_in_chunks_give_the_batched_answer(two_stage):
    """`prompt_chunk` changes how many prompts share a fusion/decoder/mask pass, not the result; one image's encoding
    paired with several phrases gives each phrase's own answer."""
    import dataclasses

    torch.manual_seed(0)
    model = SAM3(dataclasses.replace(tiny_config(), two_stage_queries=two_stage)).eval()
    pixels = torch.rand(1, 3, 112, 112) * 2 - 1
    phrases = ["red circle", "blue star", "small green squares"]
    with torch.inference_mode():
        encoding = model.encode_image(pixels)
        batched = model.detect(encoding, tokenize(phrases))
        chunked = model.detect(encoding, tokenize(phrases), prompt_chunk=1)
        alone = [model.detect(encoding, tokenize([phrase])) for phrase in phrases]
    for key in ("pred_logits", "presence_logits", "pred_boxes", "pred_masks", "semantic_seg", "all_boxes"):
        assert torch.allclose(batched[key], chunked[key], atol=1e-5), key
    for index, single in enumerate(alone):
        assert torch.allclose(batched["pred_masks"][index], single["pred_masks"][0], atol=1e-4)
