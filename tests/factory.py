"""Tiny random checkpoints and trained tokenizers, built once per session, with transformers as the oracle.

Every checkpoint is written by transformers or torch themselves (never by coulisse), in the layouts
users hold: `model.safetensors`, sharded safetensors (`save_pretrained(max_shard_size=...)`),
`pytorch_model.bin` from `torch.save(state_dict)`, and a sharded `.bin` with a hand-written index.
The transformers model that wrote the weights stays in memory as the reference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# 2,000 real Allociné reviews beside the repository (tests using them skip without); COULISSE_ALLOCINE names the
# file where a clone lives elsewhere. Here, not in conftest.py: `from conftest import` finds whichever conftest
# module pytest loaded first (tests/tokenizer has its own).
ALLOCINE = Path(os.environ.get("COULISSE_ALLOCINE") or
                Path(__file__).resolve().parents[2] / "shared" / "data" / "allocine-sample" / "train.csv")

# Families with every head of the course's list (tests/task_factory.py builds them all).
ARCHS = ("bert", "roberta", "camembert", "xlm-roberta", "distilbert", "mpnet", "modernbert")
# Families coulisse runs as classifiers, token classifiers and base models.
CLASSIFIER_ARCHS = ("electra", "flaubert")
ALL_ARCHS = ARCHS + CLASSIFIER_ARCHS
# transformers 5 has only a Python tokenizer for FlauBERT: nothing to save as tokenizer.json.
FAST_TOKENIZER_ARCHS = tuple(a for a in ALL_ARCHS if a != "flaubert")
WEIGHT_FORMATS = ("safetensors", "sharded-safetensors", "bin", "sharded-bin")
TOKENIZER_FORMATS = ("tokenizer.json", "sentencepiece", "vocab.txt", "vocab.json+merges")
# The slow-file format each architecture ships with in the wild.
NATIVE_TOKENIZER = {
    "bert": "vocab.txt",
    "distilbert": "vocab.txt",
    "roberta": "vocab.json+merges",
    "camembert": "sentencepiece",
    "xlm-roberta": "sentencepiece",
    "electra": "vocab.txt",
    "flaubert": "vocab.json+merges",  # XLM's layout: Moses words, `</w>` merges
    "mpnet": "vocab.txt",  # MPNet's layout: <s> <pad> </s> <unk> first, <mask> last
    "modernbert": "tokenizer.json",  # a generic PreTrainedTokenizerFast file: byte-level BPE, [CLS] A [SEP]
}
ROBERTA_FAMILY = ("roberta", "camembert", "xlm-roberta")
# Each architecture's seed, fixed so that adding one leaves the others' random weights as they were.
SEEDS = {arch: i + 1 for i, arch in enumerate(("bert", "roberta", "camembert", "xlm-roberta", "distilbert",
                                               "electra", "flaubert", "mpnet", "modernbert"))}
LABELS = {0: "négatif", 1: "neutre", 2: "positif"}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            initializer_range=0.2)
# ModernBERT: 3 layers (global, local, global), a window of 8 tokens (±4) that the longer texts exceed, and
# rotary bases of its own (not the defaults) for the global and local layers.
MODERNBERT_TINY = dict(num_hidden_layers=3, local_attention=8, global_attn_every_n_layers=2,
                       global_rope_theta=5_000.0, local_rope_theta=300.0)

# French text written for these tests: training material for the BPE and Unigram tokenizers.
CORPUS = [
    "J'ai attendu un cours d'HuggingFace toute ma vie.",
    "Je déteste tellement ça !",
    "Le scénario est prévisible, mais « Amélie » reste un chef-d'œuvre 😍",
    "Quelle déception…\tJe m'attendais à mieux de la part de ce réalisateur.",
    "Première partie : ennuyeuse.\nDeuxième partie : sublime, émouvante et drôle.",
    "Çà et là, des dialogues ratés ; l'ensemble demeure néanmoins très agréable.",
    "NUL. Vraiment nul !!! À éviter à tout prix.",
    "Les acteurs sont excellents, la musique est magnifique et la photographie soignée.",
    "Un film long, lent, bavard : on s'ennuie ferme pendant deux heures et quart.",
    "\"Incroyable\", disait l'affiche ; crédible, tout au plus.",
    "Où est passé le réalisateur de mes films préférés ? Mystère et boule de gomme.",
    "Ce n'est pas un navet, c'est une citrouille entière : énorme, creuse et orange.",
    "Une bande originale géniale, des décors somptueux, une héroïne attachante.",
    "Je recommande vivement ce petit bijou à toute la famille, même aux plus jeunes.",
    "L'histoire se perd en route ; la fin, bâclée, gâche tout le reste.",
    "Bœuf, cœur, sœur, œil : l'œuvre est pleine de ligatures et d'accents aigus, graves, circonflexes.",
    "Les effets spéciaux datent un peu, mais le charme opère toujours en 2024.",
    "À 20 h 30, la salle était comble ; à 22 h, elle était à moitié vide.",
]

# Inputs for logits comparisons: short, medium, accents, emoji, whitespace, and one past 512 tokens.
# A review that spans many windows of a small model limit (long-text chunk tests: conftest's
# `windowed_classifier`).
WINDOW_LIMIT = 24
LONG_REVIEW = ("Ce film commence lentement, presque trop, puis la mise en scène prend son envol : les acteurs sont "
               "justes, la musique accompagne l'histoire sans l'écraser, et la photographie est superbe. Hélas la "
               "dernière demi-heure s'étire, les dialogues deviennent creux et la fin bâclée gâche un peu le reste. "
               "Je le conseille quand même, pour les vingt premières minutes et pour l'actrice principale.")

TEXTS = [
    "J'ai attendu un cours d'HuggingFace toute ma vie.",
    "Je déteste tellement ça !",
    "Le scénario est prévisible, mais « Amélie » reste un chef-d'œuvre 😍",
    "Quelle déception…\tJe m'attendais à mieux.\nVraiment.",
    "Bof.",
    "Les acteurs sont excellents, la musique est magnifique. " * 3,
    "Un film long, lent, bavard : on s'ennuie ferme. " * 90,
]


@dataclass
class Reference:
    """A transformers classifier and its label config, the oracle of one architecture."""

    arch: str
    model: torch.nn.Module  # *ForSequenceClassification, eval mode
    max_length: int  # truncation limit the issue prescribes: positions minus the RoBERTa offset

    @property
    def base(self) -> torch.nn.Module:
        return self.model.base_model


@dataclass
class Factory:
    root: Path
    camembert_spm: Path
    minilm_dir: Path
    _cache: dict = field(default_factory=dict)

    def _once(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # -- tokenizer files ----------------------------------------------------------------------------

    def tokenizer_files(self, arch: str) -> Path:
        """A folder holding only the native slow tokenizer files of `arch` (and config.json)."""
        return self._once(("tokfiles", arch), lambda: self._tokenizer_files(arch))

    def _tokenizer_files(self, arch: str) -> Path:
        d = self.root / f"tokenizer-{arch}"
        d.mkdir(parents=True)
        kind = NATIVE_TOKENIZER[arch]
        if arch == "mpnet":
            write_mpnet_vocab(self.minilm_dir / "vocab.txt", d / "vocab.txt")
        elif kind == "vocab.txt":
            shutil.copy(self.minilm_dir / "vocab.txt", d / "vocab.txt")
        elif arch == "camembert":
            copy_camembert_layout(self.camembert_spm, d)
        elif arch == "xlm-roberta":
            train_unigram(d)
        elif arch == "flaubert":
            train_moses_bpe(d)
        elif arch == "modernbert":
            train_modernbert_tokenizer(d)
        else:
            train_bytelevel_bpe(d)
        (d / "config.json").write_text(json.dumps({"model_type": arch}), encoding="utf-8")
        return d

    def hf_tokenizer(self, arch: str, tokenizer_format: str | None = None):
        """transformers' tokenizer for the files a checkpoint of `arch` carries (the id oracle)."""
        fmt = tokenizer_format or NATIVE_TOKENIZER[arch]
        return self._once(("hftok", arch, fmt), lambda: _auto_tokenizer(self.checkpoint(arch, tokenizer=fmt)))

    # -- models -------------------------------------------------------------------------------------

    def reference(self, arch: str, num_labels: int = 3, problem_type: str | None = None) -> Reference:
        key = ("ref", arch, num_labels, problem_type)
        return self._once(key, lambda: self._reference(arch, num_labels, problem_type))

    def _reference(self, arch: str, num_labels: int, problem_type: str | None) -> Reference:
        import transformers as tf

        tok = _auto_tokenizer(self.tokenizer_files(arch))
        labels = LABELS if num_labels == 3 else {i: f"étiquette {i}" for i in range(num_labels)}
        common = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, id2label=dict(labels),
                      label2id={v: k for k, v in labels.items()}, problem_type=problem_type)
        if arch == "distilbert":
            config = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, initializer_range=0.2,
                                         max_position_embeddings=512, **common)
        elif arch == "bert":
            config = tf.BertConfig(max_position_embeddings=512, **TINY, **common)
        elif arch == "electra":  # word vectors narrower than the encoder: embeddings_project
            config = tf.ElectraConfig(embedding_size=24, max_position_embeddings=512, **TINY, **common)
        elif arch == "mpnet":  # sentence-transformers/all-mpnet-base-v2's shape: 514 positions, eps 1e-5
            config = tf.MPNetConfig(max_position_embeddings=514, layer_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
                                    eos_token_id=tok.eos_token_id, **TINY, **common)
        elif arch == "modernbert":  # a local window of 8 (±4 tokens); layer 0 global, layer 1 local
            config = tf.ModernBertConfig(**{**TINY, **MODERNBERT_TINY}, max_position_embeddings=512,
                                         bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                         cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, **common)
        elif arch == "flaubert":
            config = tf.FlaubertConfig(emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=512,
                                       init_std=0.2, embed_init_std=0.2, pad_index=tok.pad_token_id, **common)
        else:
            cls = {"roberta": tf.RobertaConfig, "camembert": tf.CamembertConfig,
                   "xlm-roberta": tf.XLMRobertaConfig}[arch]
            config = cls(max_position_embeddings=514, type_vocab_size=1, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, layer_norm_eps=1e-5, **TINY, **common)
        torch.manual_seed(SEEDS[arch])
        model = tf.AutoModelForSequenceClassification.from_config(config).eval()
        if arch == "modernbert":  # LayerNorms start at 1, biases at 0: make every tensor count
            perturb_norms(model)
        offset = config.pad_token_id + 1 if arch in (*ROBERTA_FAMILY, "mpnet") else 0
        return Reference(arch, model, config.max_position_embeddings - offset)

    def checkpoint(self, arch: str, weights: str = "safetensors", tokenizer: str | None = None,
                   base: bool = False, num_labels: int = 3, problem_type: str | None = None) -> Path:
        """A checkpoint folder of the reference model of `arch`, written in the given formats."""
        tokenizer = tokenizer or NATIVE_TOKENIZER[arch]
        key = ("ckpt", arch, weights, tokenizer, base, num_labels, problem_type)
        return self._once(key, lambda: self._checkpoint(*key[1:]))

    def _checkpoint(self, arch, weights, tokenizer, base, num_labels, problem_type) -> Path:
        tag = "-".join([arch, weights, tokenizer.replace("+", "-"), "base" if base else "cls",
                        str(num_labels), str(problem_type)])
        d = self.root / tag
        d.mkdir(parents=True)
        ref = self.reference(arch, num_labels, problem_type)
        model = copy.deepcopy(ref.base) if base else ref.model
        write_weights(model, d, weights)
        src = self.tokenizer_files(arch)
        if tokenizer == "tokenizer.json":
            _auto_tokenizer(src).save_pretrained(d)
            for name in ("sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt"):
                (d / name).unlink(missing_ok=True)
        else:
            for f in src.iterdir():
                if f.name != "config.json":
                    shutil.copy(f, d / f.name)
        return d


