"""The tracker's state dict equals the official `tracker.*` keys and shapes (sam3-architecture.md, App. A)."""

import re
from pathlib import Path

import pytest

from conceptseg.model.configs import SAM3Config, config_from_dict, config_to_dict, tiny_config
from conceptseg.model.tracker.tracker import Tracker

# CI clones the repo with the project's shared/ folder beside it
ARCHITECTURE_DOC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "sam3-architecture.md"


def official_tracker_keys(doc: Path) -> dict[str, tuple[int, ...]]:
    """Expand Appendix A lines such as `tracker.a.N.b: (4,) x2` or `(4,) [N=0,1]; (8,) [N=3]` (nested indices
    like `N=0.1` fill several N in order) into {key without `tracker.`: shape}."""
    expected = {}
    for line in doc.read_text().splitlines():
        line = line.strip()
        if not line.startswith("tracker."):
            continue
        name, spec = line.removeprefix("tracker.").split(": ", 1)
        for part in spec.split("; "):
            shape = tuple(int(n) for n in re.search(r"\(([\d,]*)\)", part).group(1).split(",") if n)
            if count := re.search(r"×(\d+)", part):
                indices = [str(i) for i in range(int(count.group(1)))]
            elif listed := re.search(r"\[N=([\d.,]+)\]", part):
                indices = listed.group(1).split(",")
            else:
                indices = [None]
            for index in indices:
                key = name
                for number in index.split(".") if index is not None else []:
                    key = re.sub(r"(?<=\.)N(?=\.)", number, key, count=1)
                expected[key] = shape
    return expected


def test_state_dict_equals_official_tracker_keys():
    expected = official_tracker_keys(ARCHITECTURE_DOC)
    assert len(expected) > 300  # the parser really read the appendix
    ours = {k: tuple(v.shape) for k, v in Tracker(SAM3Config()).state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: s for k, s in ours.items() if s != expected[k]} == {}


def test_parameter_count_matches_release():
    tracker = Tracker(SAM3Config())
    assert sum(p.numel() for p in tracker.parameters()) == 11_743_362
    assert [name for name, _ in tracker.named_buffers()] == [
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    ]


def test_saved_configs_load_and_typos_are_errors():
    saved = config_to_dict(tiny_config())
    assert config_from_dict(saved) == tiny_config()
    saved["tracker"]["max_obj_ptrs_in_encodr"] = 16
    with pytest.raises(ValueError, match="max_obj_ptrs_in_encodr"):
        config_from_dict(saved)
