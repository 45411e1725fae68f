"""Stage 2 of the pipeline: the encoder and its task head, built from config.json and the weights."""

from coulisse.models.bert import Packed, Trace
from coulisse.models.model import EncoderModel, load_model
from coulisse.models.outputs import ModelOutput

__all__ = ["EncoderModel", "ModelOutput", "Packed", "Trace", "load_model"]