def _auto_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


# -- writers (transformers / torch write every file; coulisse only reads) ------------------------------

def write_weights(model, directory: Path, fmt: str) -> None:
    if fmt == "safetensors":
        model.save_pretrained(directory)
    elif fmt == "sharded-safetensors":
        model.save_pretrained(directory, max_shard_size="60KB")
        shards = list(directory.glob("model-*.safetensors"))
        assert len(shards) > 1 and (directory / "model.safetensors.index.json").is_file(), shards
    elif fmt == "bin":
        model.config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    elif fmt == "sharded-bin":
        model.config.save_pretrained(directory)
        write_sharded_bin(model.state_dict(), directory, parts=3)
    else:
        raise ValueError(fmt)


def write_sharded_bin(state: dict, directory: Path, parts: int) -> None:
    keys = list(state)
    groups = [keys[i::parts] for i in range(parts)]
    weight_map = {}
    for i, group in enumerate(groups, 1):
        name = f"pytorch_model-{i:05d}-of-{parts:05d}.bin"
        torch.save({k: state[k] for k in group}, directory / name)
        weight_map.update(dict.fromkeys(group, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def write_mpnet_vocab(bert_vocab: Path, path: Path) -> None:
    """microsoft/mpnet-base's vocab.txt: fairseq's <s> <pad> </s> <unk>, BERT's uncased WordPiece vocabulary
    (here MiniLM's), then <mask>."""
    words = bert_vocab.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(["<s>", "<pad>", "</s>", "<unk>", *words, "<mask>"]) + "\n", encoding="utf-8")


def copy_camembert_layout(spm: Path, directory: Path) -> None:
    """The tokenizer files of tblard/tf-allocine: the real spm model and a 2-byte `{}` tokenizer_config."""
    shutil.copy(spm, directory / "sentencepiece.bpe.model")
    (directory / "tokenizer_config.json").write_bytes(b"{}")
    (directory / "config.json").write_text(
        json.dumps({"model_type": "camembert", "max_position_embeddings": 514, "pad_token_id": 1,
                    "vocab_size": 32005}), encoding="utf-8")


COMMIT = "4b0d7d1d4c5a1d1e2f3a4b5c6d7e8f9a0b1c2d3e"
ALLOCINE_FILES = ("config.json", "tokenizer_config.json", "sentencepiece.bpe.model",
                  "special_tokens_map.json", "tf_model.h5")


def make_hf_cache(cache: Path, source: Path, repo: str = "tblard/tf-allocine", files=ALLOCINE_FILES) -> Path:
    """huggingface_hub's layout: content-addressed blobs, a ref to the commit, a snapshot of symlinks."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for name in files:
        data = (source / name).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


def train_bytelevel_bpe(directory: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=600, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))


MODERNBERT_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


def train_modernbert_tokenizer(directory: Path) -> None:
    """answerdotai/ModernBERT-base's tokenizer layout, trained on CORPUS: a tokenizer.json (byte-level BPE without
    a prefix space, `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` templates, the special tokens after the words,
    `[MASK]` stripping the space on its left) and a tokenizer_config.json naming the generic class,
    PreTrainedTokenizerFast, and the inputs the model takes (no token types)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.add_special_tokens([AddedToken(t, lstrip=t == "[MASK]", normalized=False) for t in MODERNBERT_SPECIALS])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": True,
              "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 8192,
              **{f"{name}_token": f"[{name.upper()}]" for name in ("unk", "cls", "sep", "pad", "mask")}}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def perturb_norms(model) -> None:
    """Move a random transformers model's LayerNorm weights off 1 and every bias off 0 (deterministically)."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=generator) * 0.2)


def train_unigram(directory: Path) -> None:
    """An XLM-R-style SentencePiece Unigram model (<unk>=0, <s>=1, </s>=2), as `sentencepiece.bpe.model`."""
    import sentencepiece as spm

    prefix = directory / "trained"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_prefix=str(prefix), vocab_size=180, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2, num_threads=1,
    )
    prefix.with_suffix(".model").rename(directory / "sentencepiece.bpe.model")
    prefix.with_suffix(".vocab").unlink()


def train_deberta_spm(directory: Path, **options) -> Path:
    """A DeBERTa-v3-style SentencePiece Unigram model as `spm.model`: [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3
    (transformers appends [MASK] after the pieces). `options` go to the trainer (e.g. user_defined_symbols)."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / "trained"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_prefix=str(prefix), vocab_size=180, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2, num_threads=1,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", **options,
    )
    prefix.with_suffix(".model").rename(directory / "spm.model")
    prefix.with_suffix(".vocab").unlink()
    return directory / "spm.model"


