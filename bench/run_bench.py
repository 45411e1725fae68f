"""Issue 3's benchmark: transformers, ONNX Runtime fp32/int8, coulisse exact/int8, in one run on one model.

    coulisse bench                       # 160 Allociné reviews, every system (or: python bench/run_bench.py)
    coulisse bench --n 20 --systems coulisse-exact,coulisse-int8 --json out.json

Each (system, batch size) runs in its own process (bench_worker.py), so its peak RSS is its own; cold
start is timed on a fresh process from launch to the first answer on stdout (`coulisse classify` for
coulisse). The model is a random camembert-base-sized classifier with the real CamemBERT tokenizer,
built once into a cache folder (bench_model.py).
"""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
import bench_report  # noqa: E402
import bench_texts  # noqa: E402
from bench_requirements import leave_out_unavailable, missing, refusal  # noqa: E402, F401 (the CLI's)

SYSTEMS = ("transformers", "ort-fp32", "ort-int8", "coulisse-exact", "coulisse-int8", "coulisse-bf16",
           "coulisse-fast")
# Batch sizes tried per system; 0 = coulisse's own token-budgeted batches, JOB_KERNELS the same batches with
# the fp32 kernels a corpus job chooses (`pipeline(throughput=True)`, as `coulisse classify -i` builds it).
BATCHES = {"transformers": (1, 8), "ort-fp32": (1, 8), "ort-int8": (1, 8),
           "coulisse-exact": (0, bench_report.JOB_KERNELS),
           "coulisse-int8": (0,), "coulisse-bf16": (0,), "coulisse-fast": (0,)}
COLD_FLAGS = {"coulisse-exact": [], "coulisse-int8": ["--quantize", "int8"], "coulisse-bf16": None,
              "coulisse-fast": ["--fast"]}  # None: no CLI flag (bf16 is a library option)
VERIFY_TEXTS = 4


