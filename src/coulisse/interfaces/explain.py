"""`coulisse explain`: the course notebook in one command — each stage titled, with its values.

Stages 1 (tokenizer) and 2 (encoder) are the same for every task; what follows the encoder is one
renderer per task in `STAGES`, the table `explain --task` offers. The CLI reads that table at start-up,
so this module imports numpy and torch only inside the renderers: `coulisse --help` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coulisse.errors import InputError


@dataclass
class Encoded:
    """One text through stages 1 and 2."""

    text: str
    ids: list[int]
    tokens: list[str]
    packed: Any  # coulisse.models.Packed
    hidden: Any  # torch.Tensor (T, H)


def _title(n: int, name: str) -> str:
    return f"\n{n}. {name}\n" + "-" * (len(name) + 3)


def _vector(values, n: int = 6) -> str:
    import numpy as np

    return np.array2string(np.asarray(values)[:n], precision=4)


def explain_text(pipe, text: str) -> str:
    render = STAGES.get(pipe.task)
    if render is None:
        raise InputError(f"coulisse explain has no stages for task {pipe.task!r}; it shows "
                         f"{', '.join(STAGES)}.")
    out, encoded = _tokenizer_and_encoder(pipe, text)
    return "\n".join(out + render(pipe, encoded))


def _tokenizer_and_encoder(pipe, text: str) -> tuple[list[str], Encoded]:
    import torch

    from coulisse.models import Packed

    cfg, tok, model = pipe.config, pipe.tokenizer, pipe.model
    inputs = tok([text], truncation=True, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    tokens = tok.convert_ids_to_tokens(ids)
    out = [f"Model: {pipe.checkpoint.name}  ({cfg.model_type}, folder {pipe.checkpoint.directory})"]

    out.append(_title(1, "Tokenizer: text -> tokens -> ids"))
    out.append(f"source: {tok.source}, vocabulary {len(tok)}, truncation at {tok.model_max_length} tokens")
    width = max(len(t) for t in tokens)
    out += [f"  {i:>3}  {t:<{width}}  {n:>6}" for i, (t, n) in enumerate(zip(tokens, ids, strict=True))]
    out.append(f"input_ids      {ids}")
    out.append(f"attention_mask {inputs['attention_mask'][0].tolist()}")

    p = Packed.from_padded(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"),
                           cfg.position_offset)
    with torch.inference_mode():
        hidden = model.base(p)  # (T, H)
    out.append(_title(2, "Encoder: ids -> hidden states"))
    out.append(f"{cfg.num_hidden_layers} layers, hidden size {cfg.hidden_size}, "
               f"{cfg.num_attention_heads} attention heads")
    out.append(f"last_hidden_state shape: (batch=1, sequence={hidden.shape[0]}, hidden={hidden.shape[1]})")
    out.append(f"first token's vector starts {_vector(hidden[0].numpy())}")
    return out, Encoded(text, ids, tokens, p, hidden)


def _classification(pipe, e: Encoded) -> list[str]:
    import numpy as np
    import torch

    from coulisse.tasks.text_classification import apply_function, default_function

    cfg = pipe.config
    with torch.inference_mode():
        logits = pipe.model.head(e.hidden[e.packed.starts]).float().numpy()[0]
    function = default_function(cfg.problem_type, cfg.num_labels)
    scores = apply_function(logits, function)
    out = [_title(3, "Head: first token -> logits")]
    out.append(f"logits {np.array2string(logits, precision=4)}  (raw scores, one per label)")
    out.append(_title(4, f"Post-processing: {function} -> probabilities -> label"))
    out.append(f"id2label {cfg.id2label}")
    out += [f"  {cfg.id2label[i]:<12} {s:.4f}" for i, s in enumerate(scores)]
    best = int(np.argmax(scores))
    out.append(f"\nAnswer: {cfg.id2label[best]} ({scores[best]:.4f})")
    return out


def _embedding(pipe, e: Encoded) -> list[str]:
    import numpy as np

    from coulisse.tasks.feature_extraction import pool

    config = pipe.sentence_config("auto", None)
    vector = pool(e.hidden.numpy(), config.pooling, config.normalize)
    found = (pipe.checkpoint.directory / "modules.json").is_file()
    how = "the folder's sentence-transformers modules" if found else "no sentence-transformers config: mean"
    what = f"the mean of the {len(e.ids)} token vectors" if config.pooling == "mean" else "the first token's"
    then = ", divided by its L2 norm" if config.normalize else ""
    out = [_title(3, "Pooling: hidden states -> one sentence embedding")]
    out.append(f"pooling='auto' ({how}): {what}{then}")
    out.append(f"embedding shape ({len(vector)},), norm {float(np.linalg.norm(vector)):.4f}, "
               f"starts {_vector(vector)}")
    return out


def _entities(pipe, e: Encoded) -> list[str]:
    import torch

    from coulisse.tasks.text_classification import softmax

    cfg = pipe.config
    with torch.inference_mode():
        logits = pipe.model.head(e.hidden).float().numpy()  # (T, labels)
    scores = softmax(logits)
    out = [_title(3, "Head: every token -> logits")]
    out.append(f"logits shape ({logits.shape[0]} tokens, {logits.shape[1]} labels), id2label {cfg.id2label}")
    out.append(_title(4, "Post-processing: softmax per token -> label -> entities"))
    width = max(len(t) for t in e.tokens)
    out += [f"  {i:>3}  {t:<{width}}  {cfg.id2label[int(s.argmax())]:<10} {s.max():.4f}"
            for i, (t, s) in enumerate(zip(e.tokens, scores, strict=True))]
    encoding = pipe.tokenizer.encode_batch([e.text])[0]
    entities = pipe.postprocess(e.text, [encoding], [logits], aggregation_strategy="simple")
    out.append("\nEntities (aggregation_strategy='simple', special tokens and 'O' dropped):")
    out += [f"  {x['entity_group']:<10} {x['score']:.4f}  [{x['start']}:{x['end']}]  {x['word']!r}"
            for x in entities] or ["  (none)"]
    return out


def _fill_mask(pipe, e: Encoded) -> list[str]:
    import torch

    mask = pipe.tokenizer.mask_token_id
    rows = e.packed.input_ids == mask
    if not bool(rows.any()):
        raise InputError(f"{e.text!r} has no mask token ({pipe.tokenizer.special_tokens['mask']}); put one "
                         "where a word is missing.")
    with torch.inference_mode():
        logits = pipe.model.head(e.hidden[rows]).float().numpy()  # (masks, vocab)
    out = [_title(3, "Head: masked positions -> vocabulary logits")]
    out.append(f"logits shape ({logits.shape[0]} masked of {len(e.ids)} tokens, vocabulary "
               f"{logits.shape[1]}): only masked positions are projected")
    out.append(_title(4, "Post-processing: softmax over the vocabulary -> top 5 tokens"))
    results = pipe.postprocess(e.ids, logits, top_k=5)
    for n, proposals in enumerate([results] if isinstance(results[0], dict) else results, 1):
        out.append(f"mask {n}:")
        out += [f"  {p['score']:.4f}  {p['token_str']!r:<16} {p['sequence']}" for p in proposals]
    return out


# task -> what follows the encoder
STAGES = {
    "text-classification": _classification,
    "feature-extraction": _embedding,
    "token-classification": _entities,
    "fill-mask": _fill_mask,
}
