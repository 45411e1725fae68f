"""One system of the benchmark, measured in its own process (so its peak RSS is its own).

    python bench/bench_worker.py --spec SPEC.json --system coulisse-int8 --batch 0 --out RESULT.json

With `--interleaved` it loads, then runs one timed pass per `pass` line on stdin and writes its result
on `finish`: run_bench.py holds every system loaded at once and runs their passes in turn, so a change
of machine speed during the run (other tenants of a VM) falls on all of them alike.

Systems: transformers, ort-fp32, ort-int8 (with --batch 1 or 8), coulisse-exact, coulisse-int8,
coulisse-bf16, coulisse-fast (they batch by token budget; --batch -1 builds the pipeline with the corpus
jobs' fp32 kernels, `throughput=True`; other values are ignored). The spec (written by
run_bench.py) holds the texts, the short sentence, the texts whose logits are compared, the model paths,
threads and repeat counts.

Every system runs the same steps: load, warm up, `repeats` timed passes over all texts (the best one
counts; tokenization and post-processing are inside the timing, as a user calls them), `latency_repeats`
calls on the short sentence (p50), raw logits on the verification texts, then peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


class System:
    """What the harness needs from a system: labels for many texts, one answer, raw logits."""

    def __init__(self, spec: dict, batch: int):
        self.spec = spec
        self.batch = batch
        self.labels = [v for _, v in sorted((int(k), v) for k, v in spec["id2label"].items())]

    def classify(self, texts: list[str]) -> list[str]:
        raise NotImplementedError

    def classify_one(self, text: str) -> str:
        return self.classify([text])[0]

    def logits(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def rows_to_logits(self, results: list[list[dict]]) -> np.ndarray:
        """Pipeline output with top_k=None, function_to_apply="none" -> `(N, labels)` in label-id order."""
        order = {label: i for i, label in enumerate(self.labels)}
        out = np.zeros((len(results), len(self.labels)), dtype=np.float64)
        for row, scores in zip(out, results, strict=True):
            for entry in scores:
                row[order[entry["label"]]] = entry["score"]
        return out


class Transformers(System):
    def __init__(self, spec: dict, batch: int):
        super().__init__(spec, batch)
        import torch
        from transformers import pipeline

        torch.set_num_threads(spec["threads"])
        self.pipe = pipeline("sentiment-analysis", model=spec["model_dir"], device="cpu")

    def classify(self, texts):
        return [r["label"] for r in self.pipe(texts, batch_size=self.batch, truncation=True)]

    def classify_one(self, text):
        return self.pipe(text, truncation=True)[0]["label"]

    def logits(self, texts):
        return self.rows_to_logits(self.pipe(texts, batch_size=1, truncation=True, top_k=None,
                                             function_to_apply="none"))


# The pipeline options of each coulisse system.
COULISSE = {"coulisse-exact": {}, "coulisse-int8": {"quantize": "int8"}, "coulisse-bf16": {"dtype": "bfloat16"},
            "coulisse-fast": {"fast": True}}


class Coulisse(System):
    def __init__(self, spec: dict, batch: int, options: dict):
        super().__init__(spec, batch)
        import coulisse

        self.pipe = coulisse.pipeline("sentiment-analysis", model=spec["model_dir"], **options,
                                      threads=spec["threads"], max_batch_tokens=spec["max_batch_tokens"])

    def classify(self, texts):
        return [r["label"] for r in self.pipe(texts)]

    def classify_one(self, text):
        result = self.pipe(text)
        # transformers answers one string with a one-item list; accept either shape.
        return (result[0] if isinstance(result, list) else result)["label"]

    def logits(self, texts):
        return self.rows_to_logits(self.pipe(texts, top_k=None, function_to_apply="none"))


class OnnxRuntime(System):
    """An ONNX Runtime session on all cores, graph optimizations ALL, fed by the `tokenizers` library.

    batch 1 runs each text alone (no padding); batch 8 sorts the texts by length first, so each batch
    pads little, then restores the input order.
    """

    def __init__(self, spec: dict, batch: int, path: str):
        super().__init__(spec, batch)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(spec["onnx_tokenizer"])
        self.tokenizer.enable_truncation(spec["max_length"])
        self.tokenizer.no_padding()
        self.pad_id = spec["pad_token_id"]

    def _run(self, encodings) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        return self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

    def logits(self, texts):
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for start in range(0, len(order), self.batch):
            chunk = order[start:start + self.batch]
            out[chunk] = self._run([encodings[i] for i in chunk])
        return out

    def classify(self, texts):
        return [self.labels[i] for i in self.logits(texts).argmax(axis=1)]


def peak_rss_mb() -> float:
    """This process's own peak RSS. Linux carries ru_maxrss across fork and exec, so a worker started by a
    parent that grew (the ONNX export runs in the parent) would report the parent's peak: VmHWM, the
    high-water mark of this program's own address space, starts afresh at exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS

