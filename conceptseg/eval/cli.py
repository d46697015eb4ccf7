"""`conceptseg eval`: score predictions on SA-Co, optionally running a model over the GT pairs first.

    conceptseg eval --gt gold_a.json gold_b.json gold_c.json --pred preds.json --out results.json
    conceptseg eval --gt veval_sav_test.json --pred video_preds.json --video
    conceptseg eval --gt silver_geode.json --images images/ --model sam3.pt
    conceptseg eval --gt veval.json --video --frames frames/ --model M   # track every (video, phrase) pair first
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from conceptseg.cli import UsageError
from conceptseg.eval import evaluate
from conceptseg.eval.image_eval import evaluated_pair_ids
from conceptseg.eval.inference import run_image_inference
from conceptseg.io.atomic import write_json_atomic
from conceptseg.io.saco_image import read_image_gt
from conceptseg.io.saco_video import read_video_gt

SUMMARY_KEYS = ("cgF1", "IL_MCC", "pmF1", "cgF1@50", "cgF1@75", "IL_recall", "IL_FPR", "num_datapoints",
                "num_positives")
TABLE_ROWS = (
    "cgF1", "cgF1@50", "cgF1@75", "IL_MCC", "pmF1", "positive_macro_F1",
    "IL_precision", "IL_recall", "IL_F1", "IL_FPR", "pHOTA", "pDetA", "pAssA",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score predictions on SA-Co (cgF1, IL_MCC, pmF1; pHOTA for video)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--gt", nargs="+", required=True, metavar="GT.json",
                        help="SA-Co GT file(s); several image files (Gold a/b/c) are scored with the oracle")
    parser.add_argument("--pred", metavar="PRED.json",
                        help="COCO results (YT-VIS results with --video); with --images, where to write them")
    parser.add_argument("--video", action="store_true", help="VEval video GT and YT-VIS results")
    parser.add_argument("--out", metavar="RESULTS.json", help="also write the metrics as JSON")
    parser.add_argument("--images", metavar="DIR", help="run --model on the GT pairs first (images: DIR/file_name)")
    parser.add_argument("--frames", metavar="DIR", help="with --video: run --model on the GT pairs first "
                        "(frames: DIR/file_names of each video)")
    parser.add_argument("--model", metavar="M", help="checkpoint or hub id for conceptseg.load_model")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    if args.video and (args.frames or args.model):
        pred_file = track_gt_pairs(args)
    elif args.images or args.model:
        pred_file = predict_gt_pairs(args)
    elif args.pred:
        pred_file = args.pred
    else:
        raise UsageError("give --pred PRED.json, or --images DIR --model M to predict first")
    results = evaluate(args.gt, pred_file, video=args.video)
    print(format_table(results))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"metrics written to {args.out}")
    return 0


def predict_gt_pairs(args: argparse.Namespace) -> str:
    """Run the model over the evaluated GT pairs (resumable) and write the COCO results; returns their path."""
    if not (args.images and args.model):
        raise UsageError("--images and --model go together")
    if args.video:
        raise UsageError("--images/--model run image inference and cannot be combined with --video")
    if not os.path.isdir(args.images):
        raise UsageError(f"--images {args.images}: not a directory")
    pred_file = args.pred or f"{Path(args.gt[0]).stem}_predictions.json"
    gt_sets = [read_image_gt(path) for path in args.gt]
    pairs = [gt_sets[0][pair_id] for pair_id in evaluated_pair_ids(gt_sets, args.gt)]
    from conceptseg import ImagePredictor, load_model  # imported here: loads torch and the model code

    predictor = ImagePredictor(load_model(args.model))
    results = run_image_inference(predictor, pairs, args.images, f"{pred_file}.partial.jsonl")
    with open(pred_file, "w") as handle:
        json.dump(results, handle)
    print(f"predictions written to {pred_file}")
    return pred_file


def track_gt_pairs(args: argparse.Namespace) -> str:
    """Run the video predictor over every (video, phrase) pair of the VEval GT and write the YT-VIS results;
    returns their path."""
    if not (args.frames and args.model) or len(args.gt) != 1:
        raise UsageError("--video with --frames DIR --model M takes one VEval GT file")
    if not os.path.isdir(args.frames):
        raise UsageError(f"--frames {args.frames}: not a directory")
    pred_file = args.pred or f"{Path(args.gt[0]).stem}_predictions.json"
    pairs = read_video_gt(args.gt[0]).values()
    from conceptseg import load_model  # imported here: loads torch and the model code
    from conceptseg.eval.video_inference import run_video_inference
    from conceptseg.predict.video import VideoPredictor

    results = run_video_inference(VideoPredictor(load_model(args.model)), pairs, args.frames)
    write_json_atomic(pred_file, results)
    print(f"predictions written to {pred_file}")
    return pred_file


def format_rows(results: dict[str, dict[str, float]], label: str = "benchmark") -> str:
    """Several benchmarks' headline metrics (`SUMMARY_KEYS`) as a text table, one row each."""
    width = max(len(label), *map(len, results)) + 2
    lines = [f"{label:{width}s}" + "".join(f"{key:>15s}" for key in SUMMARY_KEYS)]
    for name, metrics in results.items():
        cells = (f"{metrics[k]:15.3f}" if isinstance(metrics[k], float) else f"{metrics[k]:15d}" for k in SUMMARY_KEYS)
        lines.append(f"{name:{width}s}" + "".join(cells))
    return "\n".join(lines)


def format_table(results: dict[str, float]) -> str:
    """The headline metrics as a text table, masks and boxes side by side."""
    lines = [f"{'metric':<20}{'mask':>10}{'box':>10}"]
    for name in TABLE_ROWS:
        if name in results:
            lines.append(f"{name:<20}{_format(name, results[name]):>10}{_format(name, results.get('box_' + name)):>10}")
    lines.append(f"{results['num_datapoints']} datapoints, {results['num_positives']} with ground truth")
    return "\n".join(lines)


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if name.startswith("cgF1") else f"{value:.4f}"
