"""An encoder with an optional task head, its padded (transformers-style) and packed entry points,
and `load_model`, which builds it from a checkpoint folder (without initialising it: `skip_init.py`)."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from coulisse.config import EncoderConfig
from coulisse.errors import InputError, MissingHeadError, ModelLoadError, UnsupportedModelError
from coulisse.families import Family
from coulisse.models.bert import Packed, Trace, seen_by_hooks
from coulisse.models.outputs import ModelOutput
from coulisse.models.skip_init import skip_init
from coulisse.weights import check_unused, expected_shapes, gather_weights, normalize_keys, read_weights
from coulisse.weights.assign import lookup_tensor

log = logging.getLogger(__name__)

# What a tokenizer call returns beside the model's inputs when asked: `model(**encoding)` passes them unread.
TOKENIZER_FIELDS = frozenset({"offset_mapping", "special_tokens_mask", "length"})

# transformers' class name of each head, after the family's prefix ("Camembert" + "ForSequenceClassification").
HEAD_SUFFIXES = {
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "masked-lm": "ForMaskedLM",
    "multiple-choice": "ForMultipleChoice",
    None: "Model",
}


def resolve(name: str):
    """A family table entry ("module.name" under coulisse.models) -> the object it names."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(f"coulisse.models.{module}"), attr)


def build_head(config: EncoderConfig, task: str) -> nn.Module:
    """The head of `task` in the checkpoint layout of the config's family."""
    family = config.family
    if task == "splade":  # the family's masked-LM head, its logits pooled into one sparse vector
        from coulisse.models.heads import SpladeHead

        return SpladeHead(build_head(config, "masked-lm"))
    heads = resolve(family.heads) if isinstance(family.heads, str) else family.heads
    if task not in heads:
        raise UnsupportedModelError(
            f"coulisse runs {config.model_type} checkpoints with the heads {', '.join(heads)} (and as base "
            f"models, for feature-extraction), not {task}; use one of those tasks or another family."
        )
    builder = heads[task]
    return (resolve(builder) if isinstance(builder, str) else builder)(config)


