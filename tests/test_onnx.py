"""ONNX export and the ONNX Runtime predictor: graphs within 1e-3 of PyTorch, dynamic batches, same Results."""

import json

import numpy as np
import onnxruntime
import pytest
import torch
from hf_reference import randomize_

from conceptseg import SAM3, ImagePredictor, load_model, tiny_config, tokenize
from conceptseg.cli import main
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.onnx import OnnxPredictor, export_onnx
from conceptseg.onnx.export import DETECTOR_OUTPUTS, DetectorGraph, ImageEncoderGraph


def relative_error(actual: np.ndarray, expected: torch.Tensor) -> float:
    expected = expected.numpy()
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = randomize_(SAM3(tiny_config()), seed=11).eval()
    out = tmp_path_factory.mktemp("tiny-onnx")
    export_onnx(model, out)
    return model, out


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded-onnx")
    assert main(["export", "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_tiny_random_graphs_match_pytorch_with_dynamic_batches(tiny):
    model, out = tiny
    images = onnxruntime.InferenceSession(str(out / "image_encoder.onnx"))
    detector = onnxruntime.InferenceSession(str(out / "detector.onnx"))
    size = model.config.vit.image_size
    pixel_values = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        expected_levels = ImageEncoderGraph(model)(pixel_values)
    levels = images.run(None, {"pixel_values": pixel_values.numpy()})  # 3 images: exported with 2
    for actual, expected in zip(levels, expected_levels):
        assert actual.shape == tuple(expected.shape)
        assert relative_error(actual, expected) < 1e-3
    for phrases in (["dog"], ["red circle", "a cat", "blue", "yellow school bus", "x"]):
        input_ids = tokenize(phrases)
        one_image = [level[1:2] for level in levels]
        with torch.no_grad():
            expected = DetectorGraph(model)(*(torch.from_numpy(level) for level in one_image), input_ids)
        actual = detector.run(None, {"level0": one_image[0], "level1": one_image[1], "level2": one_image[2],
                                     "input_ids": input_ids.numpy()})
        for name, a, e in zip(DETECTOR_OUTPUTS, actual, expected):
            assert a.shape == tuple(e.shape), name
            assert relative_error(a, e) < 1e-3, name


def test_the_detector_graph_is_what_detect_returns(tiny):
    model, _ = tiny
    size = model.config.vit.image_size
    pixel_values = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(4)) * 2 - 1
    input_ids = tokenize(["red circle", "triangle"])
    with torch.no_grad():
        graph = DetectorGraph(model)(*ImageEncoderGraph(model)(pixel_values), input_ids)
        reference = model.detect(pixel_values, input_ids)
    for name, tensor in zip(DETECTOR_OUTPUTS, graph):
        torch.testing.assert_close(tensor, reference[name], rtol=1e-5, atol=1e-5)


def test_embedded_onnx_predictor_gives_the_pytorch_results(embedded):
    manifest = json.loads((embedded / "conceptseg-onnx.json").read_text())
    assert manifest["checkpoint"]["name"] == "embedded" and manifest["image_size"] == 128
    assert manifest["grid_size"] == 16
    # two phrases per run of the detector graph: the three phrases take two runs, joined back in order
    reference, runner = ImagePredictor(load_model()), OnnxPredictor(embedded, threads=2, phrases_per_run=2)
    assert runner.mask_threshold == reference.mask_threshold
    found = 0
    for index in range(6):
        sample = ConceptWorld(size=224, split="test", seed=8).sample(index)
        reference.set_image(sample.image)
        runner.set_image(sample.image)
        phrases = [sample.phrase, "circle", "green triangle"]
        for expected, actual in zip(reference.predict_many(phrases), runner.predict_many(phrases)):
            assert actual.prompt == expected.prompt
            assert len(actual) == len(expected)
            np.testing.assert_allclose(actual.scores, expected.scores, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(actual.boxes, expected.boxes, rtol=1e-3, atol=1e-2)
            if len(expected):  # masks: equal but for pixels whose probability sits at the threshold
                assert (actual.masks != expected.masks).mean() <= 1e-3
            found += len(expected)
    assert found >= 6  # the comparison saw real detections


def test_refusals(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(FileNotFoundError, match="conceptseg-onnx.json"):
        OnnxPredictor(tmp_path)
    with pytest.raises(ValueError, match="float32"):
        export_onnx(SAM3(tiny_config()).half(), tmp_path / "half")
    runner = OnnxPredictor(tiny[1])
    with pytest.raises(ValueError, match="no image set"):
        runner.predict("dog")
