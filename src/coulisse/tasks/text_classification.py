"""Stage 3 for sequence classification: logits -> probabilities -> labels (numpy only)."""

from __future__ import annotations

import logging
import warnings
from typing import Any, overload

import numpy as np

from coulisse.engine import Item
from coulisse.errors import InputError
from coulisse.tasks import attributions
from coulisse.tasks.attributions import Attribution
from coulisse.tasks.base import (
    POST,
    PRE,
    UNUSED,
    Batch,
    Option,
    Pipeline,
    boolean,
    one_of,
    padding_option,
    positive_int,
    truncation_option,
)
from coulisse.tasks.functional import sigmoid, softmax
from coulisse.tasks.windows import LONG_TEXT, Windows, average_logits, split_windows
from coulisse.tokenizer import check_texts

log = logging.getLogger(__name__)

FUNCTIONS = ("softmax", "sigmoid", "none")


def _text_pair(value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(f"text_pair={value!r:.60}; pass one string, the second member of each text's pair "
                         "(for a pair per text, pass {'text': ..., 'text_pair': ...} dicts).")
    return value


def default_function(problem_type: str | None, num_labels: int) -> str:
    """transformers' rule: regression -> none; multi-label or a single label -> sigmoid; else softmax."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or num_labels == 1:
        return "sigmoid"
    return "softmax"


def apply_function(logits: np.ndarray, function: str) -> np.ndarray:
    if function == "softmax":
        return softmax(logits)
    if function == "sigmoid":
        return sigmoid(logits)
    return logits  # "none", the table's third choice


def label_scores(logits: np.ndarray, id2label: dict[int, str], function: str,
                 top_k: int | None = 1, legacy: bool = True) -> dict | list[dict]:
    """One input's result, in transformers' shape: a dict for the default top-1, else a sorted list."""
    scores = apply_function(np.asarray(logits, dtype=np.float32), function)
    if top_k == 1 and legacy:
        best = int(scores.argmax())
        return {"label": id2label[best], "score": float(scores[best])}
    results = [{"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)]
    if not legacy:
        results.sort(key=lambda r: r["score"], reverse=True)
        if top_k is not None:
            results = results[:top_k]
    return results


def _has_dicts(inputs: Any) -> bool:
    """A {"text", "text_pair"} dict, or a list holding at least one."""
    return isinstance(inputs, dict) or (isinstance(inputs, list) and any(isinstance(i, dict) for i in inputs))


class TextClassificationPipeline(Pipeline):
    """Texts (or text pairs) -> labels and scores (`top_k`, `function_to_apply`), transformers' "text-classification"
    and "sentiment-analysis"; `explain()` scores each word of a text towards a label."""

    task = "text-classification"
    head = "sequence-classification"
    OPTIONS = {
        # transformers' legacy shape (a dict per input) holds while top_k is not passed at all
        "top_k": Option(1, check=lambda name, v: positive_int(name, v, allow_none=True), none_is_value=True,
                        doc="labels per input, best first; None: every label"),
        "function_to_apply": Option(None, check=one_of(*FUNCTIONS),
                                    doc="softmax, sigmoid or none (the logits); default by the config's problem_type"),
        # the tokenizer keywords transformers passes on (its remaining call keywords)
        "truncation": Option(True, PRE, check=truncation_option,
                             doc="cut texts past max_length; False, or a transformers strategy name"),
        # transformers hands its tokenizer keywords over as given: max_length=None at a call drops the pipeline's
        # (the model's limit holds); truncation=None keeps the pipeline's (transformers: none, see docs/dropin.md)
        "max_length": Option(None, PRE, check=lambda name, v: positive_int(name, v, allow_none=True),
                             none_is_value=True,
                             doc="tokens a text is cut at; None: the model's limit"),
        "add_special_tokens": Option(True, PRE, check=boolean,
                                     doc="wrap each text in the model's special tokens, as it was trained"),
        # `clf(text, text_pair=second)`: transformers hands it to the tokenizer, pairing it with every text
        "text_pair": Option(None, PRE, check=lambda name, v: _text_pair(v),
                            doc="a second text paired with every input (as transformers hands it to the tokenizer)"),
        # transformers sets it on the tokenizer (`tokenizer.truncation_side = "left"`): keep the end; None: the
        # tokenizer's own (tokenizer_config.json's, "right" where it says nothing)
        "truncation_side": Option(None, PRE, check=one_of("right", "left"),
                                  doc="right keeps a long text's start, left its end; None: the tokenizer's"),
        # coulisse's own: a text over the model's limit read whole, in windows that share `stride` tokens
        # (default a quarter of a window), the mean of their logits (coulisse.tasks.windows); "truncate" keeps
        # the start, as transformers does
        "long_text": Option("truncate", PRE, check=one_of(*LONG_TEXT),
                            doc="truncate (as transformers), or chunk: a long text read whole, in windows"),
        "stride": Option(None, PRE, check=lambda name, v: positive_int(name, v, allow_zero=True),
                         doc="with long_text='chunk': tokens windows share (default a quarter of a window)"),
        "padding": Option(False, UNUSED, check=padding_option,
                          doc="accepted as transformers takes it; no effect (batches are packed, never padded)"),
        # removed in transformers 5, which ignores it; so does coulisse, with a warning
        "return_all_scores": Option(None, UNUSED, check=boolean,
                                    doc="removed in transformers 5, ignored with a warning: pass top_k=None"),
    }

    @classmethod
    def check_defaults(cls, defaults: dict[str, Any]) -> None:
        if defaults.get("stride") is not None and defaults.get("long_text") != "chunk":
            # else every call without long_text="chunk" would fail on it
            raise InputError(f"stride={defaults['stride']!r} only applies with long_text='chunk'; pass "
                             "long_text='chunk' to pipeline() too, or give stride to the calls that chunk.")

    def options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = super().options(kwargs)
        if kwargs.get("stride") is not None and options["long_text"] != "chunk":
            # transformers accepts it and does nothing with it; the windows it would space are coulisse's own (a
            # pipeline's own stride, checked at build with its long_text="chunk", waits for the calls that chunk)
            raise InputError(f"stride={kwargs['stride']!r} only applies with long_text='chunk' (a text over the "
                             "model's limit read in windows sharing `stride` tokens); leave stride out, or pass "
                             "long_text='chunk'.")
        # As in transformers, a bare string's result is wrapped in a list unless this call passes top_k.
        return {**options, "_wrap": "top_k" not in kwargs}

    def resolve_options(self, options: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        options["function_to_apply"] = options["function_to_apply"] or default_function(
            self.config.problem_type, self.config.num_labels)
        options["_legacy"] = "top_k" not in given
        if given.get("return_all_scores") is not None:
            log.warning("return_all_scores was removed in transformers 5, which ignores it, as coulisse does; "
                        "pass top_k=None for every label's score")
        return options

    def stage_options(self, options: dict[str, Any], stage: str) -> dict[str, Any]:
        chosen = super().stage_options(options, stage)
        if stage != POST:
            return chosen
        return {**chosen, "_legacy": options["_legacy"], "_wrap": options.get("_wrap", True)}

    def preprocess(self, inputs: Any, truncation: bool | str = True, max_length: int | None = None,
                   add_special_tokens: bool = True, truncation_side: str | None = None,
                   text_pair: str | None = None, long_text: str = "truncate", stride: int | None = None) -> Batch:
        """Plain texts, or {"text", "text_pair"} dicts for sentence-pair classifiers -> ids; truncation as
        transformers' tokenizer takes it (a strategy says which member of a pair gives up tokens). A
        `text_pair` keyword is the second member of every text's pair. `long_text="chunk"`: each text whole, in
        windows of `max_length` (default the model's limit) sharing `stride` tokens, `batch.owners` saying whose
        each window is."""
        if long_text == "chunk":
            return self._windows(inputs, max_length, stride, text_pair, truncation_side, add_special_tokens)
        texts, pairs, single = self._split_inputs(inputs)
        if text_pair is not None:
            if pairs is not None or _has_dicts(inputs):
                raise InputError("text_pair is given twice, as a keyword and in the {'text', 'text_pair'} "
                                 "inputs; pass plain texts with text_pair=, or dicts without it.")
            # transformers hands text_pair to the tokenizer with each text alone: "" is then no pair at all
            pairs = [text_pair] * len(texts) if text_pair else None
        def encode(texts: list[str], pairs: list[str] | None) -> list:
            return self.encode_texts(texts, pairs, truncation=truncation, max_length=max_length,
                                     add_special_tokens=add_special_tokens, truncation_side=truncation_side)

        if pairs is None or all(p is not None for p in pairs):
            encodings = encode(texts, pairs)
        else:  # texts alone and pairs in one call, as transformers takes a list mixing them: each group encoded
            alone = [i for i, p in enumerate(pairs) if p is None]
            paired = [i for i, p in enumerate(pairs) if p is not None]
            encodings = [None] * len(texts)
            for where, got in ((alone, encode([texts[i] for i in alone], None)),
                               (paired, encode([texts[i] for i in paired], [pairs[i] for i in paired]))):
                for i, e in zip(where, got, strict=True):
                    encodings[i] = e
        # transformers wraps a lone string's legacy result in a list, but not a lone {"text", ...} dict.
        return Batch([Item(e.ids, e.type_ids) for e in encodings], texts, single, context=isinstance(inputs, str))

    def encode_texts(self, texts: list[str], pairs: list[str] | None, *, truncation: bool | str = True,
                     max_length: int | None = None, add_special_tokens: bool = True,
                     truncation_side: str | None = None) -> list:
        """The tokenizer's encodings of texts (and their pairs), read as `preprocess` reads them."""
        strategy = truncation if isinstance(truncation, str) else "longest_first"
        return self.tokenizer.encode_batch(texts, pairs, truncation=bool(truncation),
                                           max_length=self.cap_length(max_length),
                                           add_special_tokens=add_special_tokens, strategy=strategy,
                                           direction=truncation_side)

    def _windows(self, inputs: Any, max_length: int | None, stride: int | None, text_pair: str | None,
                 truncation_side: str | None, add_special_tokens: bool) -> Batch:
        """`long_text="chunk"`'s batch: every window of every text, and whose each is."""
        texts, pairs, single = self._split_inputs(inputs)
        windows, _ = self.split_texts(texts, max_length, stride, pairs is not None or text_pair is not None,
                                      truncation_side, add_special_tokens)
        return Batch(windows.items, texts, single, context=isinstance(inputs, str), owners=windows.owners)

    def split_texts(self, texts: list[str], max_length: int | None, stride: int | None, paired: bool,
                    truncation_side: str | None, add_special_tokens: bool) -> tuple[Windows, list]:
        """`long_text="chunk"`: the windows of texts read whole, and the texts' encodings they are cut from."""
        refused = [name for name, value in (("text pairs", paired), ("truncation_side", truncation_side is not None),
                                            ("add_special_tokens=False", not add_special_tokens)) if value]
        if refused:
            raise InputError(f"long_text='chunk' reads single texts whole, in windows that each carry the special "
                             f"tokens; it takes no {' or '.join(refused)}: use long_text='truncate' for them.")
        size = self.tokenizer.model_max_length if max_length is None else self.cap_length(max_length)
        whole = self.tokenizer.encode_batch(texts, truncation=False)
        return split_windows(whole, size, stride), whole

    def postprocess(self, outputs: Any, batch: Batch | None = None, *, function_to_apply: str | None = None,
                    top_k: int | None = 1, _legacy: bool = True, _wrap: bool = True) -> dict | list:
        """Logits `(labels,)` or `(batch, labels)` (numpy, torch, or the forward stage's rows) -> labels and
        scores; with the batch, shaped as the call was (one result for one bare input; the mean of its windows'
        logits for a text read in several)."""
        if hasattr(outputs, "logits"):
            outputs = outputs.logits
        elif hasattr(outputs, "last_hidden_state"):
            raise InputError("postprocess got a base model's output (last_hidden_state: a vector per token), which "
                             "has no logits: the classification head computes them. Load the model with its head "
                             "(AutoModelForSequenceClassification, or pipeline's own model: classifier.model) and "
                             "pass model(**inputs).logits.")
        if hasattr(outputs, "detach"):  # torch: its integer dtype said before the cast to float
            array = outputs.detach().cpu().numpy() if not outputs.is_floating_point() else \
                outputs.detach().float().cpu().numpy()
        else:
            array = np.asarray(outputs)
        function = function_to_apply or default_function(self.config.problem_type, self.config.num_labels)
        self._check_logits(array, function)
        if batch is not None and batch.owners is not None:
            array = np.stack(average_logits(list(array), batch.owners, len(batch.inputs)))
        if array.ndim == 1:
            return label_scores(array, self.config.id2label, function, top_k, _legacy)
        results = [label_scores(row, self.config.id2label, function, top_k, _legacy) for row in array]
        if batch is not None and batch.single:
            return [results[0]] if _wrap and batch.context else results[0]
        return results

    def _check_logits(self, array: np.ndarray, function: str) -> None:
        """What the course's stage 3 hands over by mistake answered nothing sensible, silently (audit 46): a base
        model's hidden states, argmax's class ids, or the softmax's probabilities (softmax applied twice)."""
        labels = self.config.num_labels
        fix = "pass the classification head's logits: classifier.postprocess(model(**inputs).logits)"
        if array.dtype.kind not in "fiub" or array.ndim not in (1, 2):
            what = f"shape {array.shape}" if array.dtype.kind in "fiucb" else f"{array.dtype} values"
            hint = " (a base model's last_hidden_state?)" if array.ndim == 3 else ""
            raise InputError(f"postprocess takes logits (batch, {labels} labels) or ({labels},), got {what}{hint}; "
                             f"{fix}.")
        if array.dtype.kind in "iub":
            raise InputError(f"postprocess got integers {array.tolist()[:8]} (class ids, argmax's?): it takes the "
                             f"logits and picks the label itself; {fix}.")
        if array.shape[-1] != labels:
            raise InputError(f"postprocess got {array.shape[-1]} scores per text; this model has {labels} labels "
                             f"({', '.join(map(str, self.config.id2label.values()))}); {fix}.")
        rows = array.reshape(-1, labels)
        if (function == "softmax" and labels > 1 and rows.size and rows.min() >= 0
                and np.allclose(rows.sum(-1), 1.0, atol=1e-4)):
            warnings.warn("postprocess got rows that each sum to 1, probabilities: it applies the softmax itself, "
                          "and a second one flattens the scores; pass outputs.logits, not softmax(outputs.logits).",
                          stacklevel=3)

    # -- explanations (coulisse.tasks.attributions) --------------------------------------------------------

    @overload
    def explain(self, inputs: str, target: int | str | None = None, method: str = "integrated_gradients",
                steps: int | None = None, baseline: str = "pad", **reading: Any) -> Attribution: ...

    @overload
    def explain(self, inputs: list[str], target: int | str | None = None, method: str = "integrated_gradients",
                steps: int | None = None, baseline: str = "pad", **reading: Any) -> list[Attribution]: ...

    def explain(self, inputs: str | list[str], target: int | str | None = None,
                method: str = "integrated_gradients", steps: int | None = None,
                baseline: str = "pad", **reading: Any) -> Attribution | list[Attribution]:
        """Which tokens and words pushed each text towards `target` (a label name or id; default: the label
        this pipeline answers). `method`: "integrated_gradients" (on the fp32 weights, `steps` Gauss-Legendre
        nodes, default 32) or "occlusion" (each word's vectors replaced by the baseline token's, through this
        pipeline's own forward, int8 included). `baseline`: the token standing for "no word", "pad" or "mask".
        One `Attribution` per text (see `coulisse.tasks.attributions`); `.to_dict()` gives plain values.

        The text is read as a call reads it: the pipeline's reading options (`truncation_side`, `max_length`,
        `truncation`, `add_special_tokens`, `text_pair`, `long_text`, `stride`), under those given here. A
        `text_pair` stays as it is, as the special tokens do, and gets no score. `long_text="chunk"`: the answer
        is the mean of the windows' logits, and so is what is explained (`attributions.attribute_windows`): a
        token's score is the mean of its scores in the windows, over the whole text."""
        method, steps = attributions.check_request(method, steps, baseline)
        target = attributions.check_target(target, self.config.id2label)
        options = self.reading(reading)
        scorer = attributions.Scorer(method, steps, baseline, attributions.baseline_token(self.tokenizer, baseline),
                                     lambda: self.gradient_model, self.forward,
                                     attributions.weights_of(self.preparation))
        texts, single = check_texts(inputs)
        if options["long_text"] == "chunk":
            results = self._explain_windows(texts, scorer, target, options)
        else:
            results = self._explain_read(texts, scorer, target, options)
        return results[0] if single else results

    def reading(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """A call's reading options (`preprocess`'s): the pipeline's, under `given` (checked as a call's are)."""
        given = given or {}
        others = [name for name in given if self.option_table().get(name, Option(None)).stage != PRE]
        if others:
            readable = ", ".join(n for n, o in self.OPTIONS.items() if o.stage == PRE)
            raise InputError(f"explain takes the options that say how a text is read ({readable}), not "
                             f"{', '.join(others)}; drop {'it' if len(others) == 1 else 'them'}.")
        return self.stage_options(self.options(given), PRE)

    def read_texts(self, texts: list[str], options: dict[str, Any]) -> list:
        """The encodings a call reads of texts with `reading()`'s options, long_text="truncate" (a text_pair
        encoded after each text)."""
        pair = options["text_pair"] or None
        return self.encode_texts(texts, None if pair is None else [pair] * len(texts),
                                 **{k: options[k] for k in ("truncation", "max_length", "add_special_tokens",
                                                            "truncation_side")})

    def _explain_read(self, texts: list[str], scorer: attributions.Scorer, target: int | None,
                      options: dict[str, Any]) -> list[Attribution]:
        """Each text encoded as `preprocess` encodes it; the target by default the label of the pipeline's own
        answer (its forward: int8 or bf16 as it runs, though Integrated Gradients take fp32 gradients)."""
        pair = options["text_pair"] or None
        kept = self.read_texts(texts, options)
        whole = self.encode_texts(texts, None, truncation=False, add_special_tokens=options["add_special_tokens"])
        targets = [target] * len(texts) if target is not None else [
            int(np.argmax(row)) for row in self.forward([Item(e.ids, e.type_ids) for e in kept])]
        results = []
        for text, encoding, full, label in zip(texts, kept, whole, targets, strict=True):
            mine = [s == 0 and not m for s, m in zip(encoding.sequence_ids, encoding.special_tokens_mask,
                                                     strict=True)]
            results.append(attributions.attribute(
                text, encoding, scorer, target=label, id2label=self.config.id2label,
                uses_token_types=self.engine.uses_token_types,
                truncated=sum(mine) < len(full.ids) - sum(full.special_tokens_mask),
                fixed=None if pair is None else [not m for m in mine],
                extra=None if pair is None else {"text_pair": pair},
                word_ids=self.tokenizer.word_ids(encoding, text, pair)))
        return results

    def _explain_windows(self, texts: list[str], scorer: attributions.Scorer, target: int | None,
                         options: dict[str, Any]) -> list[Attribution]:
        """`long_text="chunk"`: each text's windows, the target by default the label of the mean of their logits
        through the pipeline's forward (the call's answer)."""
        windows, whole = self.split_texts(texts, options["max_length"], options["stride"],
                                          bool(options["text_pair"]), options["truncation_side"],
                                          options["add_special_tokens"])
        if target is None:
            answers = average_logits(self.forward(windows.items), windows.owners, len(texts))
        results = []
        for n, (text, encoding) in enumerate(zip(texts, whole, strict=True)):
            cuts = [cut for cut, owner in zip(windows.cuts, windows.owners, strict=True) if owner == n]
            results.append(attributions.attribute_windows(
                text, encoding, cuts, scorer, target=int(np.argmax(answers[n])) if target is None else target,
                id2label=self.config.id2label, uses_token_types=self.engine.uses_token_types,
                word_ids=self.tokenizer.word_ids(encoding, text, options["text_pair"] or None
                                                 if encoding.n_sequences == 2 else None)))
        return results

    def _split_inputs(self, inputs: Any) -> tuple[list[str], list[str | None] | None, bool]:
        """Plain texts, or {"text", "text_pair"} dicts for sentence-pair classifiers, or a list mixing them (as
        transformers takes each item alone). A pair that is None, missing or "" is no pair, as transformers'
        tokenizer encodes one text with `text_pair=""`. The pairs are None where no item has one."""
        if _has_dicts(inputs):
            rows = [inputs] if isinstance(inputs, dict) else inputs
            for i, r in enumerate(rows):
                if isinstance(r, dict) and "input_ids" in r:
                    raise InputError("the pipeline got a tokenizer's output (input_ids, attention_mask...); it takes "
                                     "the raw texts and tokenizes them itself: classifier(texts). To run the model "
                                     "on the ids yourself: classifier.model(**inputs).logits.")
                if isinstance(r, dict) and "text" not in r:
                    keys = ", ".join(repr(k) for k in list(r)[:4])
                    raise InputError(f"input {i} is a dict without a 'text' key (its keys: {keys}); text pairs are "
                                     "dicts with 'text' and 'text_pair' keys.")
            texts, _ = check_texts([r["text"] if isinstance(r, dict) else r for r in rows])
            given = [r.get("text_pair") if isinstance(r, dict) else None for r in rows]
            checked, _ = check_texts(["" if p is None else p for p in given], "text_pair")
            pairs = [p or None for p in checked] if any(checked) else None
            return texts, pairs, isinstance(inputs, dict)
        texts, single = check_texts(inputs)
        return texts, None, single
