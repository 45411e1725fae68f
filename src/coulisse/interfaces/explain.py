"""`coulisse explain`: the course notebook in one command — each stage titled, with its values."""

from __future__ import annotations

import numpy as np
import torch

from coulisse.models import Packed
from coulisse.tasks.text_classification import apply_function, default_function


def _title(n: int, name: str) -> str:
    return f"\n{n}. {name}\n" + "-" * (len(name) + 3)


def explain_text(pipe, text: str) -> str:
    cfg, tok, model = pipe.config, pipe.tokenizer, pipe.model
    inputs = tok([text], truncation=True, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    tokens = tok.convert_ids_to_tokens(ids)
    out = [f"Model: {pipe.checkpoint.name}  ({cfg.model_type}, folder {pipe.checkpoint.directory})"]

    out.append(_title(1, "Tokenizer: text -> tokens -> ids"))
    out.append(f"source: {tok.source}, vocabulary {len(tok)}, truncation at {tok.model_max_length} tokens")
    width = max(len(t) for t in tokens)
    out += [f"  {i:>3}  {t:<{width}}  {n:>6}" for i, (t, n) in enumerate(zip(tokens, ids))]
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
    out.append(f"first token's vector starts {np.array2string(hidden[0, :6].numpy(), precision=4)}")
    if model.head is None:
        return "\n".join(out)

    with torch.inference_mode():
        logits = model.head(hidden[p.starts]).float().numpy()[0]
    function = default_function(cfg.problem_type, cfg.num_labels)
    scores = apply_function(logits, function)
    out.append(_title(3, "Head: first token -> logits"))
    out.append(f"logits {np.array2string(logits, precision=4)}  (raw scores, one per label)")
    out.append(_title(4, f"Post-processing: {function} -> probabilities -> label"))
    out.append(f"id2label {cfg.id2label}")
    out += [f"  {cfg.id2label[i]:<12} {s:.4f}" for i, s in enumerate(scores)]
    best = int(np.argmax(scores))
    out.append(f"\nAnswer: {cfg.id2label[best]} ({scores[best]:.4f})")
    return "\n".join(out)
