"""Training and fine-tuning of the concept detector (`SAM3.detect`); the `conceptseg train` command.

    source = ConceptWorldSource(ConceptWorld(size=128, seed=0))          # or DatasetSource(SacoDataset(gt, images))
    Trainer(model, source, TrainConfig(steps=3000), "runs/embedded").run()

Modules: `matcher` (Hungarian matching), `targets` (a batch's ground truth), `losses` (SAM 3's set losses, a
table), `data` (training sources, prompt sampling, batching), `trainer` (optimisation loop, EMA, checkpoints),
`alignment` (region-phrase pre-training), `calibration` (score and mask-threshold calibration), `cli`. Datasets
read from SA-Co / COCO files and batched evaluation live in `conceptseg.eval` (`dataset`, `model_eval`).
"""

from conceptseg.train.data import ConceptWorldSource, DatasetSource, PromptSampling
from conceptseg.train.losses import LossWeights, SetCriterion
from conceptseg.train.matcher import MatcherCosts, hungarian_match
from conceptseg.train.trainer import TrainConfig, Trainer, initialize_from_scratch

__all__ = [
    "ConceptWorldSource", "DatasetSource", "LossWeights", "MatcherCosts", "PromptSampling", "SetCriterion",
    "TrainConfig", "Trainer", "hungarian_match", "initialize_from_scratch",
]
