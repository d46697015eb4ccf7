"""One home per file format: images, video frames and overlay videos, COCO RLE masks, COCO results and datasets,
SA-Co image and VEval video ground truth, YT-VIS results, atomic writes. NumPy, PIL, pycocotools and (for video,
optional) PyAV: nothing here imports torch or the model."""
