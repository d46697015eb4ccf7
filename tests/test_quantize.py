"""`load_model(..., quantize="int8")`: which layers become int8, outputs close to fp32, clear refusals."""

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from conceptseg import SAM3, ImagePredictor, load_model, save_model, tiny_config, tokenize
from conceptseg.cli import main
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.model.quantize import int8_layers


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(SAM3(tiny_config()), tmp_path_factory.mktemp("tiny"))


def test_the_large_linear_layers_become_int8_and_the_rest_stays_fp32(model_dir):
    model = load_model(model_dir, quantize="int8")
    chosen = int8_layers(load_model(model_dir))
    assert any(name.startswith("backbone.trunk.") for name in chosen)
    assert any(name.startswith("detector.fusion_encoder.") for name in chosen)
    for name, module in model.named_modules():
        if name in chosen:
            assert isinstance(module, torch.ao.nn.quantized.dynamic.Linear), name
        elif type(module) is nn.Linear:  # heads, tracker, geometry encoder
            assert not name.startswith("backbone.trunk."), name
    assert type(model.get_submodule("detector.decoder.bbox_embed.layers.0")) is nn.Linear
    assert type(model.get_submodule("backbone.neck.levels.0.conv_1x1")) is nn.Conv2d
    # attention's own projections stay fp32, in the text encoder too
    assert type(model.get_submodule("detector.text_encoder.encoder.transformer.resblocks.0.attn.out_proj")) is nn.Linear


def test_int8_outputs_stay_close_to_fp32(model_dir):
    fp32, int8 = load_model(model_dir), load_model(model_dir, quantize="int8")
    size = fp32.config.vit.image_size
    pixels = torch.rand(1, 3, size, size) * 2 - 1
    ids = tokenize(["red circle"])
    with torch.inference_mode():
        reference, quantized = fp32.detect(pixels, ids), int8.detect(pixels, ids)
        features = fp32.encode_image(pixels).levels[-1], int8.encode_image(pixels).levels[-1]
    relative = (features[0] - features[1]).norm() / features[0].norm()
    assert 0 < relative < 0.05  # quantized (not equal), but close
    assert torch.allclose(reference["pred_boxes"], quantized["pred_boxes"], atol=0.05)


def test_the_embedded_model_finds_the_same_instances_in_int8():
    fp32, int8 = ImagePredictor(load_model()), ImagePredictor(load_model(quantize="int8"))
    found = matched = 0
    for index in range(16):
        sample = ConceptWorld(size=224, split="test", seed=8).sample(index)
        fp32.set_image(sample.image)
        int8.set_image(sample.image)
        reference, quantized = fp32.predict(text=sample.phrase), int8.predict(text=sample.phrase)
        found += len(reference)
        for mask in reference.masks:
            ious = [np.logical_and(mask, other).sum() / np.logical_or(mask, other).sum() for other in quantized.masks]
            matched += bool(ious) and max(ious) > 0.9
    assert found >= 8 and matched >= found - 1


def test_refusals(model_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_model(model_dir, quantize="int4")
    with pytest.raises(ValueError, match="float32"):
        load_model(model_dir, dtype=torch.float16, quantize="int8")
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["predict", str(tmp_path), "--text", "x", "--quantize", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_the_command_line_runs_int8(model_dir, tmp_path):
    image = tmp_path / "scene.png"
    PIL.Image.fromarray(ConceptWorld(size=224, split="test", seed=8).sample(0).image).save(image)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--text", "circle", "--quantize", "int8", "--out", str(out)]) == 0
    assert (out / "predictions.json").exists()
