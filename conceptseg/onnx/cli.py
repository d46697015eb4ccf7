"""`conceptseg export`: write a model in another runtime's format (ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export", help="export a model as ONNX graphs (image encoder; text prompt -> detections)",
        description="Export the image encoder and the text prompt -> detections part as ONNX graphs, with dynamic "
                    "image and phrase batches. Run them with conceptseg.onnx.OnnxPredictor (ONNX Runtime). "
                    "Needs the onnx extra: pip install 'conceptseg[onnx]'.")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="output format (default onnx)")
    export.add_argument("--model", default=None, help="checkpoint path or hub id (default: the embedded model)")
    export.add_argument("--out", type=Path, required=True, help="output directory")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from conceptseg.checkpoint import checkpoint_identity, load_model
    from conceptseg.onnx.export import export_onnx

    model = load_model(args.model)
    print(f"exporting {args.model or 'the embedded model'} to {args.out} (ONNX) ...", flush=True)
    paths = export_onnx(model, args.out, checkpoint=checkpoint_identity(args.model))
    for name, path in paths.items():
        size = sum(file.stat().st_size for file in (path, path.with_name(path.name + ".data")) if file.exists())
        print(f"  {name}: {path} ({size / 2**20:.1f} MiB)")
    print(f"run it: from conceptseg.onnx import OnnxPredictor; OnnxPredictor({str(args.out)!r})")
    return 0
