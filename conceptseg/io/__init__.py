"""One home per file format: images, COCO RLE masks, COCO results and datasets, SA-Co image and VEval video
ground truth. Numpy and pycocotools only: nothing here imports torch or the model."""
