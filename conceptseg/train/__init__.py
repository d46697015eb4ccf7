"""Training and fine-tuning of the concept detector (`SAM3.detect`); the `conceptseg train` command.

    source = ConceptWorldSource(ConceptWorld(size=128, seed=0))          # or DatasetSource(SacoDataset(gt, images))
    Trainer(model, source, TrainConfig(steps=3000), "runs/embedded").run()

Modules: `matcher` (Hungarian matching), `losses` (SAM 3's set losses), `data` (examples, prompt sampling,
batching), `saco` (SA-Co / COCO datasets), `trainer` (optimisation loop, EMA, checkpoints), `evaluation`
(cgF1 during training), `cli`.
"""

from conceptseg.train.data import ConceptWorldSource, DatasetSource, Example, PromptSampling
from conceptseg.train.evaluation import evaluate_model
from conceptseg.train.losses import LossWeights, SetCriterion
from conceptseg.train.matcher import MatcherCosts, hungarian_match
from conceptseg.train.saco import SacoDataset
from conceptseg.train.trainer import TrainConfig, Trainer, initialize_from_scratch

__all__ = [
    "ConceptWorldSource", "DatasetSource", "Example", "LossWeights", "MatcherCosts", "PromptSampling", "SacoDataset",
    "SetCriterion", "TrainConfig", "Trainer", "evaluate_model", "hungarian_match", "initialize_from_scratch",
]
