"""Run exported graphs in ONNX Runtime and get the same `Results` as `ImagePredictor`.

    from conceptseg.onnx import OnnxPredictor
    predictor = OnnxPredictor("exported/")          # written by `conceptseg export --format onnx --out exported/`
    predictor.set_image("shapes.png")
    results = predictor.predict(text="red circle")

Pre- and post-processing are the PyTorch predictor's own functions, so only the two graphs differ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from conceptseg.io.images import ImageSource, load_image
from conceptseg.model.tokenizer import tokenize
from conceptseg.onnx.export import DETECTOR, DETECTOR_OUTPUTS, FORMAT_VERSION, IMAGE_ENCODER, MANIFEST
from conceptseg.predict.image import LARGE_IMAGE_TOKENS, detections
from conceptseg.predict.prompts import check_phrases
from conceptseg.predict.results import Results
from conceptseg.predict.transforms import preprocess


class OnnxPredictor:
    """Text-prompted concept segmentation with the exported graphs: encode an image once, prompt it many times."""

    def __init__(self, directory: str | Path, threads: int | None = None, providers: Sequence[str] | None = None,
                 phrases_per_run: int | None = None):
        """directory: an export folder; threads: ONNX Runtime's intra-op threads (None: its default);
        providers: ONNX Runtime execution providers (None: CPU); phrases_per_run: phrases per run of the detector
        graph (None: all at once, or one at a time for large images: the exported attention holds its whole
        score matrix, 0.9 GB per phrase at full size)."""
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("the ONNX runner needs onnxruntime: pip install 'conceptseg[onnx]'") from error
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{directory} holds no {MANIFEST}: write it with `conceptseg export --format onnx`")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != "conceptseg-onnx" or self.manifest.get("version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path} is not a conceptseg ONNX export of version {FORMAT_VERSION}")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        self.image_encoder = onnxruntime.InferenceSession(str(directory / IMAGE_ENCODER), options, providers=providers)
        self.detector = onnxruntime.InferenceSession(str(directory / DETECTOR), options, providers=providers)
        self.mask_threshold = float(self.manifest["mask_threshold"])
        if phrases_per_run is None and self.manifest["grid_size"] ** 2 >= LARGE_IMAGE_TOKENS:
            phrases_per_run = 1
        self.phrases_per_run = phrases_per_run
        self._image: np.ndarray | None = None
        self._levels: list[np.ndarray] | None = None

    def set_image(self, image: ImageSource) -> None:
        """Load and encode an image (path, PIL image or HxWx3 uint8 array); the encoding is kept."""
        self._image = load_image(image)
        pixel_values = preprocess(self._image, self.manifest["image_size"]).numpy()
        self._levels = self.image_encoder.run(None, {"pixel_values": pixel_values})

    def predict(self, text: str, threshold: float = 0.5, mask_threshold: float | None = None) -> Results:
        """Every instance of the phrase `text` (see `ImagePredictor.predict`)."""
        return self.predict_many([text], threshold, mask_threshold)[0]

    def predict_many(self, texts: Sequence[str], threshold: float = 0.5,
                     mask_threshold: float | None = None) -> list[Results]:
        """Several phrases on the current image in one run of the detector graph."""
        if self._levels is None or self._image is None:
            raise ValueError("no image set: call set_image(image) first")
        phrases = check_phrases(texts, exemplars=False)
        input_ids = tokenize(phrases, self.manifest["context_length"]).numpy()
        outputs = {name: torch.from_numpy(array)
                   for name, array in run_detector(self.detector, self._levels, input_ids, self.phrases_per_run).items()}
        mask_threshold = self.mask_threshold if mask_threshold is None else mask_threshold
        return [detections(outputs, i, self._image, {"text": text}, threshold, mask_threshold)
                for i, text in enumerate(texts)]


def run_detector(session, levels: Sequence[np.ndarray], input_ids: np.ndarray,
                 phrases_per_run: int | None = None) -> dict[str, np.ndarray]:
    """The detector graph's outputs for one image's neck maps and phrases [P, L], `phrases_per_run` at a time."""
    step = phrases_per_run or len(input_ids)
    feeds = {f"level{i}": level for i, level in enumerate(levels)}
    parts = [session.run(None, feeds | {"input_ids": input_ids[start:start + step]})
             for start in range(0, len(input_ids), step)]
    return {name: np.concatenate(arrays) for name, arrays in zip(DETECTOR_OUTPUTS, zip(*parts))}