def train_moses_bpe(directory: Path, vocab_size: int = 400) -> None:
    """FlauBERT's tokenizer files: vocab.json (<s> </s> <pad> <unk> <special0>... first, as in
    flaubert/flaubert_base_cased) and XLM's merges.txt ("a b</w>" lines, no header), learnt on the Moses
    words of CORPUS by `learn_bpe`: the same files on every run (the `tokenizers` trainer breaks ties
    between equally frequent pairs in hash order, so its vocabulary, hence every tiny FlauBERT's
    token ids and logits, changed from one run to the next)."""
    import pytest

    pytest.importorskip("sacremoses", reason="FlauBERT's tokenizer needs sacremoses (pip install -e '.[test]')")
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    normalizer, splitter = MosesPunctNormalizer(lang="fr"), MosesTokenizer(lang="fr")
    words = Counter(w for t in CORPUS for w in splitter.tokenize(normalizer.normalize(t), escape=False))
    specials = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
    vocab, merges = learn_bpe(words, vocab_size - len(specials))
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(specials + vocab)},
                                                     ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def learn_bpe(words: Counter, size: int, min_frequency: int = 2) -> tuple[list[str], list[tuple[str, str]]]:
    """Byte-pair merges with XLM's `</w>` end-of-word marker, learnt as Sennrich et al. do, ties broken by
    the smaller pair: the alphabet (each character bare and, where it ends a word, with `</w>`), then
    the most frequent adjacent pair merged until `size` units or no pair occurs `min_frequency` times."""
    splits = {w: [*w[:-1], w[-1] + "</w>"] for w in words if w}
    vocab = sorted({c for w in splits for c in w} | {s for parts in splits.values() for s in parts})
    known, merges = set(vocab), []
    while len(vocab) < size:
        pairs: Counter = Counter()
        for w, parts in splits.items():
            for pair in zip(parts, parts[1:], strict=False):
                pairs[pair] += words[w]
        top = max(pairs.values(), default=0)
        if top < min_frequency:
            break
        a, b = min(pair for pair, n in pairs.items() if n == top)
        merges.append((a, b))
        if a + b not in known:
            known.add(a + b)
            vocab.append(a + b)
        for parts in splits.values():
            i = 0
            while i < len(parts) - 1:
                if parts[i] == a and parts[i + 1] == b:
                    parts[i:i + 2] = [a + b]
                i += 1
    return vocab, merges


