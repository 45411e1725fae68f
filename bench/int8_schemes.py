"""Which int8 scheme can reach issue 3's quality goal? Cosine of all-MiniLM-L6-v2 embeddings vs fp32.

    python bench/int8_schemes.py [--n 100]

A diagnostic for quality_int8.py: the same embeddings (mean pooling over real tokens, L2, 256 tokens)
from transformers' fp32 BertModel, compared with the model after each scheme —
  - coulisse quantize="int8" (what users get),
  - torch fbgemm dynamic int8, per-tensor and per-channel weights (fbgemm's real kernels: on CPUs
    without VNNI they keep activations to 7 bits so that vpmaddubsw cannot saturate),
  - "ideal" int8 simulated in fp32 (per-channel symmetric weights, 8-bit asymmetric activations per
    tensor or per token, no saturation): the ceiling of each activation granularity,
  - ONNX Runtime quantize_dynamic QInt8, per-tensor and per-channel weights.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import random
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_texts  # noqa: E402
import quality_int8  # noqa: E402

BATCH = 16


class FakeQuantLinear(torch.nn.Module):
    """int8 weights (per output channel, symmetric) and uint8 activations, computed exactly in fp32."""

    def __init__(self, linear: torch.nn.Linear, per_token: bool):
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(1, keepdim=True) / 127
        self.weight = torch.round(w / scale).clamp(-127, 127) * scale
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.per_token = per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = -1 if self.per_token else tuple(range(x.dim()))
        lo = x.amin(dims, keepdim=True).clamp(max=0)
        hi = x.amax(dims, keepdim=True).clamp(min=0)
        scale = (hi - lo).clamp_min(1e-8) / 255
        zero = torch.round(-lo / scale)
        q = (torch.round(x / scale) + zero).clamp(0, 255)
        return torch.nn.functional.linear((q - zero) * scale, self.weight, self.bias)


def fake_quantized(model, per_token: bool):
    model = copy.deepcopy(model)
    for module in list(model.encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, FakeQuantLinear(child, per_token))
    return model


def fbgemm(model, per_channel: bool):
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    torch.backends.quantized.engine = "fbgemm"
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: qconfig})


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    p = (hidden * m).sum(1) / m.sum(1)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def torch_embed(model, tokenizer, texts: list[str]) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            enc = tokenizer(texts[i:i + BATCH], padding=True, truncation=True,
                            max_length=quality_int8.MAX_TOKENS, return_tensors="pt")
            hidden = model(**enc).last_hidden_state.float().numpy()
            out.append(pooled(hidden, enc["attention_mask"].numpy()))
    return np.concatenate(out)


def ort_embeddings(model, tokenizer, texts: list[str], folder: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Hidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    example = tokenizer(["a b c", "d e f g h"], padding=True, return_tensors="pt")
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=512)
    fp32 = folder / "minilm.onnx"
    axes = {0: batch, 1: seq}
    with contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(Hidden(model).eval(), (example["input_ids"], example["attention_mask"]), str(fp32),
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                          dynamo=True, external_data=False)
    results = {}
    for per_channel in (False, True):
        path = folder / f"minilm.int8.{per_channel}.onnx"
        quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, per_channel=per_channel)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = []
        for i in range(0, len(texts), BATCH):
            enc = tokenizer(texts[i:i + BATCH], padding=True, truncation=True,
                            max_length=quality_int8.MAX_TOKENS, return_tensors="np")
            feeds = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
            out.append(pooled(session.run(["hidden"], feeds)[0], enc["attention_mask"]))
        name = "per-channel" if per_channel else "per-tensor"
        results[f"ONNX Runtime dynamic QInt8, {name} weights"] = np.concatenate(out)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="Allociné reviews (plus 20 English sentences)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ort", action="store_true",
                        help="skip the ONNX Runtime schemes (the export is slow)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    from transformers import AutoModel, AutoTokenizer

    directory = quality_int8.minilm_dir()
    texts, _ = bench_texts.load_texts(args.n, args.seed)
    texts = texts + quality_int8.ENGLISH
    random.Random(args.seed).shuffle(texts)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    reference = torch_embed(model, tokenizer, texts)

    schemes = {"coulisse quantize='int8'": quality_int8.Embedder(directory, "int8", None)(texts)}
    schemes["torch fbgemm dynamic, per-tensor weights"] = torch_embed(fbgemm(model, False), tokenizer, texts)
    schemes["torch fbgemm dynamic, per-channel weights"] = torch_embed(fbgemm(model, True), tokenizer, texts)
    for per_token in (False, True):
        name = f"ideal int8, per-channel weights, per-{'token' if per_token else 'tensor'} activations"
        schemes[name] = torch_embed(fake_quantized(model, per_token), tokenizer, texts)
    if not args.no_ort:
        with tempfile.TemporaryDirectory() as tmp:
            schemes.update(ort_embeddings(model, tokenizer, texts, Path(tmp)))

    print(f"cosine vs transformers fp32 on {len(texts)} texts ({args.n} Allociné reviews + English); "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    width = max(map(len, schemes))
    for name, emb in schemes.items():
        cos = (reference * emb).sum(axis=1)
        print(f"  {name:<{width}}  mean {cos.mean():.5f}  min {cos.min():.5f}")


if __name__ == "__main__":
    main()
