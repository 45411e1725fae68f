"""Stage 3 of the pipeline: post-processing per task, plain numpy."""

from coulisse.tasks.feature_extraction import FeatureExtractionPipeline
from coulisse.tasks.text_classification import TextClassificationPipeline

TASKS = {
    "text-classification": TextClassificationPipeline,
    "feature-extraction": FeatureExtractionPipeline,
}

__all__ = ["TASKS", "FeatureExtractionPipeline", "TextClassificationPipeline"]
