"""Install a trained run as the package's embedded model (half-precision weights).

    python tools/export_embedded.py runs/NAME/calibrated [--out DIR] [--drop-tracker]

A model whose tracker was trained (`conceptseg train-tracker`) keeps it. Otherwise, or with --drop-tracker,
the tracker's weights are left out and marked missing: interactive segmentation and video tracking then say
clearly that the model cannot do them, instead of returning noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from conceptseg.checkpoint import embedded_model_location, load_model, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a trained model directory (e.g. runs/NAME/model)")
    parser.add_argument("--out", type=Path, default=embedded_model_location(),
                        help="write the exported model here instead of into the package")
    parser.add_argument("--drop-tracker", action="store_true", help="leave the tracker out even if it was trained")
    args = parser.parse_args()
    model = load_model(args.model)
    if args.drop_tracker:
        model.missing_components = tuple(sorted(set(model.missing_components) | {"tracker"}))
    save_model(model, args.out, dtype=torch.float16)
    size = (args.out / "model.safetensors").stat().st_size / 2**20
    print(f"embedded model written to {args.out} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
