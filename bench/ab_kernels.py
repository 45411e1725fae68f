"""Two builds of the C kernels in one process, alternating (not a test): the A/B that process-to-process noise
hides. On a shared 2-core VM the same build ran 42 to 53 ms for the same 48 GEMMs in separate processes, while
in one process alternating rounds agree within a few percent.

    cp src/coulisse/models/_int8*.so /tmp/a.so        # the build before a change
    pip install -e . --no-deps; cp src/coulisse/models/_int8*.so /tmp/b.so
    python bench/ab_kernels.py /tmp/a.so /tmp/b.so [--rows 1024,64,8] [--rounds 9] [--what gemm,passes,few,attention]
    python bench/ab_kernels.py /tmp/a.so /tmp/b.so --what pipeline [--n 160] [--batch-tokens 1024]

Each build is loaded under a module name of its own (its init symbol stays `PyInit__int8`), so both live in
the process with their own state. What runs, per row count, the 48 weight matrices of a 12-layer base-size
encoder in turn (85 MB of codes, read from memory as in a forward):

- gemm: `int8_gemm`'s product alone;
- passes: `int8_gemm` with what finishes each layer (dequantize; GELU + codes; residual + LayerNorm + codes);
- few: `small_gemm`, the few-row kernel;
- attention: the C attention (bf16 products) over a batch of 7 sequences (1,000 tokens), 12 heads x 64;
- pipeline: the whole --fast pipeline over `--n` real reviews (bench_texts.py; the model `coulisse bench` builds), in
  batches of up to `--batch-tokens` tokens (the engine's default 1,024; `coulisse bench` runs 4,096),
  the C module it calls swapped between rounds (same bits: both builds' logits equal; both builds must take the
  arguments the Python code at hand passes).

Prints best / median ms per build and whether both gave the same bits. Allocations behave as in the engine (glibc's
malloc thresholds raised, `keep_activations_on_heap`): with glibc's own, the outputs' pages were mapped and faulted
in afresh at some sizes and not others (48 GEMMs with their passes: 57 ms at 960 rows, 67 at 992).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from coulisse.models import native
from coulisse.models import quantize as Q
from coulisse.weights.mapped import keep_activations_on_heap

SHAPES = [(768, 2304, 1, False), (768, 768, 2, False), (768, 3072, 1, True), (3072, 768, 2, False)]


def load(path: str, i: int, folder: Path):
    """The build at `path` as a module of its own (a copy: the loader keys modules by file too)."""
    copy = folder / f"b{i}" / Path(path).name
    copy.parent.mkdir()
    shutil.copy(path, copy)
    spec = importlib.util.spec_from_file_location(f"ab{i}._int8", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layers(generator) -> list:
    out = []
    for _ in range(12):
        for k, n, op, gelu in SHAPES:
            q, scale = Q.quantize_weight(torch.randn(n, k, generator=generator), 127)
            out.append((k, n, op, gelu, Q._small_pack(q, scale), torch.randn(n, generator=generator)))
    return out


def gemm_runner(weights, m: int, what: str, generator):
    xs = {k: torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=generator) for k in (768, 3072)}
    x_scale, residual = torch.rand(m, 1) + 0.5, torch.randn(m, 768, generator=generator)
    gamma, beta = torch.randn(768, generator=generator), torch.randn(768, generator=generator)

    def run(kernel, keep: list | None = None):
        for i, (k, n, op, gelu, own, bias) in enumerate(weights):
            out = torch.empty(m, n)
            ptrs = (xs[k].data_ptr(), *(t.data_ptr() for t in own), out.data_ptr(), m, k, n, 2)
            codes = None
            if what == "few":
                kernel.small_gemm(*ptrs)
            elif what == "gemm":
                kernel.int8_gemm(*ptrs, 0, 0, 0, False, 0, 0, 0, 0.0, 0, 0)
            else:
                codes = (torch.empty(m, n, dtype=torch.uint8), torch.empty(m, 1)) if op == 2 or gelu else None
                norm = (residual.data_ptr(), gamma.data_ptr(), beta.data_ptr()) if op == 2 else (0, 0, 0)
                kernel.int8_gemm(*ptrs, op, x_scale.data_ptr(), bias.data_ptr(), gelu, *norm, 1e-5,
                                 *((codes[0].data_ptr(), codes[1].data_ptr()) if codes else (0, 0)))
            if keep is not None and i < len(SHAPES):
                keep.extend([out, *(codes or ())])

    return run


def attention_runner(generator):
    lengths = [220, 180, 150, 140, 130, 120, 60]
    qkv = torch.randn(sum(lengths), 3 * 768, generator=generator)
    starts = torch.tensor([0, *torch.tensor(lengths).cumsum(0)[:-1].tolist()], dtype=torch.long)
    count = torch.tensor(lengths, dtype=torch.long)

    def run(kernel, keep: list | None = None):
        out = torch.empty(qkv.shape[0], 768)
        kernel.attention(qkv.data_ptr(), out.data_ptr(), starts.data_ptr(), count.data_ptr(), len(lengths), 768, 12,
                         0.125, False, 2, True)
        if keep is not None:
            keep.append(out)

    return run


def compare(builds, run, rounds: int) -> str:
    kept = [[] for _ in builds]
    for kernel, keep in zip(builds, kept, strict=True):
        run(kernel, keep)
    same = all(torch.equal(a, b) for a, b in zip(*kept, strict=True))
    times = [[] for _ in builds]
    for _ in range(rounds):
        for kernel, t in zip(builds, times, strict=True):
            start = time.perf_counter()
            run(kernel)
            t.append(time.perf_counter() - start)
    return "   ".join(f"{'AB'[i]} {min(t) * 1e3:7.2f} / {statistics.median(t) * 1e3:7.2f} ms"
                      for i, t in enumerate(times)) + f"   same bits: {same}"


def pipeline_runner(n: int, batch_tokens: int = 1024):
    """The --fast pipeline over n reviews, run on a given build: the layers look their C module up at each call
    (native.kernels, quantize._gemm_kernels), so swapping those swaps what runs."""
    from bench_model import ensure
    from bench_texts import load_texts

    from coulisse import pipeline

    texts = load_texts(n)[0]
    pipe = pipeline("sentiment-analysis", model=str(ensure()["model_dir"]), fast=True, threads=2,
                    max_batch_tokens=batch_tokens)

    def run(kernel, keep: list | None = None):
        native._KERNELS = kernel
        Q._gemm_kernels = lambda: kernel
        logits = pipe(texts, top_k=None, function_to_apply="none")
        if keep is not None:
            keep.append(torch.tensor([[r["score"] for r in sorted(row, key=lambda r: r["label"])] for row in logits]))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rows", default="1024,64,8")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--what", default="gemm,passes,few,attention", help="and pipeline")
    parser.add_argument("--n", type=int, default=160, help="reviews for --what pipeline")
    parser.add_argument("--batch-tokens", type=int, default=1024, help="the pipeline's max_batch_tokens")
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_activations_on_heap()
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        builds = [load(path, i, Path(folder)) for i, path in enumerate((args.a, args.b))]
        print(f"A {args.a}\nB {args.b}\n2 threads; best / median of {args.rounds} alternating rounds")
        what = args.what.split(",")
        if "pipeline" in what:
            run = pipeline_runner(args.n, args.batch_tokens)
            print(f"  --fast pipeline, {args.n} reviews, batches of {args.batch_tokens} tokens: "
                  f"{compare(builds, run, args.rounds)}")
        if "attention" in what:
            result = compare(builds, attention_runner(generator), 10 * args.rounds)
            print(f"  attention, 7 sequences, 1,000 tokens: {result}")
        weights = layers(generator) if set(what) - {"attention", "pipeline"} else []
        for kind in ("gemm", "passes", "few"):
            if kind not in what:
                continue
            for m in (int(v) for v in args.rows.split(",") if v):
                run = gemm_runner(weights, m, kind, generator)
                print(f"  48 GEMMs, {kind:<6} {m:>5} rows: {compare(builds, run, args.rounds)}")


if __name__ == "__main__":
    main()
