"""Data: the synthetic concept world and its SA-Co / VEval exports."""

from conceptseg.data.synthetic import ConceptWorld, Sample
from conceptseg.data.synthetic_export import (
    export_saco_image_benchmark,
    export_veval_benchmark,
    write_saco_image_benchmark,
)

__all__ = [
    "ConceptWorld", "Sample", "export_saco_image_benchmark", "export_veval_benchmark", "write_saco_image_benchmark",
]
