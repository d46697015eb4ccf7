"""Data: the synthetic concept world, its SA-Co / VEval exports, and the record training and evaluation share.

An image-phrase pair has one name per stage, each with its own fields:
  * `conceptseg.io.saco_image.ImagePair`: the pair as a GT file holds it (file name, RLE instances, ids);
  * `Example` (`data.examples`): the pair decoded to arrays, what the model is trained and evaluated on;
  * `Sample` (`data.synthetic`): a concept-world scene as generated, with what the world knows beyond the pair
    (every object's attributes, the concept, the kind of query); `example_from_sample` makes it an `Example`,
    `write_saco_image_benchmark` an `ImagePair`.
"""

from conceptseg.data.synthetic import ConceptWorld, Sample
from conceptseg.data.synthetic_export import (
    export_saco_image_benchmark,
    export_veval_benchmark,
    write_saco_image_benchmark,
)
from conceptseg.data.synthetic_style import Variety

__all__ = [
    "ConceptWorld", "Sample", "Variety", "export_saco_image_benchmark", "export_veval_benchmark",
    "write_saco_image_benchmark",
]