def build(spec: dict, system: str, batch: int) -> System:
    if system == "transformers":
        return Transformers(spec, batch)
    if system in ("ort-fp32", "ort-int8"):
        return OnnxRuntime(spec, batch, spec["onnx_fp32" if system == "ort-fp32" else "onnx_int8"])
    if system in COULISSE:
        from bench_report import JOB_KERNELS  # bench/ is run as a script folder

        # JOB_KERNELS: the kernels a corpus job picks; 0: pipeline()'s default.
        return Coulisse(spec, batch, {**COULISSE[system], **({"throughput": True} if batch == JOB_KERNELS else {})})
    raise SystemExit(f"unknown system {system!r}; this is a bug in run_bench.py")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class Measurement:
    """One system's steps, callable one at a time: the interleaved harness asks for one pass at a time."""

    def __init__(self, spec: dict, system: str, batch: int):
        self.spec, self.system, self.batch = spec, system, batch
        self.load_s, self.runner = timed(lambda: build(spec, system, batch))
        self.runner.classify(spec["texts"][: spec["warmup_texts"]])
        for _ in range(3):
            self.runner.classify_one(spec["short_sentence"])
        self.passes: list[float] = []
        self.labels: list[str] = []

    def one_pass(self) -> float:
        seconds, self.labels = timed(lambda: self.runner.classify(self.spec["texts"]))
        self.passes.append(seconds)
        return seconds

    def finish(self) -> dict:
        spec, short = self.spec, self.spec["short_sentence"]
        latencies = []
        for _ in range(spec["latency_repeats"]):
            seconds, _ = timed(lambda: self.runner.classify_one(short))
            latencies.append(seconds)
        verify = self.runner.logits(spec["verify_texts"])
        best = min(self.passes)
        return {
            "system": self.system, "batch": self.batch, "load_s": self.load_s, "pass_s": self.passes,
            "best_pass_s": best, "reviews_per_s": len(spec["texts"]) / best,
            "tokens_per_s": spec["total_tokens"] / best,
            "latency_p50_ms": 1000 * statistics.median(latencies),
            "latency_p90_ms": 1000 * float(np.percentile(latencies, 90)),
            "peak_rss_mb": peak_rss_mb(),
            "labels": self.labels, "verify_logits": verify.tolist(),
        }


def measure(spec: dict, system: str, batch: int) -> dict:
    m = Measurement(spec, system, batch)
    for _ in range(spec["repeats"]):
        m.one_pass()
    return m.finish()


def serve(spec: dict, system: str, batch: int, out: Path) -> None:
    """The interleaved protocol (run_bench.py): load and warm up, say `ready`; then on stdin, `pass` runs
    one timed pass and answers its seconds, `finish` writes the result to `out` and ends."""
    m = Measurement(spec, system, batch)
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "pass":
            print(f"{m.one_pass():.9f}", flush=True)
        elif command == "finish":
            out.write_text(json.dumps(m.finish()), encoding="utf-8")
            print("done", flush=True)
            return
        else:
            raise SystemExit(f"bench_worker: unknown command {command!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--interleaved", action="store_true",
                        help="take `pass` / `finish` commands on stdin (run_bench.py drives several at once)")
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    if args.interleaved:
        serve(spec, args.system, args.batch, args.out)
        return
    result = measure(spec, args.system, args.batch)
    args.out.write_text(json.dumps(result), encoding="utf-8")
    print(f"{args.system} batch {args.batch}: {result['reviews_per_s']:.2f} reviews/s", file=sys.stderr)


if __name__ == "__main__":
    main()
