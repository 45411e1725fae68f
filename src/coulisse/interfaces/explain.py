"""`coulisse explain`: the course notebook in one command — each stage titled, with its values.

Stages 1 (tokenizer) and 2 (encoder) are the same for every task; what follows the encoder is one
renderer per task in `STAGES`, the table `explain --task` offers. The CLI reads that table at start-up,
so this module imports numpy and torch only inside the renderers: `coulisse --help` stays light.

Each text is read as `pipe(text)` reads it (`coulisse.interfaces.explain_input.read_input`). The words of a
stage that the HTML page shows too (`sentence_embedding`, `activation_words`, `zero_shot_words`,
`entity_options`) live here, and `coulisse.interfaces.head_views` reuses them; the words' attributions are
`coulisse.interfaces.attribution_view`'s, the HTML page `coulisse.interfaces.inspection`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coulisse.errors import InputError
from coulisse.interfaces.explain_input import Read, built_labels, check_request, read_input
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


def stage_title(n: int, name: str) -> str:
    return f"\n{n}. {name}\n" + "-" * (len(name) + 3)


def _row(name: str, values: list[int], pad: int = 14) -> str:
    """`name [1, 2, ...]`, the list wrapped to the terminal under its first value (a 512-id list is no one
    line)."""
    return wrapped(f"{name:<{pad}} {values}", indent=" " * (pad + 2))


def _vector(values, n: int = 6) -> str:
    import numpy as np

    return np.array2string(np.asarray(values)[:n], precision=4)


def explain_text(pipe, text: str, *, question: str | None = None, labels: Any = None,
                 template: str | None = None) -> str:
    render = STAGES.get(pipe.task)
    if render is None:
        raise InputError(f"coulisse explain has no stages for task {pipe.task!r}; it shows "
                         f"{', '.join(STAGES)}.")
    labels, template = built_labels(pipe, labels, template)
    check_request(pipe.task, question, labels, template)
    seen = read_input(pipe, text, question=question, labels=labels, template=template)
    out, encoded = _tokenizer_and_encoder(pipe, seen)
    return "\n".join(out + render(pipe, encoded))


def _model_inputs(pipe, rows: list, types: list | None = None):
    """The notebook's `inputs` for `model(**inputs)`: the pipeline's ids, padded (`tokenizer.pad`, as
    DataCollatorWithPadding pads them), with token types where the model reads them."""
    tok = pipe.tokenizer
    features = {"input_ids": rows}
    if types is not None and "token_type_ids" in tok.model_input_names:
        features["token_type_ids"] = types
    # the mask the pipeline's batches have, also where the folder's model_input_names leaves it out
    return tok.pad(features, padding=True, return_attention_mask=True, return_tensors="pt")


def _tokenizer_and_encoder(pipe, seen: Read) -> tuple[list[str], Encoded]:
    cfg, tok, model, encoding = pipe.config, pipe.tokenizer, pipe.model, seen.encoding
    ids = list(encoding.ids)
    inputs = _model_inputs(pipe, [ids], [list(encoding.type_ids)])
    tokens = tok.convert_ids_to_tokens(ids)
    name, folder = pipe.checkpoint.name, pipe.checkpoint.directory
    same = Path(name).expanduser().resolve() == Path(folder).resolve()  # a folder given: its path once
    out = [wrapped(f"Model: {name}  ({cfg.model_type}{'' if same else f', folder {folder}'})", indent="  ")]

    out.append(stage_title(1, "Tokenizer: text pair -> tokens -> ids" if seen.pair else
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
    out.append(stage_title(2, "Encoder: ids -> hidden states"))
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
    out = [stage_title(3, f"Head: {reads} -> logits")]
    out.append(wrapped(f"logits {np.array2string(logits, precision=4)}  (raw scores, one per label)", indent="  "))
    out.append(stage_title(4, f"Post-processing: {function} -> probabilities -> label"))
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
    out = [stage_title(3, "Pooling: hidden states -> one sentence embedding")]
    out.append(wrapped(how, indent="  "))
    out.append(wrapped(f"embedding shape ({len(vector)},), norm {float(np.linalg.norm(vector)):.4f}, "
                       f"starts {_vector(vector)}", indent="  "))
    return out


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


def _entities(pipe, e: Encoded) -> list[str]:
    from coulisse.tasks.functional import softmax

    cfg = pipe.config
    logits = e.logits.float().numpy()  # (T, labels)
    scores = softmax(logits)
    out = [stage_title(3, "Head: every token -> logits")]
    out.append(wrapped(f"logits shape ({count(logits.shape[0], 'token')}, {count(logits.shape[1], 'label')}), "
                       f"id2label {cfg.id2label}", indent="  "))
    out.append(stage_title(4, "Post-processing: softmax per token -> label -> entities"))
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
    out = [stage_title(3, "Head: masked positions -> vocabulary logits")]
    out.append(wrapped(f"logits shape ({logits.shape[0]} masked of {len(e.ids)} tokens, vocabulary "
                       f"{logits.shape[1]}): only masked positions are projected"))
    out.append(stage_title(4, "Post-processing: softmax over the vocabulary -> top 5 tokens"))
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
    out = [stage_title(3, "Head: every token -> vocabulary logits")]
    out.append(wrapped(f"the masked-LM head on all {count(len(e.ids), 'token')}: logits shape "
                       f"({len(e.ids)}, {vocab}), as fill-mask would give for each position"))
    out.append(stage_title(4, f"Pooling: {activation_words(head)}, {head.strategy} over the tokens -> one weight per "
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
    out = [stage_title(3, "Head: every token -> start and end logits")]
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

    out.append(stage_title(4, "Post-processing: softmax of starts and ends -> best span -> answer"))
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
    out = [stage_title(3, "Hypotheses: one (text, hypothesis) pair per label")]
    out.append(f"template {template!r}; stages 1-2 showed the first pair")
    out += [f"  {label:<{width}}  {template.format(label)!r}  ({len(x.ids)} tokens)"
            for label, x in zip(labels, encodings, strict=True)]
    out.append(stage_title(4, "Head: each pair -> NLI logits"))
    out.append(wrapped(f"id2label {id2label}: entailment is id {ent}, contradiction id {con}", indent="  "))
    entail, contra = f"entail[{ent}]", f"contra[{con}]"
    out.append(f"  {'label':<{width}}  {entail:>10}  {contra:>10}  all logits")
    out += [f"  {label:<{width}}  {row[ent]:>10.4f}  {row[con]:>10.4f}  {np.array2string(row, precision=4)}"
            for label, row in zip(labels, logits, strict=True)]
    how = zero_shot_words(multi_label, len(labels))
    out.append(stage_title(5, f"Post-processing: {how} -> ranking"))
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
