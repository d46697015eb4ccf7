"""Project rules that code review would otherwise have to catch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "conceptseg"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_runtime_never_imports_torchvision_or_transformers():
    pattern = re.compile(r"^\s*(import|from)\s+(torchvision|transformers)\b", re.MULTILINE)
    offenders = [str(p) for p in SOURCES if pattern.search(p.read_text())]
    assert not offenders


def test_model_package_has_no_device_or_precision_switches():
    pattern = re.compile(r"cuda|allow_tf32|pin_memory|set_default_dtype|batch_first=False")
    for path in (PACKAGE / "model").rglob("*.py"):
        text = path.read_text()
        assert not pattern.search(text), path
        for call in re.findall(r"autocast\([^)]*\)", text):  # only ever to switch autocast *off* locally
            assert "enabled=False" in call, f"{path}: {call}"


def test_model_package_imports_nothing_from_the_rest():
    for path in (PACKAGE / "model").rglob("*.py"):
        package = list(path.relative_to(PACKAGE.parent).parent.parts)  # e.g. conceptseg/model/tracker
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.startswith("conceptseg"):
                assert target.startswith("conceptseg.model"), f"{path} imports {target}"


def test_files_and_functions_stay_small():
    for path in SOURCES:
        lines = path.read_text().splitlines()
        assert len(lines) <= 600, f"{path} has {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path}:{node.lineno} {node.name} has {length} lines"


def test_importing_the_runtime_does_not_load_torchvision():
    code = "import sys, conceptseg, conceptseg.predict.image, conceptseg.checkpoint; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
