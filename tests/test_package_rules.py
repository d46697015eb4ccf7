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


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, relative imports resolved (e.g. conceptseg.model.tracker.common)."""
    package = list(path.relative_to(PACKAGE.parent).parent.parts)  # e.g. conceptseg/model/tracker
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            modules.append(".".join(base + ([node.module] if node.module else [])))
    return modules


def test_model_package_imports_nothing_from_the_rest():
    for path in (PACKAGE / "model").rglob("*.py"):
        for target in imported_modules(path):
            if target.startswith("conceptseg"):
                assert target.startswith("conceptseg.model"), f"{path} imports {target}"


def test_serve_package_reaches_the_model_only_through_predict():
    """serve/ imports predict (and the formats, io); the model package only for type hints."""
    allowed = ("conceptseg.predict", "conceptseg.io", "conceptseg.serve", "conceptseg.cli", "conceptseg.checkpoint")
    for path in (PACKAGE / "serve").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # drop the bodies of `if TYPE_CHECKING:` blocks
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("conceptseg"):
                assert node.module.startswith(allowed), f"{path} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("conceptseg") and not a.name.startswith(allowed) for a in node.names)
    code = "import sys, conceptseg.serve.cli; assert 'fastapi' not in sys.modules"  # `conceptseg --help` needs no extra
    subprocess.run([sys.executable, "-c", code], check=True)


def test_label_command_needs_ray_only_for_the_ray_engine():
    """`conceptseg --help` loads neither Ray nor pyarrow; the local engine runs without Ray."""
    code = "import sys, conceptseg.cli; conceptseg.cli.build_parser(); assert not {'ray', 'pyarrow'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys, conceptseg.label; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_io_package_imports_no_torch_or_model_code():
    """The formats stay usable (and testable) without the model: numpy, PIL and pycocotools only."""
    for path in (PACKAGE / "io").rglob("*.py"):
        for target in imported_modules(path):
            assert not target.startswith("torch"), f"{path} imports {target}"
            if target.startswith("conceptseg"):
                assert target.startswith("conceptseg.io"), f"{path} imports {target}"
    code = "import sys, conceptseg.io.coco, conceptseg.io.images, conceptseg.io.saco_video; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_files_and_functions_stay_small():
    for path in SOURCES:
        lines = path.read_text().splitlines()
        assert len(lines) <= 400, f"{path} has {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path}:{node.lineno} {node.name} has {length} lines"


def test_importing_the_runtime_does_not_load_torchvision():
    code = "import sys, conceptseg, conceptseg.predict.image, conceptseg.checkpoint; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
