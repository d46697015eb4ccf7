"""`conceptseg eval` and the resumable inference loop, with a fake predictor standing in for the model."""

import json
import os

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import conceptseg
from conceptseg.cli import main
from conceptseg.eval import evaluate, run_image_inference
from conceptseg.io.rle import encode_mask
from conceptseg.io.saco_image import ImagePair, Instance, write_image_gt

REQUIRED_KEYS = ["cgF1", "IL_MCC", "pmF1", "cgF1@50", "cgF1@75", "positive_macro_F1", "IL_precision", "IL_recall",
                 "IL_F1", "IL_FPR"]


def rect(y: int, x: int, h: int, w: int) -> dict:
    mask = np.zeros((12, 12), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return encode_mask(mask)


# three pairs on two images: "a.jpg" has a positive and a negative phrase
PAIRS = [
    ImagePair(1, "a.jpg", "cat", 12, 12, True, [Instance(rect(0, 0, 4, 4), [0, 0, 4, 4])]),
    ImagePair(2, "a.jpg", "dog", 12, 12, True, []),
    ImagePair(3, "b.jpg", "cat", 12, 12, True, [Instance(rect(5, 5, 3, 6), [5, 5, 6, 3])]),
]


class FakeResults:
    def __init__(self, answers: list[tuple[dict, float]]):
        self.answers = answers

    def to_coco(self, image_id: int) -> list[dict]:
        return [
            {"image_id": image_id, "category_id": 1, "segmentation": mask,
             "bbox": mask_utils.toBbox(mask).tolist(), "score": score}
            for mask, score in self.answers
        ]


class FakePredictor:
    """Answers each (image, phrase) with the GT masks (score 0.9) plus a low-scoring extra mask (0.2)."""

    def __init__(self, model=None, fail_after: int | None = None):
        self.answers = {(p.file_name, p.text_input): [(i.mask, 0.9) for i in p.instances] for p in PAIRS}
        self.fail_after = fail_after
        self.images, self.phrases = [], []

    def set_image(self, image):
        self.images.append(os.path.basename(image))

    def predict(self, text: str, threshold: float) -> FakeResults:
        if self.fail_after is not None and len(self.phrases) == self.fail_after:
            raise RuntimeError("simulated crash")
        self.phrases.append(text)
        return FakeResults(self.answers[(self.images[-1], text)] + [(rect(10, 10, 2, 2), 0.2)])


@pytest.fixture
def gt_file(tmp_path) -> str:
    write_image_gt(tmp_path / "gt.json", PAIRS)
    return str(tmp_path / "gt.json")


@pytest.fixture
def image_dir(tmp_path) -> str:
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images" / name).write_bytes(b"")
    return str(tmp_path / "images")


def test_cli_prints_a_table_and_writes_the_metrics(tmp_path, gt_file, capsys):
    predictions = [{"image_id": 1, "category_id": 1, "segmentation": PAIRS[0].instances[0].mask, "score": 0.7}]
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    out = tmp_path / "results.json"
    assert main(["eval", "--gt", gt_file, "--pred", str(tmp_path / "pred.json"), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(REQUIRED_KEYS + ["box_" + key for key in REQUIRED_KEYS]) <= set(written)
    assert written == evaluate(gt_file, tmp_path / "pred.json")
    table = capsys.readouterr().out
    assert "cgF1" in table and f"{written['cgF1']:.2f}" in table


def test_cli_video_adds_phrase_hota(tmp_path, capsys):
    mask = rect(0, 0, 4, 4)
    gt = {
        "videos": [{"id": 1, "height": 12, "width": 12, "length": 2}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 4, "segmentations": [mask, mask],
                         "bboxes": [[0, 0, 4, 4]] * 2, "iscrowd": 0}],
        "video_np_pairs": [{"video_id": 1, "category_id": 4, "num_masklets": 1},
                           {"video_id": 1, "category_id": 5, "num_masklets": 0}],
    }
    predictions = [{"video_id": 1, "category_id": 4, "score": 0.9, "segmentations": [mask, None]}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    out = tmp_path / "results.json"
    args = ["eval", "--video", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]
    assert main([*args, "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    # the prediction covers 1 of the 2 GT frames: DetA = 1 / (1 + 1), AssA = 1 / (2 + 1 - 1)
    assert written["pDetA"] == pytest.approx(0.5) and written["box_pAssA"] == pytest.approx(0.5)
    assert written["cgF1@50"] == pytest.approx(100, abs=0.05)  # volume IoU 16 / 32 matches at tau = 0.5
    assert "pHOTA" in capsys.readouterr().out


def test_cli_reports_a_bad_record_on_one_line(tmp_path, gt_file, capsys):
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": 42, "segmentation": rect(0, 0, 1, 1), "score": 1}]))
    assert main(["eval", "--gt", gt_file, "--pred", str(tmp_path / "pred.json")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "(image_id=42): image_id is not an image-NP id" in error


@pytest.mark.parametrize("extra", [[], ["--images", "somewhere"], ["--model", "m.pt"]])
def test_cli_needs_predictions_or_images_and_model(gt_file, capsys, extra):
    assert main(["eval", "--gt", gt_file, *extra]) == 2
    assert "error:" in capsys.readouterr().err


def test_inference_encodes_each_image_once_and_keeps_scores_above_0_3(tmp_path, image_dir):
    predictor = FakePredictor()
    results = run_image_inference(predictor, PAIRS, image_dir, tmp_path / "partial.jsonl", progress=False)
    assert predictor.images == ["a.jpg", "b.jpg"]
    assert sorted(predictor.phrases) == ["cat", "cat", "dog"]
    assert [r["image_id"] for r in results] == [1, 3] and all(r["score"] == 0.9 for r in results)
    assert len((tmp_path / "partial.jsonl").read_text().splitlines()) == 3


def test_inference_resumes_after_a_crash(tmp_path, image_dir, gt_file):
    partial = tmp_path / "partial.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_image_inference(FakePredictor(fail_after=2), PAIRS, image_dir, partial, progress=False)
    assert len(partial.read_text().splitlines()) == 2
    with open(partial, "a") as handle:
        handle.write('{"image_id": 3, "predic')  # a line cut short by the crash
    resumed = FakePredictor()
    results = run_image_inference(resumed, PAIRS, image_dir, partial, progress=False)
    assert resumed.phrases == ["cat"] and resumed.images == ["b.jpg"]
    assert evaluate(gt_file, results)["cgF1"] == pytest.approx(100, abs=0.05)
    assert len(partial.read_text().splitlines()) == 3


def test_inference_refuses_a_partial_file_from_another_run(tmp_path, image_dir):
    (tmp_path / "partial.jsonl").write_text('{"image_id": 99, "predictions": []}\n')
    with pytest.raises(ValueError, match="image_id 99 is not a pair of this ground truth"):
        run_image_inference(FakePredictor(), PAIRS, image_dir, tmp_path / "partial.jsonl", progress=False)


def test_inference_reports_missing_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="2 image\\(s\\) not found"):
        run_image_inference(FakePredictor(), PAIRS, tmp_path, tmp_path / "partial.jsonl", progress=False)


def test_cli_runs_the_model_then_scores(tmp_path, gt_file, image_dir, monkeypatch, capsys):
    monkeypatch.setattr(conceptseg, "load_model", lambda source: f"model from {source}", raising=False)
    monkeypatch.setattr(conceptseg, "ImagePredictor", FakePredictor, raising=False)
    pred_file = tmp_path / "preds.json"
    out = tmp_path / "results.json"
    args = ["eval", "--gt", gt_file, "--images", image_dir, "--model", "m.pt", "--pred", str(pred_file)]
    assert main([*args, "--out", str(out)]) == 0
    assert len(json.loads(pred_file.read_text())) == 2
    assert json.loads(out.read_text())["cgF1"] == pytest.approx(100, abs=0.05)
    assert "predictions written to" in capsys.readouterr().out
