"""Task heads: a few layers on top of the encoder's hidden states, one class per checkpoint layout.

Each head names the checkpoint keys of its parameters (`KEYS`), since heads live outside the
base-model prefix (`classifier.*`), except BERT's pooler which lives inside it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from coulisse.config import EncoderConfig


class BertClassificationHead(nn.Module):
    """BERT: tanh pooler on [CLS], then one linear layer."""

    KEYS = {"pooler.dense": "{base}.pooler.dense", "classifier": "classifier"}

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first: Tensor) -> Tensor:
        return self.classifier(torch.tanh(self.pooler.dense(first)))


class RobertaClassificationHead(nn.Module):
    """RoBERTa family: dense + tanh on <s>, then out_proj."""

    KEYS = {"dense": "classifier.dense", "out_proj": "classifier.out_proj"}

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first: Tensor) -> Tensor:
        return self.out_proj(torch.tanh(self.dense(first)))


class DistilBertClassificationHead(nn.Module):
    """DistilBERT: pre_classifier + ReLU on [CLS], then classifier."""

    KEYS = {"pre_classifier": "pre_classifier", "classifier": "classifier"}

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first: Tensor) -> Tensor:
        return self.classifier(torch.relu(self.pre_classifier(first)))


def classification_head(config: EncoderConfig) -> nn.Module:
    if config.family == "distilbert":
        return DistilBertClassificationHead(config)
    if config.position_offset:  # RoBERTa family
        return RobertaClassificationHead(config)
    return BertClassificationHead(config)