class EncoderModel(nn.Module):
    def __init__(self, config: EncoderConfig, head: str | None = None):
        super().__init__()
        self.config = config
        self.task_head = head
        self.base = resolve(config.family.model)(config)
        self.head = build_head(config, head) if head else None
        # What the checkpoint's weights hold, counted when they are read (`load_model`), before the preparation
        # moves linear weights into packed forms that are neither parameters nor buffers.
        self.loaded_counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "save_pretrained":  # transformers' models save themselves; this one's weights are prepared
                raise AttributeError(
                    "coulisse's model does not save itself (its weights are prepared for this CPU); save the "
                    "checkpoint with the pipeline's save_pretrained: coulisse.pipeline(task, model=folder)"
                    ".save_pretrained(out), or `coulisse convert folder out`, which transformers loads.") from None
            raise

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """transformers' count of the model's weights: those read from the checkpoint, whatever the preparation
        did with them (`sum(p.numel() for p in model.parameters())` misses the prepacked ones). The encoder and
        its head; a base model has no pooler (coulisse does not compute `pooler_output`), where transformers'
        BERT, RoBERTa and MPNet base models count theirs. Inference only: nothing is trainable."""
        if only_trainable:
            return 0
        counts = self.loaded_counts or _counts(self)
        return counts["all"] - (counts["embeddings"] if exclude_embeddings else 0)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """torch's state dict, refused once the preparation has moved weights out of it (prepacked linear layers):
        `torch.save(model.state_dict())` would save a model without them."""
        state = super().state_dict(*args, **kwargs)
        kept = sum(t.numel() for t in state.values() if isinstance(t, Tensor))
        if self.loaded_counts and kept < self.loaded_counts["state"] and not args and not kwargs.get("prefix"):
            raise InputError(
                "this model's linear weights are prepacked for this CPU, outside its state dict, which would save "
                "the model without them. Save the checkpoint with the pipeline's save_pretrained(folder) (its "
                "weights as read, for transformers), or load the folder again with transformers.")
        return state

    @property
    def per_token(self) -> bool:
        """Whether outputs are one row per token (`(T, ...)`) rather than one per sequence (`(B, ...)`)."""
        return self.head is None or getattr(self.head, "per_token", False)

    def forward_packed(self, p: Packed, select_token_id: int | None = None, *, inputs_embeds: Tensor | None = None,
                       trace: Trace | None = None) -> Tensor:
        """Packed ids in; per-sequence logits `(B, labels)` for a sequence head, else one row per
        token `(T, ...)`: hidden states for a base model, token logits for a token-level head.
        `select_token_id` gives a per-token head only the rows of that token, in packed order: fill-mask
        projects its M masked positions onto the vocabulary (`(M, V)`), not all T tokens.
        `inputs_embeds` `(T, E)` replaces the word vectors of `p.input_ids` (attributions differentiate
        with respect to them); a `trace` collects hidden states and attention probabilities (see
        `coulisse.models.bert.Trace`), every query of every layer included. A pooling head (SPLADE) reads
        every token's hidden state and gives one row per sequence."""
        with seen_by_hooks(self._hooked()):
            return self._forward_packed(p, select_token_id, inputs_embeds, trace)

    def modules_changed(self) -> None:
        """Say that modules were put in place (prepare_model's swaps): the hook check lists them again."""
        self.__dict__.pop("_all_modules", None)

    def _hooked(self) -> bool:
        """Whether a forward hook (on one of the model's modules, or torch's global ones) may see the tensors
        between layers. The modules are listed at the first forward, and again after `modules_changed` (walking
        the tree each time cost ~0.1 ms a forward on a base-size model, a few % of a short request): a module a
        user puts in place by hand after a forward calls it."""
        if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
            return True
        if self._forward_hooks or self._forward_pre_hooks:
            return True
        modules = self.__dict__.get("_all_modules")
        if modules is None:  # not the model itself: a reference to itself would keep a dropped model (and its
            # mapped weights) alive until the garbage collector's next pass
            modules = self.__dict__["_all_modules"] = [m for m in self.modules() if m is not self]
        return any(m._forward_hooks or m._forward_pre_hooks for m in modules)

    def _forward_packed(self, p: Packed, select_token_id: int | None, inputs_embeds: Tensor | None,
                        trace: Trace | None) -> Tensor:
        if getattr(self.head, "pools", False):
            return self.head(self.base(p, inputs_embeds=inputs_embeds, trace=trace), p.lengths)
        if self.per_token:
            hidden = self.base(p, inputs_embeds=inputs_embeds, trace=trace)
            if select_token_id is not None:
                hidden = hidden[p.input_ids == select_token_id]  # (M, H)
            return hidden if self.head is None else self.head(hidden)
        if trace is not None:  # the last layer's whole attention map, not only the first token's row
            return self.head(self.base(p, inputs_embeds=inputs_embeds, trace=trace)[p.starts])
        # first token (<s> / [CLS]) of each sequence
        return self.head(self.base(p, first_only=True, inputs_embeds=inputs_embeds))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights compute in (bf16 weights may be kept as buffers, not parameters)."""
        weights = [t for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()]
        return torch.bfloat16 if any(t.dtype == torch.bfloat16 for t in weights) else weights[0].dtype

    @property
    def device(self) -> torch.device:
        return next(t for t in (*self.parameters(), *self.buffers())).device

    @torch.no_grad()  # not inference_mode: a course's cell edits the outputs in place (start_logits[mask] = -1e4)
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False, return_dict: bool = True,
                labels: Tensor | None = None, **tokenizer_fields: Any) -> ModelOutput | tuple:
        """The notebook's `model(**inputs)`: padded `(B, L)` tensors in, padding dropped inside.
        A multiple-choice head takes `(B, choices, L)` and returns logits `(B, choices)`.
        `output_hidden_states=True` adds `hidden_states`, the embeddings' output and each layer's (layers + 1 of
        `(B, L, H)`, zeros at padding), and for a head the encoder's `last_hidden_state` beside its logits (stage 2
        and the head apart, as `coulisse explain` shows them); `output_attentions=True` adds each layer's
        attention probabilities `(B, heads, L, L)` (zeros where a query or key is padding). `return_dict=False`:
        the output's tuple. `position_ids` `(B, L)`, indices into the position table as transformers takes them,
        replace the ones made from the ids. Inference only: `labels` (a training loss) are refused. What else the
        tokenizer returns when asked (`offset_mapping`, `special_tokens_mask`, `length`, ...) is not the model's,
        and passes unread, so that `model(**tokenizer(..., return_offsets_mapping=True))` runs as in transformers."""
        if unknown := sorted(set(tokenizer_fields) - TOKENIZER_FIELDS):
            raise TypeError(f"forward() got an unexpected keyword argument {unknown[0]!r}; the model reads input_ids, "
                            "attention_mask, token_type_ids, position_ids, output_hidden_states, output_attentions "
                            "and return_dict.")
        if labels is not None:
            raise InputError("labels= asks for a training loss; coulisse runs inference only (no loss, no "
                             "gradients). Fine-tune with transformers, then load the saved folder here.")
        self._check_inputs(input_ids, attention_mask)
        out = self._forward(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                            output_attentions)
        if self.task_head == "question-answering":  # transformers' names: a start and an end logit per token, each
            # a tensor of its own (masking one in place leaves the other and `logits` as they were)
            out.start_logits, out.end_logits = (t.contiguous() for t in out.logits.unbind(-1))
        return out if return_dict else out.to_tuple()

    def _check_inputs(self, input_ids: Any, attention_mask: Any) -> None:
        """The course's first mistakes with `model(...)` each fail here in one line saying what to pass (they were
        torch's AttributeErrors and IndexErrors from inside the forward: audit 46)."""
        if isinstance(input_ids, Mapping):
            raise InputError("model() got the tokenizer's whole output as one argument; unpack it: "
                             "model(**inputs), with inputs = tokenizer(texts, padding=True, return_tensors='pt').")
        for name, value in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            if value is not None and not isinstance(value, Tensor):
                kind = type(value).__name__
                fix = "torch.from_numpy(...), or " if kind == "ndarray" else ""
                raise InputError(f"{name} is a {kind}; the model takes torch tensors: {fix}tokenize with "
                                 "return_tensors='pt' (tokenizer(texts, padding=True, return_tensors='pt')), then "
                                 "model(**inputs).")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise InputError(f"attention_mask of shape {tuple(attention_mask.shape)} for input_ids of shape "
                             f"{tuple(input_ids.shape)}; they go together, one mask value per id, as the tokenizer "
                             "gives them.")
        if input_ids.numel() and not input_ids.is_floating_point() and input_ids.dim() in (2, 3):
            low, high = (int(v) for v in torch.aminmax(input_ids))  # one pass
            if low < 0 or high >= self.config.vocab_size:
                raise InputError(f"input id {high if high >= self.config.vocab_size else low} is outside this model's "
                                 f"vocabulary (ids 0 to {self.config.vocab_size - 1}): is the tokenizer from another "
                                 "checkpoint? Load both from the same one.")
            rows = attention_mask.reshape(-1, attention_mask.shape[-1]) if attention_mask is not None else None
            empty = rows is not None and not rows.any(-1).all()
            # A row without a token gives zeros where the output is per token (a base model's, as before); a head
            # that reads each text's first token has none to read (torch's IndexError came through)
            if empty and (not self.per_token or not rows.any()):
                raise InputError("a row of attention_mask is all zeros: that text has no token for the model to "
                                 "read. Drop it, or give it its tokens (an empty text still has the special "
                                 "tokens), as the tokenizer makes the mask.")

    def _forward(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None,
                 position_ids: Tensor | None, output_hidden_states: bool, output_attentions: bool) -> ModelOutput:
        if input_ids.dim() == 3:
            return self._forward_choices(input_ids, attention_mask, token_type_ids, output_hidden_states,
                                         output_attentions)
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise InputError(f"input_ids of shape {tuple(input_ids.shape)}; pass (batch, length) with length >= 1, "
                             "as tokenizer(texts, padding=True, return_tensors='pt') gives.")
        if input_ids.shape[0] == 0:  # an empty batch: transformers' shapes, with no row (an internal error was said)
            one = self._forward(input_ids.new_zeros(1, input_ids.shape[1]), None, None, None, output_hidden_states,
                                output_attentions)
            return ModelOutput(**{name: tuple(t[:0] for t in value) if isinstance(value, tuple) else value[:0]
                                  for name, value in one.items()})
        limit = self.config.position_limit
        longest = reach = input_ids.shape[-1]
        if attention_mask is not None and attention_mask.numel():
            kept = attention_mask.bool()
            longest = int(kept.sum(-1).max())
            # BERT's positions are columns, padding included (Packed.from_padded): a left-padded text reaches past
            # its length; RoBERTa's count the tokens
            columns = torch.arange(1, kept.shape[-1] + 1, device=kept.device)
            reach = longest if self.config.position_offset else int((kept * columns).max())
        if limit is not None and reach > limit and position_ids is None:  # else an IndexError from the table
            what = f"{longest} tokens" if reach == longest else \
                f"{longest} tokens, the last at position {reach} counting the padding on its left"
            raise InputError(f"an input has {what}; this model embeds at most {limit} positions. "
                             "Tokenize with truncation=True (tokenizer(texts, truncation=True, return_tensors='pt')), "
                             "or split the text" + ("." if reach == longest else
                                                   ", or pad on the right (tokenizer.padding_side = 'right')."))
        if attention_mask is None and self.config.family.mask_from_pad:
            lengths = input_ids.ne(self.config.pad_token_id).sum(1, keepdim=True)
            attention_mask = (torch.arange(input_ids.shape[1], device=input_ids.device) < lengths).long()
        p = Packed.from_padded(input_ids, attention_mask, token_type_ids, self.config.position_offset,
                               position_ids)
        keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=bool)

        def padded(rows: Tensor) -> Tensor:  # (T, ...) -> (B, L, ...), zeros at padding
            out = rows.new_zeros(*input_ids.shape, rows.shape[-1])
            out[keep] = rows
            return out

        def spread(probs: Tensor) -> Tensor:  # (B, h, n, n), each sequence from 0 -> (B, h, L, L) at its columns
            out = probs.new_zeros(*probs.shape[:2], input_ids.shape[1], input_ids.shape[1])
            for b in range(out.shape[0]):
                at = keep[b].nonzero().squeeze(1)
                out[b][:, at[:, None], at[None, :]] = probs[b, :, :len(at), :len(at)]
            return out

        trace = Trace(keep_attentions=output_attentions) if output_hidden_states or output_attentions else None
        if self.head is None or trace is not None:
            hidden = self.base(p, trace=trace)  # (T, H)
            logits = None
            if getattr(self.head, "pools", False):
                logits = self.head(hidden, p.lengths)
            elif self.head is not None:
                logits = self.head(hidden) if self.per_token else self.head(hidden[p.starts])
                logits = padded(logits) if self.per_token else logits
            return ModelOutput(
                last_hidden_state=padded(hidden) if self.head is None or output_hidden_states else None,
                logits=logits,
                hidden_states=tuple(padded(h) for h in trace.hidden_states) if output_hidden_states else None,
                attentions=tuple(spread(a) for a in trace.attentions) if output_attentions else None)
        out = self.forward_packed(p)
        return ModelOutput(logits=padded(out) if self.per_token else out)

    def _forward_choices(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None,
                         output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
        if self.task_head != "multiple-choice":
            raise InputError(f"input_ids of shape {tuple(input_ids.shape)} (batch, choices, length) need a "
                             f"multiple-choice model; this one has head {self.task_head!r}. "
                             "Pass (batch, length).")
        B, C, L = input_ids.shape

        def flat(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.reshape(B * C, L)

        # Every (prompt, choice) pair is one sequence; their scores line up as one row per question. Hidden states
        # and attentions stay per sequence, (B*C, ...), as transformers' multiple-choice models return them (they
        # were dropped, audit 44).
        out = self.forward(flat(input_ids), flat(attention_mask), flat(token_type_ids),
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        out.logits = out.logits.view(B, C)  # (B*C, 1) -> one row per question
        return out


def _counts(model: EncoderModel) -> dict[str, int]:
    """The weights' sizes as read: every parameter, the embedding tables among them, and the state dict's."""
    embeddings = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    state = sum(t.numel() for t in nn.Module.state_dict(model).values() if isinstance(t, Tensor))
    return {"all": sum(p.numel() for p in model.parameters()), "embeddings": embeddings, "state": state}


def _sources(family: Family, head: nn.Module | None):
    family_keys = resolve(family.checkpoint_keys)

    def sources(name: str) -> list[str]:
        scope, _, rest = name.partition(".")
        if scope == "base":
            return ["{base}." + key for key in family_keys(rest)]
        if rest in head.KEYS:  # a parameter with keys of its own (a decoder tied to the embeddings)
            return [head.KEYS[rest]]
        module, _, param = rest.rpartition(".")
        return [f"{head.KEYS[module]}.{param}"]

    return sources


def named_heads(config: EncoderConfig) -> set[str]:
    """The task heads config.json's `architectures` name ("TFCamembertForSequenceClassification" counts)."""
    return {head for head, suffix in HEAD_SUFFIXES.items() if head
            for name in config.architectures if name.endswith(suffix)}


# The pipeline task that runs each head (what a refusal tells the user to ask for instead).
HEAD_TASKS = {"sequence-classification": "text-classification", "token-classification": "token-classification",
              "question-answering": "question-answering", "masked-lm": "fill-mask",
              "multiple-choice": "multiple-choice"}


def _tasks_named(config: EncoderConfig) -> list[str]:
    """The tasks the folder's architectures name, then 'feature-extraction' (any checkpoint's encoder): a masked
    LM was told only 'feature-extraction' (audit 44)."""
    tasks = sorted({HEAD_TASKS[head] for head in named_heads(config)} - {"multiple-choice"})
    return [*tasks, "feature-extraction"]


def warn_other_head(config: EncoderConfig, head: str | None, directory: Path) -> None:
    """A head read from another head's tensors (a BERT sentence classifier's classifier.* has a token
    classifier's names and shapes) loads, as in transformers; its outputs mean what the other task trained."""
    named = named_heads(config)
    asked = "masked-lm" if head == "splade" else head
    if asked and named and asked not in named:
        log.warning("%s: config.json's architectures %s name another head than %s; the checkpoint's tensors of "
                    "the same names and shapes were read as a %s head, whose outputs (and labels) were trained for "
                    "the other task", directory, config.architectures, head, head)


def load_model(directory: Path, config: EncoderConfig, head: str | None = None) -> EncoderModel:
    """Build the model on the meta device, then adopt the checkpoint's tensors without extra copies."""
    start = time.perf_counter()
    family = config.family
    with skip_init():
        model = EncoderModel(config, head)
    sources = _sources(family, model.head)
    # The table goes to the reader: a tf_model.h5 dataset's shape is checked before it is read.
    tensors, path = read_weights(directory, expected_shapes(model, sources, family.prefixes))
    tensors = normalize_keys(tensors, family.prefixes)
    # A head's own tensors (outside the base model) must be there, or the checkpoint is not fine-tuned for it.
    # Their exact names: another task's head may share a prefix (a sequence classifier's classifier.dense.*
    # is not a token classifier's classifier.weight).
    # (An alternative in the base model, a decoder tied to the embeddings, does not count.)
    keys = [key for name, _ in model.named_parameters() if name.startswith("head.") for key in sources(name)]
    own = [option for key in keys for option in key.split("|") if not option.startswith("{base}.")]
    if head and own and all(lookup_tensor(tensors, key) is None for key in own):
        raise MissingHeadError(f"{path.name} in {directory} has no {head} head (no {own[0]} tensor; architectures: "
                               f"{config.architectures or 'unknown'})", _tasks_named(config), head)
    # Part of the head there and part not (a token classifier's classifier.* asked for as a sentence classifier,
    # which also needs a pooler): the head is what is missing, not a file that disagrees with its config.
    missing = [key for key in keys if lookup_tensor(tensors, key) is None]
    if head and missing:
        raise MissingHeadError(f"{path.name} in {directory} has no complete {head} head (no "
                               f"{missing[0].replace('{base}.', '')} tensor; architectures: "
                               f"{config.architectures or 'unknown'})", _tasks_named(config), head)
    if config.raw.get("tie_word_embeddings") is False:  # the decoder has weights of its own: never the embeddings
        for key in keys:
            mine, _, tied = key.partition("|")
            if "embeddings" in tied and lookup_tensor(tensors, mine) is None:
                raise ModelLoadError(
                    f"config.json in {directory} sets tie_word_embeddings: false (the {head} decoder has weights "
                    f"of its own), but {path.name} holds no {mine.replace('{base}.', '')} tensor; transformers "
                    "would draw a random decoder. Download the complete checkpoint, or set tie_word_embeddings: "
                    "true if its decoder is the word embeddings.")
    state, used = gather_weights(model, tensors, sources, path.name)
    if family.unused_ok:
        used |= {k for k in tensors if k.removeprefix("{base}.").startswith(family.unused_ok)}
    # The encoder's own tensors sit under the top-level names its parameters are read from; every one of
    # those must be used, while tensors outside them (a pooler, another task's head) may be left.
    roots = {key.removeprefix("{base}.").split(".")[0] for name, _ in model.base.named_parameters()
             for key in sources(f"base.{name}")}
    check_unused(tensors, used, path.name, tuple(sorted(roots)))
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    model.loaded_counts = _counts(model)
    warn_other_head(config, head, directory)
    log.info("loaded %s (%s, %d layers) from %s in %.2fs", config.model_type, head or "base",
             config.num_hidden_layers, path.name, time.perf_counter() - start)
    return model
