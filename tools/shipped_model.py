"""Write the embedded model that the package shipped at a given commit (read from git history).

    python tools/shipped_model.py COMMIT --out DIR

Fine-tuning recipes start from a shipped model; once a recipe installs its own result, the model it started
from lives on only in git history, and this takes it back out, so that the recipe can be run again.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = "conceptseg/assets/embedded"
FILES = ("config.json", "model.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="a commit of this repository")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model to")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        try:
            content = subprocess.run(["git", "-C", str(REPO), "show", f"{args.commit}:{EMBEDDED}/{name}"],
                                     check=True, capture_output=True).stdout
        except subprocess.CalledProcessError as error:
            raise SystemExit(f"cannot read {EMBEDDED}/{name} at commit {args.commit} from git history "
                             f"(a clone with its history is needed): {error.stderr.decode().strip()}") from None
        (args.out / name).write_bytes(content)
    print(f"the model shipped at {args.commit} written to {args.out}")


if __name__ == "__main__":
    main()
