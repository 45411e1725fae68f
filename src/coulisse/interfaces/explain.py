"""`coulisse explain`: the course notebook in one command — each stage titled, with its values.

Stages 1 (tokenizer) and 2 (encoder) are the same for every task; what follows the encoder is one
renderer per task in `STAGES`, the table `explain --task` offers. The CLI reads that table at start-up,
so this module imports numpy and torch only inside the renderers: `coulisse --help` stays light.

Every view, terminal and HTML, reads its input through `read_input`: the pipeline's own preprocess with the
pipeline's own options (`preprocessed`), so the tokens, ids, embedding and answer it shows are those `pipe(text)`
computes (a feature-extraction pipeline that pools none: pooling='auto''s embedding). Pair tasks show a text
pair in stage 1: question-answering the question and the context (TEXT), in the pipeline's order, its first
window; zero-shot-classification TEXT and the first label's hypothesis (every pair follows).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.formatting import count, one_line, printable, terminal_width, wrapped


@dataclass
class Encoded:
    """One text (or text pair) through stages 1 and 2."""

    text: str
    ids: list[int]
    tokens: list[str]
    hidden: Any  # torch.Tensor (T, H)
    logits: Any  # torch.Tensor: (labels,) for a sequence head, (T, ...) for a per-token head; None for a base
    read: Read  # the input as the pipeline read it: its options, its preprocess's batch


def packed(first: str, items: list[str], sep: str = "  ") -> str:
    """`items` on as few terminal lines as fit, never one cut in two; the lines after the first indented as
    far as `first`."""
    width, lines, line = terminal_width(), [], first
    for item in items:
        if line != first and len(line) + len(sep) + len(item) > width:
            lines.append(line)
            line = " " * len(first) + item
        else:
            line += (sep if line != first else "") + item
    return "\n".join([*lines, line])


def _title(n: int, name: str) -> str:
    return f"\n{n}. {name}\n" + "-" * (len(name) + 3)


def _row(name: str, values: list[int], pad: int = 14) -> str:
    """`name [1, 2, ...]`, the list wrapped to the terminal under its first value (a 512-id list is no one
    line)."""
    return wrapped(f"{name:<{pad}} {values}", indent=" " * (pad + 2))


def _vector(values, n: int = 6) -> str:
    import numpy as np

    return np.array2string(np.asarray(values)[:n], precision=4)


def check_request(task: str, question: str | None = None, labels: Any = None,
                  template: str | None = None) -> None:
    """What a pair task needs, and nothing a task cannot use: one-line InputErrors, before any loading."""
    if task == "question-answering" and not question:
        raise InputError("explain --task question-answering needs --question: TEXT is the context, the "
                         "question is asked about it.")
    if task == "zero-shot-classification" and not labels:
        raise InputError("explain --task zero-shot-classification needs --labels a,b,c: the candidate labels "
                         "(and --template 'This example is {}.' to word the hypotheses).")
    if question and task != "question-answering":
        raise InputError(f"--question is for --task question-answering, not {task}.")
    if (labels or template) and task != "zero-shot-classification":
        raise InputError(f"--labels and --template are for --task zero-shot-classification, not {task}.")


def explain_text(pipe, text: str, *, question: str | None = None, labels: Any = None,
                 template: str | None = None) -> str:
    render = STAGES.get(pipe.task)
    if render is None:
        raise InputError(f"coulisse explain has no stages for task {pipe.task!r}; it shows "
                         f"{', '.join(STAGES)}.")
    check_request(pipe.task, question, labels, template)
    seen = read_input(pipe, text, question=question, labels=labels, template=template)
    out, encoded = _tokenizer_and_encoder(pipe, seen)
    return "\n".join(out + render(pipe, encoded))


POOLED_TASKS = ("feature-extraction", "sparse-embedding")  # read as sentence-transformers folders say


@dataclass
class Read:
    """One input as `pipe(text)` reads it (`read_input`): what every view shows of it."""

    options: dict[str, Any]  # the call's options: the pipeline's own, under what the view adds
    batch: Any  # coulisse.tasks.base.Batch: the pipeline's preprocess of the input, with those options
    encoding: Any  # the shown item's encoding (offsets, specials): the first window, the first label's pair
    sequences: tuple[str, ...]  # the texts the encoding holds, in the model's order
    mine: int = 0  # which of them is the text (a pooled embedding's: prompted and lowercased, as read)
    limit: int = 0  # the tokens the pipeline's stage reads at most (a window's, for question-answering)
    cut: int = 0  # the text's tokens it leaves out (0 for question-answering: its windows read them all)
    side: str = "right"  # the end truncation cuts: "left" keeps the end of a text
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.sequences[self.mine]

    @property
    def pair(self) -> bool:
        return len(self.sequences) > 1


def preprocessed(pipe, inputs: Any, **given: Any):
    """The options of the call `pipe(inputs, **given)` (the pipeline's own, under `given`) and its preprocess
    of `inputs` with them: (options, batch). Every view reads its input here, so what it shows is what the
    call computes (STYLE 11: explain is an adapter over the pipeline's stages)."""
    from coulisse.tasks.base import PRE

    options = pipe.options(given)
    return options, pipe.preprocess(inputs, **pipe.stage_options(options, PRE))


def read_input(pipe, text: str, *, question: str | None = None, labels: Any = None, template: str | None = None,
               label: str | None = None) -> Read:
    """`text` as the pipeline reads it: its preprocess with its own options (`preprocessed`), and the encoding
    the views show. A question-answering context: its first window; zero-shot: the pair of `label` (default the
    first candidate); a feature-extraction pipeline that pools none: the sentence embedding of pooling='auto'."""
    from coulisse.tasks.question_answering import Example

    if pipe.task == "question-answering":
        options, batch = preprocessed(pipe, [Example(question, text)])
        sequences, mine = ((question, text), 1) if pipe.question_first else ((text, question), 0)
        limit = pipe.window_sizes(options["max_seq_len"], options["doc_stride"])[0]
        return Read(options, batch, batch.context[0].encoding, sequences, mine, limit)
    if pipe.task == "zero-shot-classification":
        options, batch = preprocessed(pipe, text, candidate_labels=labels, hypothesis_template=template)
        template, label = options["hypothesis_template"], label or options["candidate_labels"][0]
        encoding = pipe.encode_pairs([text], [label], template)[0]  # the pairs' encoder, as preprocess calls it
        seen = Read(options, batch, encoding, (text, template.format(label)), 0, pipe.tokenizer.model_max_length)
    elif pipe.task == "text-classification":
        options, batch = preprocessed(pipe, text)
        seen = _classification_read(pipe, text, options, batch)
    else:
        pools = pipe.task == "feature-extraction" and pipe.options({})["pooling"] is None
        try:
            with _quiet(pipe):
                options, batch = preprocessed(pipe, text, **({"pooling": "auto"} if pools else {}))
        except InputError as e:  # said of this text, in explain's words (preprocess numbers its own texts from 0)
            if pipe.task == "fill-mask" and "has no mask token" in str(e):
                raise InputError(f"{text!r} has no mask token ({pipe.tokenizer.special_tokens['mask']}) in the "
                                 "tokens the model reads; put one where a word is missing.") from None
            raise
        seen = _single_read(pipe, options, batch)
    seen.side = options.get("truncation_side") or pipe.tokenizer.truncation_side
    whole = pipe.tokenizer.encode_batch([seen.text], truncation=False, add_special_tokens=False)[0]
    kept = [s == seen.mine and not m for s, m in zip(seen.encoding.sequence_ids, seen.encoding.special_tokens_mask,
                                                    strict=True)]
    seen.cut = max(len(whole.ids) - sum(whole.special_tokens_mask) - sum(kept), 0)
    return seen


@contextmanager
def _quiet(pipe):
    """Token classification's "truncated; pass stride=N" warning is not said where explain reads a long text: its
    stages show the first window, and its entities read the whole text in windows (`entity_options`)."""
    if pipe.task != "token-classification":
        yield
        return
    logger = logging.getLogger(type(pipe).__module__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _classification_read(pipe, text: str, options: dict[str, Any], batch) -> Read:
    """text-classification's input as its call reads it (`truncation_side`, `max_length`, `text_pair`...). A text
    that `long_text="chunk"` reads in several windows has no one input to show: refused."""
    from coulisse.tasks.base import PRE

    reading = pipe.stage_options(options, PRE)
    if batch.owners is not None and len(batch.items) > 1:
        raise InputError(f"this pipeline reads the text in {len(batch.items)} windows (long_text='chunk'), and "
                         "explain shows one input's tokens and attention; build it with long_text='truncate' to see "
                         "them, or call pipe.explain(text) for the words' scores over every window.")
    encoding = pipe.read_texts([text], {**reading, "long_text": "truncate"})[0]
    if encoding.ids != batch.items[0].ids:
        raise RuntimeError("explain read other ids than the pipeline's preprocess; this is a bug.")
    pair = reading["text_pair"] or None
    limit = pipe.cap_length(reading["max_length"]) or pipe.tokenizer.model_max_length
    return Read(options, batch, encoding, (text,) if pair is None else (text, pair), 0, limit)


def _single_read(pipe, options: dict[str, Any], batch) -> Read:
    """A text read alone (fill-mask, token-classification, a pooled embedding): the text as the stage read it
    (a folder's prompt before it, lowercased where it says so), the tokens the stage keeps, and what to say of
    them."""
    tok, read, ids = pipe.tokenizer, batch.inputs[0], batch.items[0].ids
    asked = options.get("tokenize_kwargs") or options.get("tokenizer_kwargs") or {}
    sentence = batch.context if pipe.task in POOLED_TASKS else None  # the folder's settings, as the stage read them
    max_length = asked.get("max_length") or (sentence.max_seq_length if sentence is not None else None)
    limit = pipe.cap_length(max_length) or tok.model_max_length
    if pipe.task == "token-classification":
        encoding = batch.context[0][0]  # the text's first window, as the stage encoded it
    else:  # the stage hands ids only: the same cut again, for the offsets, checked against them
        specials = asked.get("add_special_tokens", True)
        encoding = tok.encode_batch([read], max_length=len(ids), add_special_tokens=specials,
                                    direction=options.get("truncation_side"))[0]
    if encoding.ids != ids:
        raise RuntimeError("explain read other ids than the pipeline's preprocess; this is a bug.")
    seen = Read(options, batch, encoding, (read,), 0, limit)
    if sentence is None:
        return seen
    if prompt := pipe.prompt_text(options.get("pooling", "auto"), options["prompt_name"], options["prompt"]):
        seen.notes.append(f"The folder's default prompt {prompt!r} comes before the text, as sentence-transformers' "
                          "encode puts it." if options["prompt"] is None and options["prompt_name"] is None else
                          f"The prompt {prompt!r} comes before the text.")
    if sentence.lowercase:
        seen.notes.append("The folder lowercases the text first (do_lower_case).")
    if asked.get("max_length") is None and sentence.max_seq_length and limit < tok.model_max_length:
        seen.notes.append(f"The folder's max_seq_length cuts the input at {limit} tokens (the tokenizer's limit is "
                          f"{tok.model_max_length}).")
    return seen


def read_as(pipe, text: str) -> tuple[str, int, list[str]]:
    """What the model reads of `text` (a pooled embedding's prompted, lowercased text), the tokens the pipeline
    reads at most, and what to say of it: `read_input`'s, for a task that reads a text alone."""
    if pipe.task in ("question-answering", "zero-shot-classification"):
        return text, pipe.tokenizer.model_max_length, []
    seen = read_input(pipe, text)
    return seen.text, seen.limit, seen.notes


def _model_inputs(pipe, rows: list, types: list | None = None):
    """The notebook's `inputs` for `model(**inputs)`: the pipeline's ids, padded (`tokenizer.pad`, as
    DataCollatorWithPadding pads them), with token types where the model reads them."""
    tok = pipe.tokenizer
    features = {"input_ids": rows}
    if types is not None and "token_type_ids" in tok.model_input_names:
        features["token_type_ids"] = types
    return tok.pad(features, padding=True, return_tensors="pt")


def _tokenizer_and_encoder(pipe, seen: Read) -> tuple[list[str], Encoded]:
    cfg, tok, model, encoding = pipe.config, pipe.tokenizer, pipe.model, seen.encoding
    ids = list(encoding.ids)
    inputs = _model_inputs(pipe, [ids], [list(encoding.type_ids)])
    tokens = tok.convert_ids_to_tokens(ids)
    name, folder = pipe.checkpoint.name, pipe.checkpoint.directory
    same = Path(name).expanduser().resolve() == Path(folder).resolve()  # a folder given: its path once
    out = [wrapped(f"Model: {name}  ({cfg.model_type}{'' if same else f', folder {folder}'})", indent="  ")]

    out.append(_title(1, "Tokenizer: text pair -> tokens -> ids" if seen.pair else
                      "Tokenizer: text -> tokens -> ids"))
    cut = ("windows of" if pipe.task == "question-answering" else "truncation at")
    out.append(wrapped(f"source: {tok.source}, vocabulary {len(tok)}, {cut} {seen.limit} tokens", indent="  "))
    out += [wrapped(note, indent="  ") for note in seen.notes]
    width = max(len(t) for t in tokens)
    if not seen.pair:
        out += [f"  {i:>3}  {t:<{width}}  {n:>6}" for i, (t, n) in enumerate(zip(tokens, ids, strict=True))]
    else:
        first, second = seen.sequences
        out.append(f"sequence A {one_line(first, 64)!r}\nsequence B {one_line(second, 64)!r}\n"
                   "(seq: A, B, or - for special tokens)")
        seqs = ["-" if s is None else "AB"[s] for s in encoding.sequence_ids]
        out += [f"  {i:>3}  {s}  {t:<{width}}  {n:>6}"
                for i, (s, t, n) in enumerate(zip(seqs, tokens, ids, strict=True))]
    out.append(_row("input_ids", ids))
    if seen.pair and "token_type_ids" in inputs:
        out.append(_row("token_type_ids", inputs["token_type_ids"][0].tolist()))
    out.append(_row("attention_mask", inputs["attention_mask"][0].tolist()))
    out.append(wrapped("(attention_mask: 1 for a token the model reads, 0 for padding; one text alone needs no "
                       "padding: give several texts to see a padded batch)"))
    out += _truncation_note(seen)
    out += _token_notes(pipe, encoding, seen.sequences)

    # The notebook's call; stage 2 (the encoder's hidden states) and the head's logits apart.
    output = model(**inputs, output_hidden_states=True)
    hidden = output.last_hidden_state[0]  # (T, H): one text, no padding
    logits = getattr(output, "logits", None)  # a base model has none
    logits = None if logits is None else logits[0]
    out.append(_title(2, "Encoder: ids -> hidden states"))
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    out.append(f"{layers} layer{'s' * (layers != 1)}, hidden size {cfg.hidden_size}, "
               f"{heads} attention head{'s' * (heads != 1)}")
    out.append(f"last_hidden_state shape: (batch=1, sequence={hidden.shape[0]}, hidden={hidden.shape[1]})")
    out.append(wrapped(f"first token's vector starts {_vector(hidden[0].numpy())}", indent="  "))
    return out, Encoded(seen.text, ids, tokens, hidden, logits, seen)


# The tasks whose texts go in alone (not as pairs): their batch is the course's padded one.
BATCH_TASKS = ("text-classification", "feature-extraction", "token-classification", "fill-mask")


def batch_lines(pipe, texts: list[str]) -> list[str]:
    """The course's batch: several texts padded to one length, each read as the pipeline reads it (the ids of
    its stages above), and what the mask does with the padding."""
    tok = pipe.tokenizer
    title = f"Batch: the {len(texts)} texts together, padded to one length"
    if tok.pad_token_id is None:  # tokenizer(texts, padding=True) is refused, here as in transformers
        return ["\n" + title + "\n" + "-" * len(title),
                wrapped("This tokenizer has no pad token, so its texts cannot be padded to one batch (transformers "
                        "refuses padding=True too): each text above ran alone.", indent="  ")]
    encodings = [read_input(pipe, text).encoding for text in texts]
    inputs = _model_inputs(pipe, [list(e.ids) for e in encodings], [list(e.type_ids) for e in encodings])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    out = ["\n" + title + "\n" + "-" * len(title),
           wrapped(f"input_ids shape {tuple(ids.shape)} (texts x tokens): each text's ids above, padded as "
                   "tokenizer(texts, padding=True, truncation=True, return_tensors=\"pt\") pads them",
                   indent="  ")]
    out += [_row(f"input_ids[{i}]", row, 17) for i, row in enumerate(ids.tolist())]
    out += [_row(f"attention_mask[{i}]", row, 17) for i, row in enumerate(mask.tolist())]
    pads = int((mask == 0).sum())
    out.append(wrapped(f"The shorter texts are filled with the pad token {tok.pad_token!r} (id {tok.pad_token_id}) "
                       f"up to the longest: {pads} pad position{'s' * (pads != 1)} here. Their attention_mask is 0, "
                       "so no token attends to them, and each text's results are those it gets alone, above."))
    if pipe.task == "text-classification":
        import numpy as np

        logits = pipe.model(**inputs).logits.float().numpy()
        out.append(f"model(**inputs).logits, shape {logits.shape}:")
        out += [f"  {np.array2string(row, precision=4)}" for row in logits]
    return out


def _token_notes(pipe, encoding, texts: tuple[str, str | None]) -> list[str]:
    """Point out to a learner the tokens that do not read as the text: an unknown token, and what it stands for
    (an emoji, a script the vocabulary lacks: every such piece is the same id to the model), and a mask token
    given to a task that does not fill it."""
    tok, notes = pipe.tokenizer, []
    unknown: dict[str, list[int]] = {}
    for i, (n, seq, (start, end)) in enumerate(zip(encoding.ids, encoding.sequence_ids, encoding.offsets,
                                                   strict=True)):
        if n == tok.unk_token_id and seq is not None and texts[seq] is not None:
            unknown.setdefault(texts[seq][start:end], []).append(i)
    if unknown:
        said = ", ".join(f"{piece!r} (token {', '.join(map(str, at))})" for piece, at in unknown.items())
        notes.append(f"{tok.convert_ids_to_tokens(tok.unk_token_id)} stands for {said}: characters this vocabulary "
                     "does not hold. The model reads the same unknown id for any such piece: it sees that "
                     "something is there, not what.")
    masks = [i for i, n in enumerate(encoding.ids) if n == tok.mask_token_id]
    if masks and pipe.task != "fill-mask":
        notes.append(f"{tok.special_tokens['mask']} (token {', '.join(map(str, masks))}) is the mask token, which "
                     f"fill-mask fills; {pipe.task} reads it as one more token, not as a word left out.")
    return [wrapped(note) for note in notes]


def _truncation_note(seen: Read) -> list[str]:
    """Say it when truncation cut the text: the stages below see only the kept tokens."""
    if not seen.cut:
        return []
    kept = len(seen.encoding.ids)
    return [wrapped(f"truncated: the text has {kept + seen.cut} tokens and the model reads {kept} (special tokens "
                    f"included); the {'first' if seen.side == 'left' else 'last'} {seen.cut} are cut and play no "
                    "part below (the studio's long-text modes read all of them).")]


def _classification(pipe, e: Encoded) -> list[str]:
    import numpy as np

    from coulisse.tasks.text_classification import apply_function

    cfg = pipe.config
    logits = e.logits.float().numpy()
    function = e.read.options["function_to_apply"]
    scores = apply_function(logits, function)
    # ModernBERT's `classifier_pooling: mean` heads read the mean of the token vectors, the others the first token
    reads = "mean of the token vectors" if getattr(pipe.model.head, "pools", False) else "first token"
    out = [_title(3, f"Head: {reads} -> logits")]
    out.append(wrapped(f"logits {np.array2string(logits, precision=4)}  (raw scores, one per label)", indent="  "))
    out.append(_title(4, f"Post-processing: {function} -> probabilities -> label"))
    out.append(wrapped(f"id2label {cfg.id2label}", indent="  "))
    out += [f"  {cfg.id2label[i]:<12} {s:.4f}" for i, s in enumerate(scores)]
    answer = pipe.postprocess(logits, function_to_apply=function)
    out.append(f"\nAnswer: {answer['label']} ({answer['score']:.4f})")
    return out


def sentence_embedding(pipe, text: str, tokens: int | None = None, seen: Read | None = None):
    """The pipeline's sentence embedding of `text` (with its pooling, else pooling='auto'), and how it was pooled,
    in words (`tokens`: the count to name in them); `seen`: the text as `read_input` read it already."""
    import numpy as np

    seen = seen or read_input(pipe, text)
    batch, pooling = seen.batch, seen.options["pooling"]
    config = batch.context  # the folder's sentence-transformers settings (pooling, Normalize, length, case)
    vector = np.asarray(pipe.postprocess(pipe.forward(batch), batch), dtype=np.float32)
    found = (pipe.checkpoint.directory / "modules.json").is_file()
    how = "the folder's sentence-transformers modules" if found else "no sentence-transformers config: mean"
    many = "the" if tokens is None else f"the {tokens}"
    what = f"the mean of {many} token vectors" if config.pooling == "mean" else "the first token's vector"
    then = ", divided by its L2 norm" if config.normalize else ""
    return vector, f"pooling={pooling!r}{f' ({how})' if pooling == 'auto' else ''}: {what}{then}"


def _embedding(pipe, e: Encoded) -> list[str]:
    import numpy as np

    vector, how = sentence_embedding(pipe, e.text, len(e.ids), e.read)
    out = [_title(3, "Pooling: hidden states -> one sentence embedding")]
    out.append(wrapped(how, indent="  "))
    out.append(wrapped(f"embedding shape ({len(vector)},), norm {float(np.linalg.norm(vector)):.4f}, "
                       f"starts {_vector(vector)}", indent="  "))
    return out


def _entities(pipe, e: Encoded) -> list[str]:
    from coulisse.tasks.functional import softmax

    cfg = pipe.config
    logits = e.logits.float().numpy()  # (T, labels)
    scores = softmax(logits)
    out = [_title(3, "Head: every token -> logits")]
    out.append(wrapped(f"logits shape ({count(logits.shape[0], 'token')}, {count(logits.shape[1], 'label')}), "
                       f"id2label {cfg.id2label}", indent="  "))
    out.append(_title(4, "Post-processing: softmax per token -> label -> entities"))
    width = max(len(t) for t in e.tokens)
    out += [f"  {i:>3}  {t:<{width}}  {cfg.id2label[int(s.argmax())]:<10} {s.max():.4f}"
            for i, (t, s) in enumerate(zip(e.tokens, scores, strict=True))]
    given = entity_options(pipe, e.read)
    grouped = f"aggregation_strategy={given.get('aggregation_strategy', e.read.options['aggregation_strategy'])!r}"
    if len(e.read.batch.items) > 1 or "stride" in given:  # the whole text, in windows (`coulisse ner`'s, or the
        entities = pipe(e.text, **given)  # pipeline's own stride), as the --html page reads it
        stride = given.get("stride", e.read.options["stride"])
        out.append("\n" + wrapped(f"Entities of the whole text, read in windows of {len(e.ids)} tokens sharing "
                                  f"{stride}{' as `coulisse ner` reads it' * ('stride' in given)} (the tokens above "
                                  f"are the first window's; {grouped}, special tokens and 'O' dropped):"))
    else:
        from coulisse.tasks.base import POST

        entities = pipe.postprocess([logits], e.read.batch, **pipe.stage_options(pipe.options(given), POST))
        out.append(f"\nEntities ({grouped}, special tokens and 'O' dropped):")
    out += [f"  {x['entity_group']:<10} {x['score']:.4f}  [{x['start']}:{x['end']}]  {x['word']!r}"
            for x in entities] or ["  (none)"]
    return out


def _fill_mask(pipe, e: Encoded) -> list[str]:
    import numpy as np

    rows = np.asarray(e.ids) == pipe.tokenizer.mask_token_id
    if not rows.any():
        raise InputError(f"{e.text!r} has no mask token ({pipe.tokenizer.special_tokens['mask']}); put one "
                         "where a word is missing.")
    logits = e.logits.float().numpy()[rows]  # (masks, vocab)
    out = [_title(3, "Head: masked positions -> vocabulary logits")]
    out.append(wrapped(f"logits shape ({logits.shape[0]} masked of {len(e.ids)} tokens, vocabulary "
                       f"{logits.shape[1]}): only masked positions are projected"))
    out.append(_title(4, "Post-processing: softmax over the vocabulary -> top 5 tokens"))
    from coulisse.tasks.base import POST

    results = pipe.postprocess([logits], e.read.batch, **pipe.stage_options(pipe.options({"top_k": 5}), POST))
    for n, proposals in enumerate([results] if isinstance(results[0], dict) else results, 1):
        out.append(f"mask {n}:")
        out += [f"  {p['score']:.4f}  {p['token_str']!r:<16} {p['sequence']}" for p in proposals]
    return out


def activation_words(head) -> str:
    """A SPLADE head's activation, as a formula."""
    return "log(1 + log(1 + ReLU(logit)))" if head.activation == "log1p_relu" else "log(1 + ReLU(logit))"


def _sparse(pipe, e: Encoded, shown: int = 10) -> list[str]:
    """SPLADE: the masked-LM head on every token, then log(1 + ReLU) pooled over the tokens; each heavy entry
    with the token it comes from, and whether the text holds it (an expansion when it does not)."""
    import torch

    head = pipe.model.head
    with torch.inference_mode():
        weights = head.token_weights(e.hidden)  # (T, vocab): the model's own stage, before pooling
        pooled = head.pool(weights)
    entries = pipe.postprocess(pooled.numpy(), top_k=e.read.options["top_k"])
    vocab = weights.shape[1]
    out = [_title(3, "Head: every token -> vocabulary logits")]
    out.append(wrapped(f"the masked-LM head on all {count(len(e.ids), 'token')}: logits shape "
                       f"({len(e.ids)}, {vocab}), as fill-mask would give for each position"))
    out.append(_title(4, f"Pooling: {activation_words(head)}, {head.strategy} over the tokens -> one weight per "
                         "entry"))
    out.append(wrapped(f"{len(entries):,} of {vocab:,} entries active ({1 - len(entries) / vocab:.1%} zeros); "
                       f"the {min(shown, len(entries))} heaviest (* : not in the text, an expansion):", indent="  "))
    width = max([len(printable(str(x["token"]))) for x in entries[:shown]] or [1])
    source = weights.argmax(0)
    present = set(e.ids)
    for x in entries[:shown]:
        mark = " " if x["index"] in present else "*"
        line = f"  {x['value']:.4f}  {printable(str(x['token'])):<{width}} {mark}"
        if head.strategy == "max":
            at = int(source[x["index"]])
            line += f"  from token {at} {e.tokens[at]!r}"
        out.append(line)
    return out


def _question_answering(pipe, e: Encoded) -> list[str]:
    import numpy as np

    from coulisse.tasks.base import POST
    from coulisse.tasks.question_answering import NULL_SCORE, char_span, select_starts_ends

    options, batch = e.read.options, e.read.batch
    example, windows = batch.inputs[0], batch.context
    max_seq_len, doc_stride = pipe.window_sizes(options["max_seq_len"], options["doc_stride"])
    out = [_title(3, "Head: every token -> start and end logits")]
    if [w.encoding.ids for w in windows] == [e.ids]:
        logits = [e.logits.float().numpy()]  # (T, 2)
    else:  # a long context: the pipeline reads it in windows, and so does what follows
        logits = pipe.forward(batch)
        out.append(f"the pipeline cuts this context into {count(len(windows), 'window')} of at most {max_seq_len} "
                   f"tokens sharing {doc_stride}: what follows reads each of them (stages 1-2 showed the first)")
    post = pipe.stage_options(options, POST)
    spans = []
    for n, (window, lg) in enumerate(zip(windows, logits, strict=True), 1):
        tokens, allowed = window.encoding.tokens, np.flatnonzero(window.p_mask == 0)
        if len(windows) > 1:
            out.append(f"window {n}:")
        out.append(wrapped(f"logits shape ({lg.shape[0]} tokens, 2): a start and an end logit per token; "
                           f"{len(allowed)} may bound the answer (the context's tokens, and the first for 'no "
                           "answer')"))
        for name, col in (("start", 0), ("end", 1)):
            top = allowed[np.argsort(-lg[allowed, col], kind="stable")][:5]
            out.append(packed(f"  top {name:<5} ", [f"{i}:{tokens[i]!r} {lg[i, col]:.4f}" for i in top]))
        starts, ends, scores, _ = select_starts_ends(lg[:, 0], lg[:, 1], window.p_mask, NULL_SCORE, 1,
                                                     post["handle_impossible_answer"], post["max_answer_len"])
        spans.append((n, window, starts, ends, scores))

    out.append(_title(4, "Post-processing: softmax of starts and ends -> best span -> answer"))
    rule = (f"span score = p(start) x p(end), end >= start, at most {post['max_answer_len']} tokens")
    if post["align_to_words"]:  # as transformers 4: example_answers
        rule += ("; each span is widened to whole words of the context, and the spans that widen to the same text "
                 "(in any window, any case) add their scores: the answer is the best sum, which can be another "
                 "span than a window's best one")
    out.append(wrapped(rule))
    sequence_index = 1 if pipe.question_first else 0
    for n, window, starts, ends, scores in spans:
        where = f"window {n}: " if len(windows) > 1 else ""
        if not len(starts):
            out.append(f"{where}no span")
            continue
        s, t = int(starts[0]), int(ends[0])
        start, end = char_span(window.encoding, s, t, sequence_index, post["align_to_words"])
        out.append(wrapped(f"{where}best span tokens {s}..{t} {window.encoding.tokens[s:t + 1]}, score "
                           f"{float(scores[0]):.4f}, characters [{start}:{end}] {example.context[start:end]!r}",
                           indent="  "))
    answer = pipe.postprocess(logits, batch, **post)
    answer = answer[0] if isinstance(answer, list) and answer else answer
    if not answer:
        return [*out, "\nAnswer: (none)"]
    best = [(example.context[slice(*char_span(w.encoding, int(st[0]), int(en[0]), sequence_index,
                                              post["align_to_words"]))], float(sc[0]))
            for _, w, st, en, sc in spans if len(st)]
    if answer["answer"] and (answer["answer"], answer["score"]) not in best:
        out.append(wrapped(f"The answer is not a window's best span: the spans that read {answer['answer']!r} add "
                           f"up to {answer['score']:.4f}, more than any other text's spans."))
    return [*out, "\n" + wrapped(f"Answer: {answer['answer']!r} ({answer['score']:.4f}, characters "
                                 f"[{answer['start']}:{answer['end']}])", indent="  ")]


def zero_shot_words(multi_label: bool, labels: int) -> str:
    """Zero-shot's post-processing in words (`coulisse.tasks.zero_shot.zero_shot_scores`)."""
    if multi_label or labels == 1:
        return "softmax of (contradiction, entailment) per label"
    return "softmax of the entailment logits across labels"


def _zero_shot(pipe, e: Encoded) -> list[str]:
    import numpy as np

    from coulisse.tasks.zero_shot import zero_shot_scores

    options, batch = e.read.options, e.read.batch
    labels, template, multi_label = batch.context, options["hypothesis_template"], options["multi_label"]
    encodings = batch.items
    outputs = pipe.forward(batch)
    logits = np.stack(outputs)  # (labels, NLI classes)
    ent, con = pipe.entailment_id, pipe.contradiction_id
    id2label = pipe.config.id2label
    width = max(len(label) for label in labels)
    out = [_title(3, "Hypotheses: one (text, hypothesis) pair per label")]
    out.append(f"template {template!r}; stages 1-2 showed the first pair")
    out += [f"  {label:<{width}}  {template.format(label)!r}  ({len(x.ids)} tokens)"
            for label, x in zip(labels, encodings, strict=True)]
    out.append(_title(4, "Head: each pair -> NLI logits"))
    out.append(wrapped(f"id2label {id2label}: entailment is id {ent}, contradiction id {con}", indent="  "))
    entail, contra = f"entail[{ent}]", f"contra[{con}]"
    out.append(f"  {'label':<{width}}  {entail:>10}  {contra:>10}  all logits")
    out += [f"  {label:<{width}}  {row[ent]:>10.4f}  {row[con]:>10.4f}  {np.array2string(row, precision=4)}"
            for label, row in zip(labels, logits, strict=True)]
    how = zero_shot_words(multi_label, len(labels))
    out.append(_title(5, f"Post-processing: {how} -> ranking"))
    scores = zero_shot_scores(logits, ent, con, multi_label)
    out += [f"  {label:<{width}}  {s:.4f}" for label, s in zip(labels, scores, strict=True)]
    result = pipe.postprocess(outputs, batch, multi_label=multi_label)
    out.append("ranking: " + "  ".join(f"{label} {s:.4f}" for label, s in
                                       zip(result["labels"], result["scores"], strict=True)))
    out.append(f"\nAnswer: {result['labels'][0]} ({result['scores'][0]:.4f})")
    return out


# task -> what follows the encoder
STAGES = {
    "text-classification": _classification,
    "feature-extraction": _embedding,
    "token-classification": _entities,
    "fill-mask": _fill_mask,
    "question-answering": _question_answering,
    "zero-shot-classification": _zero_shot,
    "sparse-embedding": _sparse,
}


# -- attributions (the terminal) and the HTML report ----------------------------------------------------

ATTRIBUTION_METHODS = ("integrated_gradients", "occlusion")  # coulisse.tasks.attributions.METHODS, without torch
ATTRIBUTION_MAX_STEPS = 2**17  # coulisse.tasks.integrated_gradients.MAX_STEPS, without torch


ATTRIBUTION_TASKS = ("text-classification", "zero-shot-classification")


def check_attribution_request(task: str, method: str, steps: int | None, attributions: bool, html: bool = False,
                              target: str | None = None) -> None:
    """--attributions / --html and the options that score words (--method, --steps, --target), before any
    loading. --html writes a page for every task; it scores words where the task answers with a label."""
    if attributions and task not in ATTRIBUTION_TASKS:
        raise InputError(f"--attributions scores words for {' and '.join(ATTRIBUTION_TASKS)} models, not {task}; "
                         f"drop it: the stages show the {task} answer without it.")
    scoring = [name for name, given in (("--method", method != "integrated_gradients"), ("--steps", steps is not None),
                                        ("--target", target is not None)) if given]
    if not scoring:
        return
    verb = "chooses" if len(scoring) == 1 else "choose"
    if not (attributions or html):
        raise InputError(f"{' and '.join(scoring)} {verb} how --attributions, --html or --json score words; add "
                         "one of them.")
    if task not in ATTRIBUTION_TASKS:
        raise InputError(f"{' and '.join(scoring)} {verb} how words are scored, and {task} has no word scores "
                         f"(only {' and '.join(ATTRIBUTION_TASKS)}); drop {'it' if len(scoring) == 1 else 'them'}.")
    if method == "occlusion" and steps is not None:
        raise InputError(f"--steps {steps} is for --method integrated_gradients; occlusion runs one forward per "
                         "token. Drop --steps.")
    if steps is not None and steps > ATTRIBUTION_MAX_STEPS:
        raise InputError(f"--steps {steps} is above the maximum, {ATTRIBUTION_MAX_STEPS}; pass at most "
                         f"{ATTRIBUTION_MAX_STEPS} (the default, 32, is enough for smooth models, and kinks are "
                         "refined on their own).")


def cli_target(pipe, target: str | None, labels: Any = None) -> int | str | None:
    """--target: a label name, else a label id written as a number (zero-shot: a candidate label, or its
    index in --labels)."""
    if pipe.task == "zero-shot-classification":
        from coulisse.tasks.zero_shot import parse_labels

        names = parse_labels(labels)
    else:
        names = pipe.config.id2label.values()
    if target is None or target in names:
        return target
    return int(target) if target.isascii() and target.isdecimal() else target  # not '²' nor '٣'


def explain_options(pipe, labels: Any = None, template: str | None = None) -> dict[str, Any]:
    """What `pipe.explain` needs beyond the method: zero-shot's candidate labels and template."""
    if pipe.task != "zero-shot-classification":
        return {}
    return {"candidate_labels": labels, "hypothesis_template": template}


def use_color(stream) -> bool:
    """ANSI colours only on a terminal that shows them: never when NO_COLOR is set (https://no-color.org), nor on
    TERM=dumb (Emacs' shell, some CI logs)."""
    import os

    return (not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb" and hasattr(stream, "isatty")
            and stream.isatty())


def _ansi(word: str, value: float, scale: float) -> str:
    from coulisse.interfaces.report import diverging_rgb

    r, g, b = (round(c / 255 * 5) for c in diverging_rgb(value, scale))  # the xterm 6x6x6 colour cube
    ink = 231 if scale and abs(value) > 0.55 * scale else 16
    return f"\x1b[48;5;{16 + 36 * r + 6 * g + b}m\x1b[38;5;{ink}m{word}\x1b[0m"


def attribution_lines(a, color: bool, k: int = 5) -> list[str]:
    """One text's attributions for the terminal: the words coloured (blue towards the label, red against),
    then the top words each way; without colour, the top words only. Numbered after the task's stages
    (zero-shot has one more: its hypotheses)."""
    scale = max((abs(w.attribution) for w in a.words), default=0.0)
    target, hypothesis = a.target, a.extra.get("hypothesis")
    what = (f"the {a.extra.get('nli_label', 'entailment')} logit of the pair (text, {hypothesis!r})"
            if hypothesis is not None else f"the logit of {a.label}")
    if a.extra.get("windows", 1) > 1:
        what += f", the mean over the {a.extra['windows']} windows the text is read in"
    # the positions stay: transformers on the pad ids would renumber the RoBERTa family's (README)
    values = (f"F = {what}. F(x) = {a.logits[target]:+.4f} for this text, F(baseline) = "
              f"{a.baseline_logits[target]:+.4f} for the baseline, the same text with each word's vector replaced "
              f"by the {a.baseline} token's, positions kept.")
    if a.method == "integrated_gradients":
        said = [f"{values} The words' scores add up to F(x) - F(baseline) = {a.delta:+.4f}: how much the words "
                f"move F from that empty text (negative: the empty text scores it higher).",
                f"method: Integrated Gradients, {a.steps} gradient evaluations; completeness gap (sum of the scores "
                f"minus that difference) {a.gap:+.2e}"]
    else:  # occlusion has no completeness: each score is one word's leave-one-out difference
        said = [f"{values} A token's score is F(x) minus F with that token's vector alone replaced by the "
                f"{a.baseline} token's, a word's the sum of its tokens'. They add up to {sum(a.scores):+.4f}, not "
                f"to F(x) - F(baseline) = {a.delta:+.4f}: words act together, and occlusion does not share that out.",
                "method: occlusion (each token replaced by the baseline token alone)"]
    out = [_title(6 if hypothesis is not None else 5, f"Attributions: which words pushed towards {a.label}"),
           *(wrapped(line) for line in said)]
    if color:
        text, at, parts = a.text, 0, []
        for w in a.words:
            parts += [text[at:w.start], _ansi(w.text, w.attribution, scale)]
            at = w.end
        parts.append(text[at:])
        out.append("".join(parts))
        out.append("(blue: towards, red: against)")
    for sign, name in ((1, "towards"), (-1, "against")):
        out.append(f"top words {name} {a.label}:")
        out += [f"  {w.attribution:+.4f}  {w.text}" for w in a.top_words(k, sign)] or ["  (none)"]
    return out


def inspect_text(pipe, text: str, *, method: str = "integrated_gradients", steps: int | None = None,
                 target: int | str | None = None, question: str | None = None, labels: Any = None,
                 template: str | None = None):
    """What the HTML report shows for one text, for any task of `STAGES`: the tokens the model reads (and a
    text's truncated tail), hidden-state norms and attention probabilities from the pipeline's own model, the
    task's view of its answer (`coulisse.interfaces.report.HEADS`), and, for the tasks that answer with a
    label, the words' attributions. `question` (question-answering), `labels` and `template`
    (zero-shot-classification) as in `explain_text`."""
    import numpy as np

    from coulisse.interfaces.report import Inspection, TokenRow
    from coulisse.tasks.attributions import attention_rollout, weights_of

    if pipe.task not in STAGES:
        raise InputError(f"coulisse explain has no stages for task {pipe.task!r}; it shows {', '.join(STAGES)}.")
    check_request(pipe.task, question, labels, template)
    tok, attribution = pipe.tokenizer, None
    asked = {"question": question, "labels": labels, "template": template}
    # zero-shot shows the pair of the label its words are scored for; the others read first (a refusal comes
    # before the words are scored)
    seen = None if pipe.task == "zero-shot-classification" else read_input(pipe, text, **asked)
    if pipe.task in ATTRIBUTION_TASKS:
        attribution = pipe.explain(text, target=target, method=method, steps=steps,
                                   **explain_options(pipe, labels, template))
    if seen is None:
        seen = read_input(pipe, text, **asked, label=attribution.label)
    notes, kept = list(seen.notes), seen.encoding
    if attribution is not None and attribution.weights != (ran := weights_of(pipe.preparation)):
        notes.append(f"The answer and the attention come from the {ran} weights; Integrated Gradients need "
                     "gradients, taken on the fp32 weights of the same checkpoint.")
    if seen.cut and seen.side == "left":
        notes.append(f"The pipeline keeps the end of the text (truncation_side='left'): its first {seen.cut} "
                     "tokens are cut, unseen and unscored.")
    mine = seen.mine if seen.pair else None
    # The vocabulary's pieces (`<unk>` for what it lacks), as convert_ids_to_tokens and the terminal show them;
    # the encoding's own tokens would show the unknown characters as if they were a piece of the vocabulary.
    pieces = tok.convert_ids_to_tokens(kept.ids)
    scores = [None] * len(kept.ids)
    if attribution is not None:  # a pair's other text (zero-shot's hypothesis) is held, never scored: blank, not 0
        scores = [None if held and not special else score for score, held, special in
                  zip(attribution.scores, attribution.special, kept.special_tokens_mask, strict=True)]
    sequence_ids = kept.sequence_ids if seen.pair else [None] * len(kept.ids)
    rows = [TokenRow(t, i, bool(s), 1, o[0], o[1], score=score, sequence=q) for t, i, s, o, score, q in
            zip(pieces, kept.ids, kept.special_tokens_mask, kept.offsets, scores, sequence_ids, strict=True)]
    if seen.cut and seen.side == "right":  # the text's tail, unseen (a left cut is said in the notes)
        whole = tok.encode_batch([seen.text], truncation=False)[0]
        end = max((r.end for r in rows if not r.special and r.sequence == mine), default=0)
        rows += [TokenRow(t, i, False, None, o[0], o[1], truncated=True, sequence=mine) for t, i, s, o in
                 zip(tok.convert_ids_to_tokens(whole.ids), whole.ids, whole.special_tokens_mask, whole.offsets,
                     strict=True)
                 if not s and o[0] >= end]
    output, trace = _traced_forward(pipe, kept)
    attentions = np.stack([a[0].float().cpu().numpy() for a in trace.attentions])  # (layers, heads, T, T)
    norms = [float(h.float().norm(dim=-1).mean()) for h in trace.hidden_states]
    head = HEAD_VIEWS[pipe.task](pipe, text, seen=seen, output=output, trace=trace, **asked, notes=notes)
    # The rows' offsets index what the model reads: the text, or (a pooled embedding) the prompted text.
    return Inspection(seen.text, pipe.checkpoint.name, pipe.task, rows, pipe.config.hidden_size, norms, attentions,
                      attention_rollout(attentions), head, attribution, notes, seen.sequences if seen.pair else (),
                      mine, pipe_language(pipe))


def pipe_language(pipe) -> str | None:
    """The one language the model declares (config, model card) or its family implies (CamemBERT: French): the
    pages mark its texts in it."""
    from coulisse.tasks.zero_shot import model_language

    return model_language(pipe.config.raw, pipe.config.model_type, pipe.checkpoint.model_dir)


def _traced_forward(pipe, kept):
    """The pipeline's own (prepared) model, int8 included, on one encoding: its output and what each layer
    held and attended to."""
    import torch

    from coulisse.models import Packed, Trace

    types = [list(kept.type_ids)] if pipe.engine.uses_token_types else None
    trace = Trace()
    with torch.inference_mode():
        output = pipe.model.forward_packed(Packed.from_lists([kept.ids], types, pipe.config.position_offset,
                                                             pipe.device), trace=trace)
    return output, trace


def head_view(pipe, text: str, *, question: str | None = None, labels: Any = None, template: str | None = None):
    """The task's view of its answer alone (`HEAD_VIEWS`: what `inspect_text` shows after the encoder), without
    the attention maps or the words' attributions: what the studio sets beside the detailed weights' answer."""
    if pipe.task not in HEAD_VIEWS:
        raise InputError(f"coulisse explain has no stages for task {pipe.task!r}; it shows {', '.join(STAGES)}.")
    check_request(pipe.task, question, labels, template)
    asked = {"question": question, "labels": labels, "template": template}
    seen, output, trace = read_input(pipe, text, **asked), None, None
    if pipe.task in ("token-classification", "sparse-embedding"):  # their views read the model's own output
        output, trace = _traced_forward(pipe, seen.encoding)
    return HEAD_VIEWS[pipe.task](pipe, text, seen=seen, output=output, trace=trace, **asked, notes=[])


def _classified(pipe, text: str, *, seen: Read, **_):
    import numpy as np

    from coulisse.interfaces.report import Classified
    from coulisse.tasks.text_classification import apply_function

    function = seen.options["function_to_apply"]
    logits = np.asarray(pipe.forward(seen.batch.items)[0], dtype=np.float32)
    return Classified(logits.tolist(), apply_function(logits, function).tolist(), function,
                      dict(pipe.config.id2label), pipe.postprocess(logits, function_to_apply=function))


def _ranked(pipe, text: str, *, seen: Read, **_):
    import numpy as np

    from coulisse.interfaces.report import Ranked
    from coulisse.tasks.zero_shot import zero_shot_scores

    batch, template, multi_label = seen.batch, seen.options["hypothesis_template"], seen.options["multi_label"]
    candidates = batch.context
    outputs = pipe.forward(batch)
    logits = np.stack(outputs)  # (labels, NLI classes)
    ent, con = pipe.entailment_id, pipe.contradiction_id
    how = "a " + zero_shot_words(multi_label, len(candidates))
    scores = zero_shot_scores(logits, ent, con, multi_label)
    return Ranked(list(candidates), [template.format(label) for label in candidates], logits.tolist(), ent, con,
                  dict(pipe.config.id2label), how, [float(s) for s in scores],
                  pipe.postprocess(outputs, batch, multi_label=multi_label))


def entity_options(pipe, seen: Read) -> dict[str, Any]:
    """What explain's entities add to the pipeline's own options: words grouped ('simple', where the pipeline
    groups none), and a text longer than the model reads read whole, in windows sharing a quarter of one as
    `coulisse ner` reads it, where the pipeline sets no stride of its own."""
    given: dict[str, Any] = {}
    if seen.options["aggregation_strategy"] == "none":
        given["aggregation_strategy"] = "simple"
    if seen.cut and seen.options["stride"] is None:
        given["stride"] = pipe.tokenizer.model_max_length // 4
    return given


def _tagged(pipe, text: str, *, seen: Read, output, notes: list[str], **_):
    from coulisse.interfaces.report import Tagged
    from coulisse.tasks.functional import softmax

    probabilities = softmax(output.float().cpu().numpy())  # (T, labels)
    id2label = pipe.config.id2label
    labels = [(id2label[int(row.argmax())], float(row.max())) for row in probabilities]
    given = entity_options(pipe, seen)
    if seen.cut:  # the whole text, in windows
        how = "as `coulisse ner` reads it" if "stride" in given else "the pipeline's stride"
        notes.append(f"The text is longer than the model's {pipe.tokenizer.model_max_length} tokens: the entities "
                     f"come from windows sharing {given.get('stride', seen.options['stride'])} tokens, {how}; the "
                     "token views show the first window.")
    return Tagged(labels, pipe(text, **given))


def _filled(pipe, text: str, *, seen: Read, **_):
    from coulisse.interfaces.report import Filled

    if pipe.tokenizer.mask_token_id not in seen.encoding.ids:
        raise InputError(f"{text!r} has no mask token ({pipe.tokenizer.special_tokens['mask']}) in the tokens the "
                         "model reads; put one where a word is missing.")
    results = pipe(text, top_k=5)
    return Filled([results] if isinstance(results[0], dict) else results, pipe.config.vocab_size)


def _answered(pipe, text: str, *, seen: Read, question: str, notes: list[str], **_):
    import numpy as np

    from coulisse.interfaces.report import Answered, Window
    from coulisse.tasks.base import POST
    from coulisse.tasks.functional import softmax
    from coulisse.tasks.question_answering import NULL_SCORE, select_starts_ends

    options, batch = seen.options, seen.batch
    logits = pipe.forward(batch)
    post = pipe.stage_options(options, POST)
    shown = []
    for window, lg in zip(batch.context, logits, strict=True):
        allowed = np.flatnonzero(window.p_mask == 0)
        top = {}
        for col in (0, 1):
            p = softmax(lg[allowed, col])  # over the tokens allowed to bound an answer
            order = np.argsort(-p, kind="stable")[:5]
            top[col] = [(int(allowed[i]), float(p[i])) for i in order]
        starts, ends, scores, _ = select_starts_ends(lg[:, 0], lg[:, 1], window.p_mask, NULL_SCORE, 1,
                                                     post["handle_impossible_answer"], post["max_answer_len"])
        best = (int(starts[0]), int(ends[0]), float(scores[0])) if len(starts) else None
        shown.append(Window(list(window.encoding.tokens), top[0], top[1], best))
    if len(shown) > 1:
        notes.append(f"The context is longer than one window: the pipeline reads it in {len(shown)} windows; the "
                     "token and attention views show the first.")
    answer = pipe.postprocess(logits, batch, **post)
    answer = answer[0] if isinstance(answer, list) and answer else answer
    return Answered(question, text, shown, answer or None)


def _pooled(pipe, text: str, *, seen: Read, **_):
    from coulisse.interfaces.report import Pooled

    vector, how = sentence_embedding(pipe, text, seen=seen)
    return Pooled(how, vector.tolist())


def _expanded(pipe, text: str, *, seen: Read, trace, shown: int = 20, **_):
    import torch

    from coulisse.interfaces.report import Expanded

    head = pipe.model.head
    with torch.inference_mode():
        weights = head.token_weights(trace.hidden_states[-1])  # (T, vocab): the model's stage before pooling
    source = weights.argmax(0)
    entries = pipe(text)
    present = set(seen.encoding.ids)
    return Expanded(activation_words(head), head.strategy, int(weights.shape[1]), len(entries),
                    [(str(x["token"]), float(x["value"]), x["index"] in present,
                      int(source[x["index"]]) if head.strategy == "max" else None) for x in entries[:shown]])


# task -> what the HTML report shows after the encoder (the report's view of the answer)
HEAD_VIEWS = {
    "text-classification": _classified,
    "feature-extraction": _pooled,
    "token-classification": _tagged,
    "fill-mask": _filled,
    "question-answering": _answered,
    "zero-shot-classification": _ranked,
    "sparse-embedding": _expanded,
}


def report(pipe, texts: str | list[str], *, question: str | None = None, labels: Any = None,
           template: str | None = None, method: str = "integrated_gradients", steps: int | None = None,
           target: int | str | None = None):
    """The page of `coulisse explain --html` for `texts` (a text or a list), as a `Report`: `.save(path)`
    writes it, and a notebook shows it inline. `question` (question-answering), `labels` and `template`
    (zero-shot-classification) as in `coulisse explain`; `method`, `steps` and `target` choose how the words are
    scored, for the tasks that answer with a label (text-classification, zero-shot-classification).

        >>> from coulisse import pipeline
        >>> from coulisse.explain import report
        >>> classifier = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
        >>> report(classifier, ["Un film excellent.", "Quel navet !"]).save("report.html")
    """
    from coulisse.interfaces.report import Report
    from coulisse.tokenizer.tokenizer import check_texts

    texts, _ = check_texts(texts if isinstance(texts, str) else list(texts), "texts")  # a NaN named, with its row
    if (blank := next((i for i, t in enumerate(texts) if not t.strip()), None)) is not None:
        raise InputError(f"texts[{blank}] is {'empty' if not texts[blank] else 'only spaces'}; report() explains "
                         "texts with words: drop it.")
    if pipe.task not in ATTRIBUTION_TASKS and (method != "integrated_gradients" or steps is not None
                                               or target is not None):
        raise InputError(f"method, steps and target choose how words are scored, and {pipe.task} has no word scores "
                         f"(only {' and '.join(ATTRIBUTION_TASKS)}); drop them.")
    options = {"question": question, "labels": labels, "template": template, "method": method, "steps": steps,
               "target": target}
    return Report([inspect_text(pipe, text, **options) for text in texts], f"coulisse explain — {pipe.checkpoint.name}")


def write_report(pipe, texts: list[str], path, **options) -> list:
    """Inspect every text and write the self-contained HTML page to `path`; return the inspections."""
    page = report(pipe, texts, **options)
    page.save(path)
    return page.inspections
