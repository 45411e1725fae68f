"""Tiny random checkpoints with task heads — token classification, masked LM, multiple choice, base model —
for every family, written by transformers with the real tokenizers of tests/factory.py (MiniLM's vocab.txt,
CamemBERT's SentencePiece model, a trained byte-level BPE and Unigram). The transformers model that wrote
each checkpoint stays in memory as the oracle.

The configs are tests/factory.py's (hidden 32, 2 layers, 4 heads, initializer_range 0.2, vocab sizes of
the real tokenizers); only the head and, for NER, the B-/I- labels differ. A SPLADE folder is
sentence-transformers' SparseEncoder saved over a masked-LM checkpoint (`sparse_encoder_folder`).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from factory import ARCHS, CORPUS, Factory, perturb_norms, write_weights

NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
AUTO_CLASSES = {
    "token-classification": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "multiple-choice": "AutoModelForMultipleChoice",
    "base": "AutoModel",
}


@dataclass
class TaskFactory:
    factory: Factory
    root: Path
    _cache: dict = field(default_factory=dict)

    def model(self, arch: str, head: str):
        """The transformers model of `arch` with `head` (eval mode), seeded per (arch, head)."""
        key = ("model", arch, head)
        if key not in self._cache:
            import transformers

            config = copy.deepcopy(self.factory.reference(arch).model.config)
            if head == "token-classification":
                config.id2label, config.label2id = dict(NER_LABELS), {v: k for k, v in NER_LABELS.items()}
            torch.manual_seed(100 + 10 * ARCHS.index(arch) + list(AUTO_CLASSES).index(head))
            auto = getattr(transformers, AUTO_CLASSES[head])
            model = auto.from_config(config).eval()
            if arch == "modernbert":  # LayerNorms start at 1, biases at 0: make every tensor count
                perturb_norms(model)
            if head == "token-classification":
                self._favour_outside(arch, model)
            self._cache[key] = model
        return self._cache[key]

    def _favour_outside(self, arch: str, model) -> None:
        """Shift the "O" bias so that about 40% of tokens are "O", so `ignore_labels` has work to do and
        entities come in runs of several tokens separated by "O"s (a random classifier rarely picks it)."""
        tok = self.factory.hf_tokenizer(arch)
        inputs = tok(CORPUS, padding=True, return_tensors="pt")
        if arch == "distilbert":
            inputs.pop("token_type_ids", None)
        with torch.no_grad():
            logits = model(**inputs).logits[inputs["attention_mask"].bool()]  # (tokens, labels)
        margin = logits[:, 1:].max(-1).values - logits[:, 0]
        with torch.no_grad():
            model.classifier.bias[0] += torch.quantile(margin, 0.4)

    def checkpoint(self, arch: str, head: str, weights: str = "safetensors",
                   model_max_length: int | None = None) -> Path:
        """A folder with the model's weights, config.json and the tokenizer files of `arch`;
        `model_max_length` goes into tokenizer_config.json (transformers and coulisse both truncate there)."""
        key = ("ckpt", arch, head, weights, model_max_length)
        if key not in self._cache:
            d = self.root / "-".join([arch, head, weights, str(model_max_length)])
            d.mkdir(parents=True)
            write_weights(self.model(arch, head), d, weights)
            for f in self.factory.tokenizer_files(arch).iterdir():
                if f.name != "config.json":
                    shutil.copy(f, d / f.name)
            if model_max_length is not None:  # added to the tokenizer's settings (ModernBERT's name its specials)
                settings = d / "tokenizer_config.json"
                known = json.loads(settings.read_text(encoding="utf-8") or "{}") if settings.is_file() else {}
                settings.write_text(json.dumps({**known, "model_max_length": model_max_length}), encoding="utf-8")
            self._cache[key] = d
        return self._cache[key]

    def hf_pipeline(self, task: str, directory: Path):
        """transformers 5's own pipeline on a checkpoint folder (the output oracle)."""
        key = ("pipe", task, directory)
        if key not in self._cache:
            import transformers

            self._cache[key] = transformers.pipeline(task, model=str(directory), device="cpu")
        return self._cache[key]


# -- SPLADE: sentence-transformers' SparseEncoder over a masked-LM checkpoint -----------------------------


def sparse_encoder_folder(task_factory: TaskFactory, arch: str, root: Path, strategy: str = "max",
                          activation: str = "relu", legacy: bool = False, **options) -> tuple:
    """sentence-transformers' own SparseEncoder folder over the masked-LM checkpoint of `arch`, and the
    SparseEncoder read back from it (the oracle). `legacy`: written with sentence-transformers 5's
    MLMTransformer module, as the Hub's SPLADE models are, instead of 6's Transformer(transformer_task=
    "fill-mask")."""
    import warnings

    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    source = str(task_factory.checkpoint(arch, "masked-lm"))
    directory = root / f"{arch}-{strategy}-{activation}-{legacy}-{len(options)}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        transformer = MLMTransformer(source) if legacy else Transformer(source, transformer_task="fill-mask")
    encoder = SparseEncoder(modules=[transformer, SpladePooling(strategy, activation)], **options)
    encoder.save(str(directory))
    return directory, SparseEncoder(str(directory), device="cpu")


def oracle(encoder, texts: list[str], **kwargs) -> np.ndarray:
    return encoder.encode(texts, convert_to_sparse_tensor=False, convert_to_tensor=True, **kwargs).numpy()


# -- sentence-transformers/all-mpnet-base-v2's folder over the tiny MPNet encoder -------------------------------

# Its files besides the weights and the tokenizer, as the Hub holds them (sentence-transformers 2's layout:
# module types under sentence_transformers.models, no 2_Normalize folder, config.json naming MPNetForMaskedLM
# though the weights are the bare encoder's).
ALL_MPNET_MODULES = [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
                     for i, (path, kind) in enumerate([("", "Transformer"), ("1_Pooling", "Pooling"),
                                                       ("2_Normalize", "Normalize")])]
# all-mpnet-base-v2's tokenizer_config.json, as the Hub holds it (also read by tests/tokenizer/test_mpnet_tokenizer.py).
ALL_MPNET_TOKENIZER_CONFIG = {
    "do_lower_case": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "[UNK]", "sep_token": "</s>",
    "pad_token": "<pad>", "cls_token": "<s>", "tokenize_chinese_chars": True, "strip_accents": None,
    "mask_token": {"content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False, "normalized": True,
                   "__type": "AddedToken"},
    "model_max_length": 512, "special_tokens_map_file": None, "tokenizer_class": "MPNetTokenizer",
}


def all_mpnet_folder(task_factory: TaskFactory, directory: Path) -> Path:
    """all-mpnet-base-v2's layout (modules.json, sentence_bert_config.json with max_seq_length 384, mean
    1_Pooling, Normalize) around the tiny MPNet encoder transformers wrote, with MPNet's vocab.txt."""
    shutil.copytree(task_factory.checkpoint("mpnet", "base"), directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    files = {
        "config.json": {**config, "architectures": ["MPNetForMaskedLM"]},
        "modules.json": ALL_MPNET_MODULES,
        "sentence_bert_config.json": {"max_seq_length": 384, "do_lower_case": False},
        "config_sentence_transformers.json": {"__version__": {"sentence_transformers": "2.0.0",
                                                              "transformers": "4.6.1", "pytorch": "1.8.1"}},
        "tokenizer_config.json": ALL_MPNET_TOKENIZER_CONFIG,
        "1_Pooling/config.json": {"word_embedding_dimension": config["hidden_size"], "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False},
    }
    (directory / "1_Pooling").mkdir()
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    return directory
