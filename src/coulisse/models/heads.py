"""Task heads: a few layers on top of the encoder's hidden states, one class per checkpoint layout.

Each head names the checkpoint keys of its parameters (`KEYS`), since heads live outside the
base-model prefix (`classifier.*`), except BERT's pooler which lives inside it. Which family uses
which head for which task is the family table's business (`coulisse.families`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coulisse.config import EncoderConfig
from coulisse.errors import UnsupportedModelError
from coulisse.models.bert import ACTIVATIONS


class BertClassificationHead(nn.Module):
    """BERT: tanh pooler on [CLS], then one linear layer (`outputs=1`: one score per choice)."""

    KEYS = {"pooler.dense": "{base}.pooler.dense", "classifier": "classifier"}

    def __init__(self, config: EncoderConfig, outputs: int | None = None):
        super().__init__()
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, outputs or config.num_labels)

    def forward(self, first: Tensor) -> Tensor:
        return self.classifier(torch.tanh(self.pooler.dense(first)))


class RobertaClassificationHead(nn.Module):
    """RoBERTa family: dense + tanh on <s>, then out_proj."""

    KEYS = {"dense": "classifier.dense", "out_proj": "classifier.out_proj"}
    act = staticmethod(torch.tanh)

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first: Tensor) -> Tensor:
        return self.out_proj(self.act(self.dense(first)))


class DistilBertClassificationHead(nn.Module):
    """DistilBERT: pre_classifier + ReLU on [CLS], then classifier (`outputs=1`: one score per choice)."""

    KEYS = {"pre_classifier": "pre_classifier", "classifier": "classifier"}

    def __init__(self, config: EncoderConfig, outputs: int | None = None):
        super().__init__()
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, outputs or config.num_labels)

    def forward(self, first: Tensor) -> Tensor:
        return self.classifier(torch.relu(self.pre_classifier(first)))


class ElectraClassificationHead(RobertaClassificationHead):
    """ELECTRA: RoBERTa's layout with GELU (whatever the config says) in place of tanh."""

    act = staticmethod(F.gelu)


SUMMARY_ACTIVATIONS = {**ACTIVATIONS, "tanh": torch.tanh, "linear": lambda x: x}


class SequenceSummaryHead(nn.Module):
    """XLM / FlauBERT `sequence_summary`: the first token projected onto the labels (`summary`), then the
    config's `summary_activation` (none by default)."""

    KEYS = {"summary": "sequence_summary.summary"}

    def __init__(self, config: EncoderConfig):
        super().__init__()
        # transformers' other summaries ("last", "mean") read padding positions, so a text's logits would
        # depend on its batch; a summary that is not projected onto the labels gives no logits.
        if config.summary_type != "first" or not (config.summary_use_proj and config.summary_proj_to_labels):
            raise UnsupportedModelError(
                f"summary_type={config.summary_type!r}, summary_use_proj={config.summary_use_proj}, "
                f"summary_proj_to_labels={config.summary_proj_to_labels} in config.json; coulisse runs sequence "
                "summaries of the first token projected onto the labels ('first', true, true).")
        activation = config.summary_activation or "linear"
        if activation not in SUMMARY_ACTIVATIONS:
            raise UnsupportedModelError(f"summary_activation={activation!r} in config.json; coulisse runs "
                                        f"{', '.join(sorted(SUMMARY_ACTIVATIONS))}.")
        self.summary = nn.Linear(config.hidden_size, config.num_labels)
        self.act = SUMMARY_ACTIVATIONS[activation]

    def forward(self, first: Tensor) -> Tensor:
        return self.act(self.summary(first))


class QuestionAnsweringHead(nn.Module):
    """`*ForQuestionAnswering`: a linear layer on every token -> start, end logits."""

    KEYS = {"qa_outputs": "qa_outputs"}
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.qa_outputs(hidden)  # (T, 2): start logit, end logit


# `*ForMultipleChoice`: one score per (prompt, choice) sequence, with the classification layout of the
# family: BERT and the RoBERTa family read the base model's tanh pooler (`{base}.pooler.dense`) then
# `classifier`; DistilBERT its own pre_classifier + ReLU.


class BertMultipleChoiceHead(BertClassificationHead):
    def __init__(self, config: EncoderConfig):
        super().__init__(config, outputs=1)


class DistilBertMultipleChoiceHead(DistilBertClassificationHead):
    def __init__(self, config: EncoderConfig):
        super().__init__(config, outputs=1)


class TokenClassificationHead(nn.Module):
    """`*ForTokenClassification`: one linear layer on every token."""

    KEYS = {"classifier": "classifier"}
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(hidden)  # (T, labels)


# Masked-LM heads: transform the rows they are given (the model hands them only the masked positions in the
# fill-mask pipeline), then project onto the vocabulary with the word-embedding matrix, which checkpoints
# usually store once, under the embeddings (`a|b`: the decoder's own key, else the embeddings').


