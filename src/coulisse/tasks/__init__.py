"""Stage 3 of the pipeline: post-processing per task, plain numpy."""

from coulisse.tasks.feature_extraction import FeatureExtractionPipeline
from coulisse.tasks.fill_mask import FillMaskPipeline
from coulisse.tasks.question_answering import QuestionAnsweringPipeline
from coulisse.tasks.sparse_embedding import SparseEmbeddingPipeline
from coulisse.tasks.text_classification import TextClassificationPipeline
from coulisse.tasks.token_classification import TokenClassificationPipeline
from coulisse.tasks.zero_shot import ZeroShotClassificationPipeline

TASKS = {
    "text-classification": TextClassificationPipeline,
    "feature-extraction": FeatureExtractionPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "zero-shot-classification": ZeroShotClassificationPipeline,
    "token-classification": TokenClassificationPipeline,
    "fill-mask": FillMaskPipeline,
    "sparse-embedding": SparseEmbeddingPipeline,
}

__all__ = ["TASKS", "FeatureExtractionPipeline", "FillMaskPipeline", "QuestionAnsweringPipeline",
           "SparseEmbeddingPipeline", "TextClassificationPipeline", "TokenClassificationPipeline",
           "ZeroShotClassificationPipeline"]
