"""The `conceptseg` command line: one sub-command per job (demo, predict, eval, train, ...).

Each sub-command lives next to the code it drives and exposes `register(subparsers)`, which adds its
parser and sets `func` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path of each sub-command's `register` function, in the order shown by --help
SUBCOMMANDS = ("conceptseg.predict.cli", "conceptseg.predict.track_cli", "conceptseg.label.cli", "conceptseg.eval.cli",
               "conceptseg.train.cli", "conceptseg.train.tracker_cli", "conceptseg.serve.cli",
               "conceptseg.onnx.cli")


class UsageError(Exception):
    """A bad argument or input: printed as one line, exit code 2."""


def add_quantize_argument(parser: argparse.ArgumentParser) -> None:
    """`--quantize int8` for the commands that load a model (see conceptseg.model.quantize)."""
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="int8: dynamic int8 quantization of the large Linear layers (CPU; faster at full size, "
                             "outputs close to but not equal to fp32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conceptseg", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError, FileNotFoundError) as error:
        print(f"conceptseg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