# -- comparisons ---------------------------------------------------------------------------------------

# Largest |Δ| observed per comparison kind, printed at the end of the session (see conftest.py).
DELTAS: dict[str, float] = {}


def reference_integrated_gradients(model, ids, moved, baseline_id: int, target: int, steps: int,
                                   **inputs) -> np.ndarray:
    """Integrated Gradients on a transformers model, one node at a time: numpy's Gauss-Legendre nodes on equal
    panels of `PANEL_NODES` (coulisse.tasks.attributions), the `moved` tokens going from `baseline_id`'s vector
    (transformers' own embedding table) to their own, the others held; the gradient of logit `target`."""
    from coulisse.tasks.integrated_gradients import PANEL_NODES

    table = model.get_input_embeddings().weight.detach()
    x = table[ids]
    x0 = torch.where(moved[:, None], table[baseline_id], x)
    t, w = np.polynomial.legendre.leggauss(PANEL_NODES)
    panels = steps // PANEL_NODES
    total = torch.zeros_like(x)
    for k in range(panels):
        for node, weight in zip((k + (t + 1) / 2) / panels, w / 2 / panels, strict=True):
            point = (x0 + node * (x - x0)).requires_grad_(True)
            logit = model(inputs_embeds=point[None], **inputs).logits[0, target]
            (grad,) = torch.autograd.grad(logit, point)
            total += weight * grad
    return ((x - x0) * total).sum(-1).numpy()


