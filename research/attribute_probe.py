"""Does a model see each object attribute, and does it use the word for it? Three measures per attribute.

    python research/attribute_probe.py [--model runs/NAME/model] [--scenes 300] [--seed 777]

On test-split concept-world scenes at the model's input size, for shape, colour, size and fill pattern:
  linear:   a linear classifier of the attribute from each object's region feature (the mean fusion-input token
            under its mask), fitted on 70% of the objects; accuracy on the rest next to the majority-class rate.
            Is the attribute in the image features at all?
  match:    how often an object's region feature is nearest (cosine) to the phrase naming its own value among the
            phrases naming each value ("striped star", "dotted star", "solid star"): the alignment stage's task.
  presence: AUC of the detector's presence logit for those phrases on a scene, where something in the scene
            matches the phrase against where nothing does (up to 3 objects from each of the first 60 scenes).
Results: docs/embedded-model-runs.md, "Patterns".
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from conceptseg import load_model, preprocess, tokenize
from conceptseg.data.synthetic import ConceptWorld, Sample
from conceptseg.data.synthetic_phrases import ATTRIBUTE_VOCABULARIES, Concept, ObjectAttributes
from conceptseg.model.sam3 import SAM3
from conceptseg.train.alignment import encode_regions, phrase_features


def naming(obj: ObjectAttributes, attribute: str, value: str) -> Concept:
    """The phrase naming `obj`'s shape with `attribute` set to `value` (for "shape": just that shape)."""
    return Concept(shape=value) if attribute == "shape" else Concept(shape=obj.shape, **{attribute: value})


def linear_accuracy(features: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Test accuracy of a linear classifier fitted (full batch, Adam) on the first 70% of the rows."""
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    split = int(0.7 * len(features))
    classifier = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(500):
        optimizer.zero_grad()
        F.cross_entropy(classifier(features[:split]), labels[:split]).backward()
        optimizer.step()
    with torch.no_grad():
        return (classifier(features[split:]).argmax(1) == labels[split:]).float().mean().item()


def match_accuracy(model: SAM3, regions: torch.Tensor, objects: list[ObjectAttributes], attribute: str,
                   words: tuple[str, ...]) -> float:
    phrases = [naming(obj, attribute, word).text for obj in objects for word in words]
    text = F.normalize(phrase_features(model, phrases), dim=-1).reshape(len(objects), len(words), -1)
    nearest = torch.einsum("nvc,nc->nv", text, F.normalize(regions, dim=-1)).argmax(1)
    return float(np.mean([words[int(k)] == getattr(obj, attribute) for k, obj in zip(nearest, objects)]))


def presence_auc(model: SAM3, samples: list[Sample], attribute: str, words: tuple[str, ...]) -> float:
    positives, negatives = [], []
    for sample in samples[:60]:
        concepts = [naming(obj, attribute, word) for obj in sample.instances[:3] for word in words]
        # one image encoding for all of the scene's phrases (detect broadcasts an image batch of 1)
        image = model.encode_image(preprocess(sample.image, model.config.vit.image_size))
        logits = model.detect(image, tokenize([c.text for c in concepts]))["presence_logits"][:, 0]
        for concept, logit in zip(concepts, logits.tolist()):
            (positives if any(concept.matches(o) for o in sample.instances) else negatives).append(logit)
    return float((np.array(positives)[:, None] > np.array(negatives)[None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model).float().eval()
    world = ConceptWorld(size=model.config.vit.image_size, split="test", seed=args.seed)
    samples = [s for s in (world.sample(i) for i in range(args.scenes)) if s.instances]
    objects = [obj for sample in samples for obj in sample.instances]
    print(f"{len(objects)} objects in {len(samples)} scenes")
    print(f"{'attribute':<10}{'linear':>8}{'majority':>10}{'match':>8}{'chance':>8}{'presence AUC':>14}")
    all_labels = torch.tensor([obj.indices for obj in objects])  # [objects, attributes]
    with torch.no_grad():
        regions = torch.cat([encode_regions(model, samples[i:i + 32]) for i in range(0, len(samples), 32)])
        for column, (attribute, words) in enumerate(ATTRIBUTE_VOCABULARIES.items()):
            labels = all_labels[:, column]
            majority = (labels[int(0.7 * len(labels)):] == labels.mode().values).float().mean().item()
            with torch.enable_grad():
                linear = linear_accuracy(regions, labels, len(words))
            match = match_accuracy(model, regions, objects, attribute, words)
            auc = presence_auc(model, samples, attribute, words)
            print(f"{attribute:<10}{linear:>8.3f}{majority:>10.3f}{match:>8.3f}{1 / len(words):>8.3f}{auc:>14.3f}")


if __name__ == "__main__":
    main()