class BertMaskedLMHead(nn.Module):
    """BERT `cls.predictions`: dense + the config's activation + LayerNorm, then the tied decoder."""

    KEYS = {
        "transform.dense": "cls.predictions.transform.dense",
        "transform.LayerNorm": "cls.predictions.transform.LayerNorm",
        "decoder.weight": "cls.predictions.decoder.weight|{base}.embeddings.word_embeddings.weight",
        "decoder.bias": "cls.predictions.decoder.bias|cls.predictions.bias",
    }
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: Tensor) -> Tensor:
        x = self.transform.LayerNorm(self.act(self.transform.dense(hidden)))
        return self.decoder(x)  # (rows, vocab)


class RobertaMaskedLMHead(nn.Module):
    """RoBERTa family `lm_head`: dense + GELU (always, whatever the config says) + layer_norm, then
    the tied decoder."""

    KEYS = {
        "dense": "lm_head.dense",
        "layer_norm": "lm_head.layer_norm",
        "decoder.weight": "lm_head.decoder.weight|{base}.embeddings.word_embeddings.weight",
        "decoder.bias": "lm_head.decoder.bias|lm_head.bias",
    }
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(hidden))))  # (rows, vocab)


class DistilBertMaskedLMHead(nn.Module):
    """DistilBERT: vocab_transform + the config's activation + vocab_layer_norm (eps fixed at 1e-12),
    then the tied vocab_projector."""

    KEYS = {
        "vocab_transform": "vocab_transform",
        "vocab_layer_norm": "vocab_layer_norm",
        "vocab_projector.weight": "vocab_projector.weight|{base}.embeddings.word_embeddings.weight",
        "vocab_projector.bias": "vocab_projector.bias",
    }
    per_token = True

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.vocab_transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.vocab_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.vocab_projector = nn.Linear(config.hidden_size, config.vocab_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: Tensor) -> Tensor:
        return self.vocab_projector(self.vocab_layer_norm(self.act(self.vocab_transform(hidden))))



# SPLADE: a masked-LM head read as a sparse encoder (sentence-transformers' SpladePooling, TEI's
# `--pooling splade`). One weight per vocabulary entry and sequence, most of them zero.

SPLADE_STRATEGIES = ("max", "sum")
SPLADE_ACTIVATIONS = ("relu", "log1p_relu")


class SpladeHead(nn.Module):
    """The family's masked-LM head on every token, log(1 + ReLU(logit)) (`activation="log1p_relu"`: log1p once
    more, OpenSearch's models), then the max (or the sum) over each sequence's tokens: `(B, vocab)`. The
    vocabulary rows of at most `CHUNK` tokens exist at once (a vocabulary of 32k floats is 128 kB a token)."""

    per_token = False
    pools = True  # takes every token's hidden state and the sequence lengths, not the first tokens
    CHUNK = 512

    def __init__(self, mlm: nn.Module, strategy: str = "max", activation: str = "relu"):
        super().__init__()
        self.mlm = mlm
        self.KEYS = {f"mlm.{name}": key for name, key in mlm.KEYS.items()}
        self.configure(strategy, activation)

    def configure(self, strategy: str, activation: str) -> None:
        """The pooling a folder's SpladePooling module names (its config.json)."""
        if strategy not in SPLADE_STRATEGIES or activation not in SPLADE_ACTIVATIONS:
            raise UnsupportedModelError(
                f"SPLADE pooling_strategy={strategy!r}, activation_function={activation!r}; coulisse runs "
                f"pooling_strategy {' or '.join(SPLADE_STRATEGIES)} with activation_function "
                f"{' or '.join(SPLADE_ACTIVATIONS)}, as sentence-transformers does.")
        self.strategy, self.activation = strategy, activation

    def token_weights(self, hidden: Tensor) -> Tensor:
        """Each row's weight on each vocabulary entry, before pooling: log(1 + ReLU(logit)) `(rows, vocab)`."""
        weights = torch.log1p(torch.relu(self.mlm(hidden).float()))
        return torch.log1p(weights) if self.activation == "log1p_relu" else weights

    def pool(self, weights: Tensor) -> Tensor:
        """One sequence's token weights `(tokens, vocab)` -> its embedding `(vocab,)`."""
        return weights.amax(0) if self.strategy == "max" else weights.sum(0)

    def forward(self, hidden: Tensor, lengths: list[int]) -> Tensor:
        """Hidden states `(T, H)` of sequences laid end to end with `lengths` -> `(B, vocab)`."""
        pooled, start, b = [], 0, 0
        while b < len(lengths):
            end, rows = b + 1, lengths[b]  # whole sequences, up to CHUNK rows (a longer one alone)
            while end < len(lengths) and rows + lengths[end] <= self.CHUNK:
                rows += lengths[end]
                end += 1
            weights = self.token_weights(hidden[start:start + rows])
            pooled += [self.pool(sequence) for sequence in weights.split(lengths[b:end])]
            start, b = start + rows, end
        return torch.stack(pooled)