@dataclass
class Options:
    n: int = 160
    seed: int = 0
    systems: tuple[str, ...] = SYSTEMS
    threads: int | None = None
    max_batch_tokens: int | None = None  # None: each pipeline's own (the kernel plan's budget)
    repeats: int = 1
    latency_repeats: int = 50
    cold_repeats: int = 2
    timeout: float = 900.0
    model_dir: Path = bench_model.DEFAULT_DIR
    json_path: Path | None = None
    markdown_path: Path | None = None
    kernels: bool = True  # measure the GEMM peaks (bench/gemm_peaks.py) in the same run
    interleave: bool = True  # every system loaded at once, their timed passes in turn (else one after another)


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def machine() -> dict:
    model = platform.processor() or platform.machine()
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return {"cpu": model, "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def cpu_plan() -> dict:
    """The CPU's features and the kernels coulisse picks for them (what `coulisse info` prints)."""
    from coulisse.engine.cpu import this_machine

    plan = this_machine()
    f = plan.features
    kind = "amx" if f.has("amx_tile") else "vnni" if f.vnni else "avx2" if f.has("avx2") else "other"
    return {"lines": plan.lines(), "fast": plan.fast, "kind": kind}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("coulisse", "torch", "transformers", "onnxruntime", "onnx", "tokenizers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def make_spec(opts: Options, paths: dict, texts: list[str]) -> dict:
    from tokenizers import Tokenizer

    config = json.loads((Path(paths["model_dir"]) / "config.json").read_text(encoding="utf-8"))
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    max_length = config["max_position_embeddings"] - config["pad_token_id"] - 1
    tokenizer = Tokenizer.from_file(paths["onnx_tokenizer"])
    tokenizer.enable_truncation(max_length)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    return {
        **paths, "texts": texts, "short_sentence": bench_texts.SHORT_SENTENCE,
        "verify_texts": texts[:VERIFY_TEXTS] + [bench_texts.SHORT_SENTENCE],
        "total_tokens": sum(lengths), "max_tokens": max(lengths), "id2label": config["id2label"],
        "pad_token_id": config["pad_token_id"], "max_length": max_length, "threads": opts.threads,
        "max_batch_tokens": opts.max_batch_tokens, "repeats": opts.repeats,
        "latency_repeats": opts.latency_repeats, "warmup_texts": min(8, len(texts)),
        # The encoder's linear layers, per token: 2 ops per multiply-add (attention's own products excluded).
        "flops_per_token": 2 * layers * (4 * hidden * hidden + 2 * hidden * inner),
    }


def child_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    env.pop("COULISSE_QUANTIZE", None)
    env.pop("COULISSE_THREADS", None)
    return env


def run_worker(spec_path: Path, system: str, batch: int, timeout: float, tmp: Path) -> dict:
    out = tmp / f"{system}-{batch}.json"
    cmd = [sys.executable, str(BENCH / "bench_worker.py"), "--spec", str(spec_path), "--system", system,
           "--batch", str(batch), "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        return {"system": system, "batch": batch, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-20:]
        return {"system": system, "batch": batch, "error": tail[-1] if tail else f"exit {proc.returncode}",
                "stderr_tail": tail}
    return json.loads(out.read_text(encoding="utf-8"))


class Worker:
    """A bench_worker.py process in its interleaved mode: loaded once, then one timed pass per call."""

    def __init__(self, spec_path: Path, system: str, batch: int, timeout: float, tmp: Path):
        self.system, self.batch, self.timeout = system, batch, timeout
        self.out, self.log = tmp / f"{system}-{batch}.json", tmp / f"{system}-{batch}.log"
        cmd = [sys.executable, str(BENCH / "bench_worker.py"), "--spec", str(spec_path), "--system", system,
               "--batch", str(batch), "--out", str(self.out), "--interleaved"]
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         text=True, env=child_env())
        self.error: str | None = None
        self._expect("ready")

    def _answer(self) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else None
        if not line:
            self.proc.kill()
            self.proc.wait()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-20:]
            self.error = (f"timed out after {self.timeout:.0f} s" if ready == [] else
                          (tail[-1] if tail else f"exit {self.proc.returncode}"))
            return None
        return line.strip()

    def _expect(self, word: str) -> None:
        answer = self._answer()
        if answer is not None and answer != word:
            self.error = f"the worker said {answer!r} where {word!r} was expected"

    def one_pass(self) -> None:
        if self.error is None:
            self.proc.stdin.write("pass\n")
            self.proc.stdin.flush()
            answer = self._answer()
            if answer is not None:
                print(f"  {self.system} ({bench_report.batch_name(self.system, self.batch)}): "
                      f"{float(answer):.2f} s", file=sys.stderr)

    def finish(self) -> dict:
        if self.error is None:
            self.proc.stdin.write("finish\n")
            self.proc.stdin.flush()
            self._expect("done")
        self.proc.wait()
        if self.error is not None or not self.out.is_file():
            tail = self.log.read_text(errors="replace").strip().splitlines()[-20:]
            return {"system": self.system, "batch": self.batch, "error": self.error or "no result written",
                    "stderr_tail": tail}
        return json.loads(self.out.read_text(encoding="utf-8"))


def run_interleaved(spec_path: Path, pairs: list[tuple[str, int]], repeats: int, timeout: float,
                    tmp: Path, after_rounds: Callable[[], None] | None = None) -> list[dict]:
    """Load every system, then `repeats` rounds of one pass each, the order rotated every round; each
    worker then measures its latency, logits and peak RSS alone. Ratios thus compare passes that ran
    minutes apart at most, not a whole run apart. `after_rounds` runs right after the last round (the GEMM
    peaks: measured next to the passes they divide), the workers idle meanwhile."""
    workers = []
    for system, batch in pairs:
        print(f"loading {system} ({bench_report.batch_name(system, batch)})...", file=sys.stderr)
        workers.append(Worker(spec_path, system, batch, timeout, tmp))
    for round_ in range(repeats):
        print(f"round {round_ + 1} of {repeats}:", file=sys.stderr)
        shift = round_ % len(workers)
        for worker in workers[shift:] + workers[:shift]:
            worker.one_pass()
    if after_rounds is not None:
        after_rounds()
    return [worker.finish() for worker in workers]


TRANSFORMERS_COLD = (
    "import sys\n"
    "from transformers import pipeline\n"
    "p = pipeline('sentiment-analysis', model=sys.argv[1])\n"
    "print(p(sys.argv[2]), flush=True)\n"
)
ORT_COLD = (
    "import sys\n"
    "import numpy as np, onnxruntime as ort\n"
    "from tokenizers import Tokenizer\n"
    "tok = Tokenizer.from_file(sys.argv[1]); tok.enable_truncation(512)\n"
    "so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[3])\n"
    "so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL\n"
    "s = ort.InferenceSession(sys.argv[2], so, providers=['CPUExecutionProvider'])\n"
    "ids = np.array([tok.encode(sys.argv[4]).ids], dtype=np.int64)\n"
    "print(s.run(['logits'], {'input_ids': ids, 'attention_mask': np.ones_like(ids)})[0], flush=True)\n"
)


def coulisse_command() -> list[str]:
    script = Path(sys.executable).parent / "coulisse"
    if script.is_file():
        return [str(script)]
    found = shutil.which("coulisse")
    if found:
        return [found]
    return [sys.executable, "-c", "from coulisse.interfaces.cli import main; main()"]


def cold_command(system: str, spec: dict) -> list[str]:
    short = spec["short_sentence"]
    if system == "transformers":
        return [sys.executable, "-c", TRANSFORMERS_COLD, spec["model_dir"], short]
    if system.startswith("ort-"):
        path = spec["onnx_fp32" if system == "ort-fp32" else "onnx_int8"]
        return [sys.executable, "-c", ORT_COLD, spec["onnx_tokenizer"], path, str(spec["threads"]), short]
    return [*coulisse_command(), "classify", "--model", spec["model_dir"], "--threads", str(spec["threads"]),
            *COLD_FLAGS[system], short]


def cold_start(cmd: list[str], timeout: float) -> float | str:
    """Seconds from launching the process to its first line on stdout (the answer)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=child_env())
        try:
            line = proc.stdout.readline()
            seconds = time.perf_counter() - start
            proc.stdout.read()
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return "timed out"
        if code != 0 or not line.strip():
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            return f"failed: {' | '.join(tail)}"
    return seconds


def measure_cold(systems: tuple[str, ...], spec: dict, repeats: int, timeout: float) -> dict:
    results = {}
    for system in systems:
        if COLD_FLAGS.get(system, []) is None:
            continue
        times = [cold_start(cold_command(system, spec), timeout) for _ in range(repeats)]
        ok = [t for t in times if isinstance(t, float)]
        results[system] = {"cold_start_s": min(ok) if ok else None, "tries": times}
        print(f"  cold start {system}: {times}", file=sys.stderr)
    return results


def measure_kernels(threads: int, timeout: float, tmp: Path) -> dict:
    """The GEMM peaks of this machine (bench/gemm_peaks.py --peaks-only), in its own process."""
    out = tmp / "kernels.json"
    cmd = [sys.executable, str(BENCH / "gemm_peaks.py"), "--peaks-only", "--threads", str(threads), "--repeats", "5",
           "--json", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.is_file():
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(out.read_text(encoding="utf-8"))


def check_systems(systems: tuple[str, ...]) -> None:
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(unknown)}; choose among {', '.join(SYSTEMS)}.")


def run(opts: Options) -> dict:
    check_systems(opts.systems)
    opts.threads = opts.threads or physical_cores()
    load_before = os.getloadavg()
    onnx = any(s.startswith("ort-") for s in opts.systems)
    if not bench_model.model_ready(opts.model_dir) or (onnx and not bench_model.exports_ready(opts.model_dir)):
        what = "the model and its ONNX exports" if onnx else "the model"
        print(f"preparing {what} in {opts.model_dir} (once: cached for the next runs)...", file=sys.stderr)
    paths = bench_model.ensure(opts.model_dir, onnx=onnx)
    texts, source = bench_texts.load_texts(opts.n, opts.seed)
    spec = make_spec(opts, paths, texts)
    runs = []
    with tempfile.TemporaryDirectory(prefix="coulisse-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        pairs = [(system, batch) for system in opts.systems for batch in BATCHES[system]]
        kernels: dict = {}

        def peaks() -> None:
            if opts.kernels:
                print("measuring the GEMM peaks (bench/gemm_peaks.py)...", file=sys.stderr)
                kernels.update(measure_kernels(opts.threads, opts.timeout, Path(tmp)))

        if opts.interleave:
            runs = run_interleaved(spec_path, pairs, opts.repeats, opts.timeout, Path(tmp), after_rounds=peaks)
        else:
            for system, batch in pairs:
                print(f"running {system} ({bench_report.batch_name(system, batch)})...", file=sys.stderr)
                runs.append(run_worker(spec_path, system, batch, opts.timeout, Path(tmp)))
            peaks()
    cold = measure_cold(opts.systems, spec, opts.cold_repeats, opts.timeout) if opts.cold_repeats else {}
    results = {
        "machine": machine(), "versions": versions(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "texts": {"source": source, "n": len(texts), "seed": opts.seed, "total_tokens": spec["total_tokens"],
                  "max_tokens": spec["max_tokens"]},
        "settings": {"threads": opts.threads, "max_batch_tokens": opts.max_batch_tokens,
                     "repeats": opts.repeats, "interleaved": opts.interleave, "latency_repeats": opts.latency_repeats,
                     "cold_repeats": opts.cold_repeats, "short_sentence": spec["short_sentence"],
                     "model_dir": paths["model_dir"]},
        "runs": runs, "cold_start": cold, "kernels": kernels, "cpu": cpu_plan(),
        "flops_per_token": spec["flops_per_token"],
    }
    results["summary"] = bench_report.summarize(results)
    return results


def report(results: dict, opts: Options) -> None:
    print(bench_report.render_text(results))
    if opts.json_path:
        text = json.dumps(bench_report.for_json(results), indent=2, ensure_ascii=False)
        opts.json_path.write_text(text, encoding="utf-8")
        print(f"raw results: {opts.json_path}", file=sys.stderr)
    if opts.markdown_path:
        opts.markdown_path.write_text(bench_report.render_markdown(results), encoding="utf-8")
        print(f"markdown: {opts.markdown_path}", file=sys.stderr)


if __name__ == "__main__":
    from coulisse.interfaces.bench_command import bench

    bench(prog_name="python bench/run_bench.py")