def max_delta(kind: str, ours, theirs) -> float:
    a = ours.detach().numpy() if hasattr(ours, "detach") else np.asarray(ours)
    b = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert a.shape == b.shape, (a.shape, b.shape)
    delta = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
    DELTAS[kind] = max(DELTAS.get(kind, 0.0), delta)
    return delta


def assert_close(kind: str, ours, theirs, tol: float = 1e-4) -> None:
    delta = max_delta(kind, ours, theirs)
    assert delta <= tol, f"{kind}: max |Δ| = {delta:.3g} > {tol}"


def assert_distinct_rows(values, min_spread: float = 1e-2) -> None:
    """The oracle must tell inputs apart, or equal logits would prove nothing."""
    rows = np.asarray(values.detach() if hasattr(values, "detach") else values, dtype=np.float64)
    spread = np.abs(rows[:, None, :] - rows[None, :, :]).max(-1)
    off_diagonal = spread[~np.eye(len(rows), dtype=bool)]
    closest = off_diagonal.min()
    assert closest > min_spread, f"two inputs give near-identical outputs ({closest:.3g})"


def as_lists(encoding) -> dict:
    """An encoding (ours or transformers', lists or tensors) as plain nested lists, per key."""
    return {k: (v.tolist() if hasattr(v, "tolist") else v if isinstance(v, int) else list(v))
            for k, v in dict(encoding).items()}


