"""Score recalibration folds a query-logit scale and a presence shift into the weights, and nothing else; it may
also set the model's mask threshold."""

import dataclasses

import pytest
import torch

from conceptseg import SAM3, tiny_config, tokenize
from conceptseg.data import export_saco_image_benchmark
from conceptseg.eval.model_eval import evaluate_model
from conceptseg.train.calibration import calibrate, recalibrated


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SAM3(dataclasses.replace(tiny_config(), two_stage_queries=True)).eval()


def test_recalibrated_scales_query_logits_and_shifts_presence_only(model):
    images, ids = torch.randn(2, 3, 112, 112), tokenize(["red star", "ring"])
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        out = model.detect(images, ids)
        new = recalibrated(model, 3.0, 1.5).detect(images, ids)
    clamp = model.config.scorer_clamp
    torch.testing.assert_close(new["pred_logits"], (3 * out["pred_logits"]).clamp(-clamp, clamp), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(new["presence_logits"], out["presence_logits"] + 1.5, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new["pred_boxes"], out["pred_boxes"])  # same two-stage ranking, same queries
    torch.testing.assert_close(new["pred_masks"], out["pred_masks"])
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # a copy
    assert recalibrated(model, 3.0, 1.5, 0.3).mask_threshold == 0.3
    assert model.mask_threshold == 0.5
    with pytest.raises(ValueError, match="positive"):
        recalibrated(model, 0.0, 0.0)
    with pytest.raises(ValueError, match="mask_threshold"):
        recalibrated(model, 1.0, 0.0, 1.0)


def test_calibrate_reports_every_grid_point_and_returns_the_best(model, tmp_path):
    gt = export_saco_image_benchmark(tmp_path, 4, seed=3, split="train", size=112)
    seen = {}
    best = calibrate(model, gt, gt.parent / "images", (1.0, 4.0), (0.0, 3.0), (0.5, 0.2),
                     report=lambda scale, shift, threshold, metrics: seen.__setitem__((scale, shift, threshold),
                                                                                      metrics["cgF1"]))
    scores = {(1.0, 0.0, 0.5), (1.0, 3.0, 0.5), (4.0, 0.0, 0.5), (4.0, 3.0, 0.5)}
    # Scores first, at the model's own mask threshold; then the other thresholds at the best scores only.
    assert set(seen) == scores | {(best.query_scale, best.presence_shift, 0.2)}
    assert max(seen[point] for point in scores) == seen[best.query_scale, best.presence_shift, 0.5]
    assert best.cgf1 == max(seen.values()) == seen[best.query_scale, best.presence_shift, best.mask_threshold]
    with pytest.raises(ValueError, match=">= 1"):
        calibrate(model, gt, gt.parent / "images", (0.5,), (0.0,))


def test_calibrate_rescoring_matches_running_the_recalibrated_model(model, tmp_path):
    gt = export_saco_image_benchmark(tmp_path, 6, seed=4, split="train", size=112)
    # The random tiny model's scores stay below 0.5 unless shifted; at this point every image gets detections.
    seen = {}
    model.train()
    calibrate(model, gt, gt.parent / "images", (8.0,), (6.0,), (0.3,),
              report=lambda scale, shift, threshold, metrics: seen.__setitem__((scale, shift, threshold), metrics))
    assert model.training  # the mode the caller left it in
    model.eval()
    for mask_threshold in (0.5, 0.3):
        rerun = evaluate_model(recalibrated(model, 8.0, 6.0, mask_threshold), gt, gt.parent / "images")
        assert rerun["IL_recall"] == pytest.approx(1.0)
        assert seen[8.0, 6.0, mask_threshold] == pytest.approx(rerun)
