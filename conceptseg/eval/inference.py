"""Run an image predictor over the (image, phrase) pairs of SA-Co GT, resumably, to produce COCO results.

Results are appended to a JSONL file, one line {"image_id": ..., "predictions": [...]} per finished pair,
so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

from tqdm import tqdm

from conceptseg.io.records import PathLike
from conceptseg.io.saco_image import ImagePair

# The official pipeline dumps predictions with score > 0.3; cgF1 then applies its own 0.5 gate.
DUMP_THRESHOLD = 0.3


class ImagePredictorLike(Protocol):
    def set_image(self, image: Any) -> None: ...

    def predict(self, text: str, threshold: float) -> Any: ...  # returns an object with .to_coco(image_id)


def run_image_inference(
    predictor: ImagePredictorLike,
    pairs: Sequence[ImagePair],
    image_dir: PathLike,
    partial_path: PathLike,
    dump_threshold: float = DUMP_THRESHOLD,
    progress: bool = True,
) -> list[dict]:
    """Predict every pair and return all COCO results with score > dump_threshold.

    Pairs already in `partial_path` are skipped; pairs on the same image are run back to back so that each
    image is encoded once.
    """
    wanted = {pair.id for pair in pairs}
    done = _load_partial(partial_path, wanted)
    todo = sorted((pair for pair in pairs if pair.id not in done), key=lambda pair: pair.file_name)
    missing = sorted({p.file_name for p in todo if not os.path.isfile(os.path.join(image_dir, p.file_name))})
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) not found under {image_dir}, e.g. {missing[0]!r}")
    current_image = None
    with open(partial_path, "a") as sink, tqdm(total=len(pairs), initial=len(done), disable=not progress) as bar:
        for pair in todo:
            if pair.file_name != current_image:
                predictor.set_image(os.path.join(image_dir, pair.file_name))
                current_image = pair.file_name
            # the predictor's own threshold saves encoding masks that would be dropped; the official dump
            # rule is strict (score > 0.3), so filter again
            results = predictor.predict(text=pair.text_input, threshold=dump_threshold).to_coco(pair.id)
            kept = [result for result in results if result["score"] > dump_threshold]
            sink.write(json.dumps({"image_id": pair.id, "predictions": kept}, separators=(",", ":")) + "\n")
            sink.flush()
            done[pair.id] = kept
            bar.update()
    return [result for pair in pairs for result in done[pair.id]]


def _load_partial(path: PathLike, wanted: set[int]) -> dict[int, list[dict]]:
    """Finished pairs of an earlier run; a last line cut short by a crash is dropped from the file."""
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        text = handle.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        with open(path, "w") as handle:
            handle.write(text)
    done = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
            image_id, predictions = record["image_id"], record["predictions"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a line written by a previous run ({error}); delete the file") from error
        if image_id not in wanted:
            raise ValueError(
                f"{path}:{number}: image_id {image_id} is not a pair of this ground truth; the partial file "
                "belongs to another run, delete it or choose another --pred path"
            )
        done[image_id] = predictions
    return done