def assert_same_encoding(ours, theirs) -> None:
    """Same keys (token_type_ids only where the reference uses them) and identical values."""
    a, b = as_lists(ours), as_lists(theirs)
    assert sorted(a) == sorted(b), f"keys differ: ours {sorted(a)}, transformers {sorted(b)}"
    for key in b:
        if a[key] != b[key]:
            rows = range(len(b[key])) if b[key] and isinstance(b[key][0], list) else [None]
            for i in rows:
                x, y = (a[key], b[key]) if i is None else (a[key][i], b[key][i])
                assert x == y, f"{key}[{i}] differs:\nours         {x}\ntransformers {y}"


REVIEW_WORDS = ["film", "acteur", "génial", "nul", "ennuyeux", "magnifique", "histoire", "musique", "drôle", "triste"]


def write_reviews_csv(path, n: int = 40, most: int = 12) -> None:
    """A CSV of `n` rows (`id`, `text`): each text 2 to `most` words of REVIEW_WORDS, the same for a given n."""
    import csv
    import random

    rng = random.Random(0)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([i, " ".join(rng.choices(REVIEW_WORDS, k=rng.randint(2, most)))])


def tokenizer_and_transformers(directory: Path, model_type: str):
    """(coulisse's Tokenizer, transformers' AutoTokenizer) read from the same folder, as the pipelines read it."""
    from transformers import AutoTokenizer

    from coulisse.tokenizer import Tokenizer

    return (Tokenizer.from_dir(directory, model_type=model_type, max_positions=512),
            AutoTokenizer.from_pretrained(str(directory)))
