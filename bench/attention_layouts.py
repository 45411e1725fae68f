"""Attention over packed sequences: which layout is fastest, from the qkv GEMM's output to the attention
output, on the batches the engine really cuts (not a test).

    python bench/attention_layouts.py [--n 160] [--threads 2] [--repeats 7] [--dtypes float32,bfloat16]
                                      [--clock wall|cpu] [--compile] [--sweep] [--engine]

Each layout takes the packed `(T, 3H)` output of the query/key/value GEMM and returns the packed `(T, H)`
attention output (or `(B, H)`, each sequence's first query, with first_only), base-size shapes (12 heads
x 64). Batches: the real Allociné reviews of `coulisse bench` tokenized by the bundled CamemBERT's tokenizer
and cut as the engine cuts them (sorted by length, 1,024-token budget), plus a one-sequence batch and a batch
of short sentences. Layouts:

- padded-zeros: the padded copy of before (`new_zeros` + index_put, SDPA with a key mask, gather back);
- padded-empty: the same, from `new_empty`, only the padding rows zeroed;
- per-sequence: one SDPA per sequence on views of the packed tensor (no copy, no mask);
- nested: a jagged nested tensor over the packed tensor, one SDPA call;
- compiled (`--compile`): torch.compile of padded-zeros with dynamic shapes (compiled once for every
  shape), its compile time printed;
- coulisse: what `coulisse.models.bert.packed_attention` does with SDPA (its rule picks one of the above);
- c-kernel: the C kernel the CPU fp32 pipelines install (`models/fastpath.py`, `_attention.c`): the whole
  batch in one call, reading the packed tensor in place (fp32 only).

Timings: each batch's best of `--repeats` interleaved rounds, in ms, summed over the batches of a group;
`--clock cpu` (the process's CPU time, with `--threads 1`) is the measure a busy shared machine does not
distort. `--sweep`: padded vs per-sequence over batch size x length (where the rule's threshold comes from).
`--engine`: the whole forward (`Engine.run`, fp32 and int8) under the layout of before, padded-empty, the
rule, and the C kernel.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_texts import FALLBACK, SHORT_SENTENCE, load_texts  # noqa: E402  (bench/ is run as a script folder)
from torch import Tensor

from coulisse import pipeline
from coulisse.models.bert import Packed, packed_attention
from coulisse.models.fastpath import c_packed_attention

BENCH_MODEL = Path.home() / ".cache" / "coulisse-bench" / "camembert-base-random"  # built by `coulisse bench`
HEADS, HEAD_DIM = 12, 64
H = HEADS * HEAD_DIM


def padded_zeros(qkv: Tensor, p: Packed, first_only: bool) -> Tensor:
    B, L = p.batch_size, p.max_len
    if p.scatter is None:  # one sequence: its own view, as before
        padded = qkv
    else:
        padded = qkv.new_zeros(B * L, 3 * H)
        padded[p.scatter] = qkv
    q, k, v = padded.view(B, L, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
    if first_only:
        return F.scaled_dot_product_attention(q[:, :, :1], k, v, attn_mask=p.key_mask).reshape(B, H)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=p.key_mask)
    out = out.permute(0, 2, 1, 3).reshape(B * L, H)
    return out if p.scatter is None else out[p.scatter]


def padded_empty(qkv: Tensor, p: Packed, first_only: bool) -> Tensor:
    B, L = p.batch_size, p.max_len
    padded = qkv.new_empty(B, L, 3 * H)
    for b, n in enumerate(p.lengths):
        if n < L:
            padded[b, n:].zero_()
    padded.view(B * L, 3 * H)[p.scatter] = qkv
    q, k, v = padded.view(B, L, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
    if first_only:
        return F.scaled_dot_product_attention(q[:, :, :1], k, v, attn_mask=p.key_mask).reshape(B, H)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=p.key_mask)
    return out.permute(0, 2, 1, 3).reshape(B * L, H)[p.scatter]


def per_sequence(qkv: Tensor, p: Packed, first_only: bool) -> Tensor:
    out = qkv.new_empty(p.batch_size if first_only else qkv.shape[0], H)
    start = 0
    for b, n in enumerate(p.lengths):
        q, k, v = qkv[start:start + n].view(1, n, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)  # (1, h, n, d)
        if first_only:
            out[b] = F.scaled_dot_product_attention(q[:, :, :1], k, v).view(H)
        else:
            out[start:start + n] = F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1).reshape(n, H)
        start += n
    return out


def nested(qkv: Tensor, p: Packed, first_only: bool) -> Tensor:
    offsets = torch.tensor([0, *p.lengths]).cumsum(0)
    parts = qkv.view(-1, 3, HEADS, HEAD_DIM).unbind(1)  # each (T, h, d), strided views
    q, k, v = (torch.nested.nested_tensor_from_jagged(t.contiguous(), offsets).transpose(1, 2) for t in parts)
    if first_only:
        raise NotImplementedError("nested: first_only needs a second ragged structure; not measured")
    out = F.scaled_dot_product_attention(q, k, v)  # (B, h, j, d)
    return out.transpose(1, 2).values().reshape(-1, H)


def padded_core(qkv: Tensor, scatter: Tensor, key_mask: Tensor) -> Tensor:
    """padded-zeros for B > 1 with a key mask, tensors only: what torch.compile(dynamic=True) compiles once."""
    B, L = key_mask.shape[0], key_mask.shape[-1]
    padded = qkv.new_zeros(B * L, 3 * H)
    padded[scatter] = qkv
    q, k, v = padded.view(B, L, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    return out.permute(0, 2, 1, 3).reshape(B * L, H)[scatter]


def compiled_layout(core: Callable) -> Callable:
    def layout(qkv: Tensor, p: Packed, first_only: bool) -> Tensor:
        if first_only or p.key_mask is None:
            return padded_zeros(qkv, p, first_only)
        return core(qkv, p.scatter, p.key_mask)
    return layout


def coulisse(qkv: Tensor, p: Packed, first_only: bool) -> Tensor:
    return packed_attention(qkv, p, HEADS, first_only)


def c_kernel(qkv: Tensor, p: Packed, first_only: bool) -> Tensor:
    return c_packed_attention(qkv, p, HEADS, first_only)


def batches(n: int) -> dict[str, list[list[int]]]:
    """Token lengths per batch, per group, as the engine cuts them."""
    pipe = pipeline("sentiment-analysis", model="coulisse/mini-allocine")
    texts, _ = load_texts(n)
    lengths = [len(it.ids) for it in pipe.preprocess(texts)]
    reviews = [[lengths[i] for i in b] for b in pipe.engine.plan(lengths)]
    short = [len(it.ids) for it in pipe.preprocess(FALLBACK)]
    shorts = [sorted((n for n in short if n <= 48), reverse=True)[:32]]
    return {"reviews (engine batches)": reviews, "one review (B=1)": [[max(lengths)]],
            "one short sentence (B=1)": [[len(pipe.preprocess([SHORT_SENTENCE])[0].ids)]],
            "short sentences (one batch)": shorts}


def time_batches(fn: Callable, inputs: list[tuple[Tensor, Packed]], first_only: bool, clock) -> list[float]:
    """ms per batch: each batch timed alone, so that a preemption spoils one batch's sample, not a group's."""
    times = []
    for qkv, p in inputs:
        start = clock()
        fn(qkv, p, first_only)
        times.append((clock() - start) * 1000)
    return times


def check(fns: dict[str, Callable], inputs: list[tuple[Tensor, Packed]], first_only: bool) -> float:
    """Largest |difference| to padded-zeros over every batch and layout: summation order only."""
    worst = 0.0
    for qkv, p in inputs:
        if p.batch_size == 1:
            continue
        ref = padded_zeros(qkv, p, first_only).float()
        for name, fn in fns.items():
            if name != "padded-zeros":
                worst = max(worst, (fn(qkv, p, first_only).float() - ref).abs().max().item())
    return worst


def run(groups: dict[str, list[list[int]]], fns: dict[str, Callable], dtype: torch.dtype, repeats: int,
        clock: Callable[[], float]) -> None:
    torch.manual_seed(0)
    inputs = {group: [(torch.randn(sum(ls), 3 * H).to(dtype),
                       Packed.build(torch.zeros(sum(ls), dtype=torch.long), torch.zeros(sum(ls)), None, ls, "cpu"))
                      for ls in lens] for group, lens in groups.items()}
    for first_only in (False, True):
        usable = {k: f for k, f in fns.items() if not (first_only and k == "nested")
                  and not (dtype != torch.float32 and k == "c-kernel")}
        print(f"\n{dtype}, first_only={first_only}: ms per group (each batch's best of {repeats}), "
              "and speed-up over padded-zeros")
        print(f"  {'group':30s} {'batches':>7s} {'T':>6s}" + "".join(f"{k:>19s}" for k in usable))
        for group, batch in inputs.items():
            for fn in usable.values():  # warm-up
                time_batches(fn, batch, first_only, clock)
            best = {k: [float("inf")] * len(batch) for k in usable}
            for _ in range(repeats):
                for k, fn in usable.items():  # interleaved: each round times every layout once
                    best[k] = list(map(min, best[k], time_batches(fn, batch, first_only, clock)))
            best = {k: sum(times) for k, times in best.items()}
            base = best["padded-zeros"]
            cells = "".join(f"{best[k]:10.2f} ({base / best[k]:4.2f}x)" for k in usable)
            print(f"  {group:30s} {len(batch):7d} {sum(qkv.shape[0] for qkv, _ in batch):6d}{cells}")
        worst = check(usable, [x for batch in inputs.values() for x in batch], first_only)
        print(f"  max |layout - padded-zeros| over every batch: {worst:.2e}")


def sweep(repeats: int, clock: Callable[[], float]) -> None:
    """Where the per-sequence loop stops paying: batch size x longest length, lengths spread over the top fifth
    (as in a length-sorted batch), fp32, all queries. Ratios padded-empty / per-sequence (> 1: the loop wins)."""
    sizes, longest = (2, 4, 8, 16, 32, 64, 128), (4, 8, 16, 32, 64, 128, 256)
    print(f"\nsweep: padded-empty time / per-sequence time (each cell the best of {repeats})")
    print("  B \\ L" + "".join(f"{n:>7d}" for n in longest))
    for B in sizes:
        cells = []
        for L in longest:
            if B * L > 8192:
                cells.append(f"{'':>7s}")
                continue
            lengths = sorted((max(1, L - (i * L) // (5 * B)) for i in range(B)), reverse=True)
            p = Packed.build(torch.zeros(sum(lengths), dtype=torch.long), torch.zeros(sum(lengths)), None,
                             lengths, "cpu")
            batch = [(torch.randn(sum(lengths), 3 * H), p)]
            best = {}
            for _ in range(repeats):
                for k, fn in (("padded", padded_empty), ("loop", per_sequence)):
                    best[k] = min(best.get(k, float("inf")), time_batches(fn, batch, False, clock)[0])
            cells.append(f"{best['padded'] / best['loop']:7.2f}")
        print(f"  {B:5d} " + "".join(cells))


def engine_ab(n: int, repeats: int, clock: Callable[[], float]) -> None:
    """The whole forward (`Engine.run` over n reviews, the bench's camembert-base-sized model, fp32 and int8)
    under four attention layouts, interleaved in one process: before (padded copy of a zeroed buffer),
    padded-empty for every batch, coulisse's SDPA rule (these three in a pipeline built with
    COULISSE_C_ATTENTION=0, swapped by patching the module's functions, which only this benchmark does),
    and the C kernel (a pipeline built as users get it)."""
    from coulisse.models import bert

    rule, padded_rows = bert.per_sequence, bert.padded_rows

    def zeroed(x: Tensor, p: Packed) -> Tensor:
        if p.scatter is None:
            return x.view(1, *x.shape)
        out = x.new_zeros(p.batch_size * p.max_len, x.shape[-1])
        out[p.scatter] = x
        return out.view(p.batch_size, p.max_len, -1)

    variants = {"before (zeroed padded copy)": (lambda ls: len(ls) == 1, zeroed),
                "padded-empty always": (lambda ls: len(ls) == 1, padded_rows),
                "coulisse (rule)": (rule, padded_rows),
                "C kernel": (rule, padded_rows)}
    texts, _ = load_texts(n)
    for quantize in (None, "int8"):
        os.environ["COULISSE_C_ATTENTION"] = "0"  # SDPA, its layouts patched in below
        sdpa = pipeline("sentiment-analysis", model=str(BENCH_MODEL), quantize=quantize)
        del os.environ["COULISSE_C_ATTENTION"]
        c = pipeline("sentiment-analysis", model=str(BENCH_MODEL), quantize=quantize)
        items = sdpa.preprocess(texts)
        sdpa.engine.run(items[:4])  # warm-up
        c.engine.run(items[:4])
        best = {k: float("inf") for k in variants}
        outs = {}
        for _ in range(repeats):
            for k, (per_sequence, rows) in variants.items():
                bert.per_sequence, bert.padded_rows = per_sequence, rows
                start = clock()
                outs[k] = (c if k == "C kernel" else sdpa).engine.run(items)
                best[k] = min(best[k], clock() - start)
        bert.per_sequence, bert.padded_rows = rule, padded_rows
        before = "before (zeroed padded copy)"
        base = best[before]
        delta = max(abs(a - b).max() for k in variants for a, b in zip(outs[k], outs[before], strict=True))
        print(f"\nEngine.run, {n} reviews, quantize={quantize}: s (best of {repeats}), x before; "
              f"max |Δlogit| vs before {delta:.1e}")
        for k, t in best.items():
            print(f"  {k:30s} {t:8.2f} ({base / t:4.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the process's CPU time, immune to a busy machine's preemptions (use with 1 thread)")
    parser.add_argument("--engine", action="store_true", help="only the whole forward, four layouts")
    parser.add_argument("--sweep", action="store_true", help="only the batch size x length grid")
    parser.add_argument("--layouts", default="padded-zeros,padded-empty,per-sequence,coulisse,c-kernel")
    parser.add_argument("--compile", action="store_true", help="add torch.compile(dynamic=True) of padded-zeros")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.sweep:
        print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
              f"load average {os.getloadavg()[0]:.2f}")
        return sweep(args.repeats, clock)
    if args.engine:
        print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
              f"load average {os.getloadavg()[0]:.2f}")
        engine_ab(args.n, args.repeats, clock)
        return print(f"load average at the end {os.getloadavg()[0]:.2f}")
    groups = batches(args.n)
    for group, lens in groups.items():
        print(f"{group}: {len(lens)} batches, sizes {[len(x) for x in lens][:12]}, "
              f"longest {max(map(max, lens))}, tokens {sum(map(sum, lens))}")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
          f"load average {os.getloadavg()[0]:.2f}")
    fns: dict[str, Callable] = {"padded-zeros": padded_zeros, "padded-empty": padded_empty,
                                "per-sequence": per_sequence, "nested": nested, "coulisse": coulisse,
                                "c-kernel": c_kernel}
    fns = {k: f for k, f in fns.items() if k in args.layouts.split(",")}
    if args.compile:
        # Tensors only: a Packed argument (a list of lengths) would make dynamo recompile per batch shape.
        core = torch.compile(padded_core, dynamic=True)
        start = time.perf_counter()
        p = Packed.build(torch.zeros(70, dtype=torch.long), torch.zeros(70), None, [40, 30], "cpu")
        core(torch.randn(70, 3 * H), p.scatter, p.key_mask)
        print(f"torch.compile(dynamic=True) of padded-zeros: first call {time.perf_counter() - start:.1f} s")
        fns["compiled"] = compiled_layout(core)
    for name in args.dtypes.split(","):
        run(groups, fns, getattr(torch, name), args.repeats, clock)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
