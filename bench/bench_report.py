"""Turns the benchmark's raw runs into ratios, checks and the issue's targets, as text or Markdown."""

from __future__ import annotations

import numpy as np

NAMES = {"transformers": "transformers", "ort-fp32": "ONNX Runtime fp32", "ort-int8": "ONNX Runtime int8",
         "coulisse-exact": "coulisse exact", "coulisse-int8": "coulisse int8", "coulisse-bf16": "coulisse bf16",
         "coulisse-fast": "coulisse --fast"}
# Which ONNX Runtime precision each system is compared with.
ORT_PEER = {"transformers": "ort-fp32", "ort-fp32": "ort-fp32", "coulisse-exact": "ort-fp32",
            "ort-int8": "ort-int8", "coulisse-int8": "ort-int8", "coulisse-bf16": "ort-fp32",
            "coulisse-fast": "ort-int8"}
# The GEMM precision each system's linear layers run in (coulisse-fast: the plan's mode, see precision()).
PRECISION = {"transformers": "fp32", "ort-fp32": "fp32", "ort-int8": "int8", "coulisse-exact": "fp32",
             "coulisse-int8": "int8", "coulisse-bf16": "bf16"}
# Issue 15's per-machine target for the fastest int8 mode against transformers' best.
INT8_GOAL = {"amx": ("coulisse-fast", 8.0), "vnni": ("coulisse-int8", 4.0), "avx2": ("coulisse-int8", 2.5)}
# (description, numerator system, denominator system, metric, target, higher is better)
SPEED, LATENCY, RSS = "reviews_per_s", "latency_p50_ms", "peak_rss_mb"
TARGETS = [
    ("coulisse exact speed / transformers best", "coulisse-exact", "transformers", SPEED, 1.4, True),
    ("coulisse exact speed / ONNX Runtime fp32", "coulisse-exact", "ort-fp32", SPEED, 1.25, True),
    ("coulisse int8 speed / transformers best", "coulisse-int8", "transformers", SPEED, 4.0, True),
    ("coulisse int8 speed / ONNX Runtime int8", "coulisse-int8", "ort-int8", SPEED, 1.6, True),
    ("coulisse exact short-sentence p50 / transformers", "coulisse-exact", "transformers", LATENCY, 1.0,
     False),
    ("coulisse int8 short-sentence p50 / transformers", "coulisse-int8", "transformers", LATENCY, 1.0, False),
    ("coulisse exact peak RSS / transformers", "coulisse-exact", "transformers", RSS, 1.0, False),
    ("coulisse int8 peak RSS / transformers", "coulisse-int8", "transformers", RSS, 1.0, False),
]


# The "batch" of a coulisse run with `throughput=True`: token-budgeted batches, fp32 kernels chosen for full
# batches (coulisse.engine.gemm_choice), as corpus jobs run; batch 0 is `pipeline()`'s default.
JOB_KERNELS = -1


# What coulisse's systems batch by when the bench gives no budget (coulisse.engine.cpu.AMX_BATCH_TOKENS)
PLAN_BUDGET = "the kernel plan's (4,096 tokens for int8 on AMX tiles, else 1,024)"


def batch_name(system: str, batch: int) -> str:
    if batch == 0:
        return "token budget"
    if batch == JOB_KERNELS:
        return "token budget, job kernels"
    # ONNX Runtime's batches are length-sorted by the harness; transformers' pipeline batches in input order.
    return f"{batch} sorted" if system.startswith("ort-") and batch > 1 else str(batch)


def best_runs(runs: list[dict]) -> dict[str, dict]:
    """Per system, its fastest successful run (transformers and ONNX Runtime try batch 1 and 8)."""
    best: dict[str, dict] = {}
    for run in runs:
        if "error" in run:
            continue
        current = best.get(run["system"])
        if current is None or run["reviews_per_s"] > current["reviews_per_s"]:
            best[run["system"]] = run
    return best


def ratio(a: dict | None, b: dict | None, metric: str) -> float | None:
    if not a or not b or not b.get(metric):
        return None
    return a[metric] / b[metric]


def system_value(runs: list[dict], system: str, metric: str, higher: bool) -> float | None:
    """A system's best figure over its batch sizes: the highest speed, the lowest latency or memory.

    The short-sentence latency does not depend on the batch size, and a user picks the batch size
    that suits them, so each target compares with the peer's most favourable run.
    """
    values = [r[metric] for r in runs if r["system"] == system and "error" not in r]
    if not values:
        return None
    return max(values) if higher else min(values)


def agreement(a: dict | None, b: dict | None) -> dict | None:
    if not a or not b:
        return None
    same = sum(x == y for x, y in zip(a["labels"], b["labels"], strict=True))
    return {"agree": same, "total": len(a["labels"]), "rate": same / len(a["labels"])}


def max_delta(a: dict | None, b: dict | None) -> float | None:
    if not a or not b:
        return None
    return float(np.abs(np.asarray(a["verify_logits"]) - np.asarray(b["verify_logits"])).max())


def precision(results: dict, system: str) -> str:
    if system == "coulisse-fast":
        return {"bfloat16": "bf16", "int8": "int8"}.get(results.get("cpu", {}).get("fast"), "fp32")
    return PRECISION[system]


def peak_fraction(results: dict, run: dict) -> float | None:
    """End-to-end encoder FLOP/s (linear layers only) ÷ this machine's GEMM peak for the run's precision."""
    peaks = results.get("kernels", {}).get("peaks")
    flops = results.get("flops_per_token")
    if not peaks or not flops or "error" in run:
        return None
    return run["tokens_per_s"] * flops / 1e9 / machine_peak(peaks, precision(results, run["system"]))


def machine_peak(peaks: dict, precision: str) -> float:
    """The machine's GEMM peak for a precision: its fastest kernel measured (fp32: oneDNN or MKL; int8:
    oneDNN, fbgemm, torch._int_mm or coulisse's own), whichever coulisse runs: a share against a slower kernel than the
    machine has would flatter the share."""
    return max(v for k, v in peaks.items() if k == precision or (k.startswith(precision + "_")
                                                                   and isinstance(v, (int, float))))


def speed_ceiling(results: dict, best: dict, num: str, den: str) -> float | None:
    """The most `num` could run against `den` on this machine: the ratio if `num`'s linear layers ran at its
    precision's GEMM peak and nothing else took time. An upper bound (attention, LayerNorm and the rest are
    not free): a target above it cannot be met by any kernel choice here, only by doing less arithmetic."""
    peaks, flops, run = results.get("kernels", {}).get("peaks"), results.get("flops_per_token"), best.get(den)
    if not peaks or not flops or not run or "error" in run or not run.get("tokens_per_s"):
        return None
    return machine_peak(peaks, precision(results, num)) * 1e9 / flops / run["tokens_per_s"]


def issue15_targets(results: dict, best: dict) -> list[dict]:
    """Issue 15: ratios to peers that depend on the machine, and fractions of the machine's GEMM peaks."""
    runs, kind = results["runs"], results.get("cpu", {}).get("kind")
    out = []

    def add(text, value, goal):
        out.append({"target": text, "value": value, "goal": goal, "higher_is_better": True,
                    "met": None if value is None else value >= goal})

    def speed(a, b):
        x, y = system_value(runs, a, SPEED, True), system_value(runs, b, SPEED, True)
        return None if x is None or not y else x / y

    add("coulisse --fast speed / ONNX Runtime int8", speed("coulisse-fast", "ort-int8"), 1.6)
    out[-1]["rounds"] = round_ratios(results, best, "coulisse-fast", "ort-int8")
    out[-1]["ceiling"] = speed_ceiling(results, best, "coulisse-fast", "ort-int8")
    if kind in INT8_GOAL:
        system, goal = INT8_GOAL[kind]
        add(f"{NAMES[system]} speed / transformers best ({kind})", speed(system, "transformers"), goal)
        out[-1]["rounds"] = round_ratios(results, best, system, "transformers")
        out[-1]["ceiling"] = speed_ceiling(results, best, system, "transformers")
    for system, goal in (("coulisse-exact", 0.75), ("coulisse-fast", 0.5)):
        run = best.get(system)
        frac = peak_fraction(results, run) if run else None
        add(f"{NAMES[system]} share of the {precision(results, system)} GEMM peak", frac, goal)
        if frac is not None and frac > 1:
            out[-1].update(met=None, above_peak=True)  # measured under load, not met
    return out


def round_ratios(results: dict, best: dict, num: str, den: str) -> list[float] | None:
    """In an interleaved run, the speed ratio `num / den` of each round (their passes of that round ran
    within minutes of each other), to show how far the best-of ratio hangs on one round."""
    a, b = best.get(num), best.get(den)
    if not results.get("settings", {}).get("interleaved") or not a or not b:
        return None
    if len(a["pass_s"]) != len(b["pass_s"]) or len(a["pass_s"]) < 2:
        return None
    return [tb / ta for ta, tb in zip(a["pass_s"], b["pass_s"], strict=True)]


def summarize(results: dict) -> dict:
    best = best_runs(results["runs"])
    # transformers' logits are compared at batch 1, where it does not pad.
    tf_b1 = next((r for r in results["runs"] if r["system"] == "transformers" and r["batch"] == 1
                  and "error" not in r), best.get("transformers"))
    exact, int8 = best.get("coulisse-exact"), best.get("coulisse-int8")
    ort_fp32, ort_int8 = best.get("ort-fp32"), best.get("ort-int8")
    checks = {
        "coulisse_exact_vs_transformers_max_abs_dlogit": max_delta(exact, tf_b1),
        "ort_fp32_vs_transformers_max_abs_dlogit": max_delta(ort_fp32, tf_b1),
        "coulisse_int8_vs_exact_max_abs_dlogit": max_delta(int8, exact),
        "ort_int8_vs_fp32_max_abs_dlogit": max_delta(ort_int8, ort_fp32),
        "coulisse_bf16_vs_exact_max_abs_dlogit": max_delta(best.get("coulisse-bf16"), exact),
        "coulisse_fast_vs_exact_max_abs_dlogit": max_delta(best.get("coulisse-fast"), exact),
        "coulisse_exact_vs_transformers_top1": agreement(exact, tf_b1),
        "coulisse_int8_vs_exact_top1": agreement(int8, exact),
        "coulisse_bf16_vs_exact_top1": agreement(best.get("coulisse-bf16"), exact),
        "coulisse_fast_vs_exact_top1": agreement(best.get("coulisse-fast"), exact),
        "ort_int8_vs_fp32_top1": agreement(ort_int8, ort_fp32),
    }
    targets = []
    for text, num, den, metric, goal, higher in TARGETS:
        runs = results["runs"]
        a, b = system_value(runs, num, metric, higher), system_value(runs, den, metric, higher)
        value = None if a is None or not b else a / b
        met = None if value is None else (value >= goal if higher else value <= goal)
        speed = metric == SPEED
        targets.append({"target": text, "value": value, "goal": goal, "higher_is_better": higher, "met": met,
                        "rounds": round_ratios(results, best, num, den) if speed else None,
                        "ceiling": speed_ceiling(results, best, num, den) if speed else None})
    targets += issue15_targets(results, best)
    return {"best": {s: r["batch"] for s, r in best.items()}, "checks": checks, "targets": targets}


def for_json(results: dict) -> dict:
    """The results as the JSON output holds them: each run's batch named as the table names it ("token
    budget, job kernels", not the worker's code -1)."""
    runs = [{**r, "batch": batch_name(r["system"], r["batch"])} for r in results["runs"]]
    best = {s: batch_name(s, b) for s, b in results.get("summary", {}).get("best", {}).items()}
    summary = {**results["summary"], "best": best} if "summary" in results else None
    return {**results, "runs": runs, **({"summary": summary} if summary else {})}


def rows(results: dict) -> list[list[str]]:
    best = best_runs(results["runs"])
    tf, cold = best.get("transformers"), results.get("cold_start", {})
    table = []
    for run in results["runs"]:
        system = run["system"]
        label = NAMES[system] + (" *" if best.get(system) is run and len(
            [r for r in results["runs"] if r["system"] == system]) > 1 else "")
        if "error" in run:
            table.append([label, batch_name(system, run["batch"]), "FAILED"])
            continue
        seconds = cold.get(system, {}).get("cold_start_s")
        vs_tf = ratio(run, tf, "reviews_per_s")
        vs_ort = ratio(run, best.get(ORT_PEER[system]), "reviews_per_s")
        table.append([
            label, batch_name(system, run["batch"]), f"{run['reviews_per_s']:.2f}",
            f"{run['tokens_per_s']:.0f}",
            f"{run['latency_p50_ms']:.1f}", f"{run['peak_rss_mb']:.0f}",
            "—" if seconds is None else f"{seconds:.2f}",
            "—" if vs_tf is None else f"{vs_tf:.2f}×", "—" if vs_ort is None else f"{vs_ort:.2f}×",
            fmt_fraction(results, run),
        ])
    return table


HEADER = ["system", "batch", "reviews/s", "tokens/s", "p50 ms", "peak RSS MB", "cold start s",
          "× transformers", "× ORT", "GEMM peak share"]


def fmt_fraction(results: dict, run: dict) -> str:
    frac = peak_fraction(results, run)
    if frac is None:
        return "—"
    return f"{100 * frac:.0f} % of {precision(results, run['system'])}" + (" (!)" if frac > 1 else "")


# A share of a peak above 100 % is no fact: the peak (measured apart from the passes) ran slower than the
# pass did, other work having taken the cores during one of them.
ABOVE_PEAK = ("(!) above 100 % of a GEMM peak: the peak and the passes were measured at other moments and one of "
              "them ran under load; rerun on a quiet machine.")


def fmt_target(t: dict) -> tuple[str, str]:
    """(value, goal) as text: shares of a peak in %, ratios with ×."""
    if "share" in t["target"]:
        return ("—" if t["value"] is None else f"{100 * t['value']:.0f} %"), f"{100 * t['goal']:.0f} %"
    return ("—" if t["value"] is None else f"{t['value']:.2f}×"), f"{t['goal']:.2f}×"


def kernel_lines(results: dict) -> list[str]:
    """The CPU's features, the kernels chosen, and the GEMM peaks measured in this run."""
    lines = list(results.get("cpu", {}).get("lines", []))
    k = results.get("kernels", {})
    if "peaks" in k:
        p = k["peaks"]
        lines.append(f"GEMM peaks at the model's shapes, {k['threads']} threads (GFLOP/s; int8: GOP/s): "
                     f"fp32 oneDNN {p['fp32']:.1f} (MKL {p['fp32_mkl']:.1f}), bf16 {p['bf16']:.1f} "
                     f"({p['bf16_kernel']}), int8 oneDNN {p['int8']:.1f} (fbgemm {p['int8_fbgemm']:.1f}"
                     + (f", torch._int_mm {p['int8_int_mm']:.1f}" if "int8_int_mm" in p else "")
                     + (f", coulisse's {p['int8_coulisse']:.1f}" if "int8_coulisse" in p else "") + ")")
        lines.append(f"GEMM peak share = tokens/s × {results['flops_per_token'] / 1e6:.0f} MFLOP per token "
                     "(the encoder's linear layers) ÷ the fastest kernel's peak for the system's precision "
                     f"(fp32 {machine_peak(p, 'fp32'):.1f}, int8 {machine_peak(p, 'int8'):.1f}); the peaks are "
                     "measured right after the timed passes, not during them: shares and ceilings hold on a quiet "
                     "machine only")
    elif "error" in k:
        lines.append(f"GEMM peaks: FAILED ({k['error']})")
    return lines


def fmt_rounds(t: dict) -> str:
    """`; per round a / b / c× (median m×)` for a speed target of an interleaved run, else nothing."""
    rounds = t.get("rounds")
    if not rounds:
        return ""
    return (f"; per round {' / '.join(f'{r:.2f}' for r in rounds)}× "
            f"(median {float(np.median(rounds)):.2f}×)")


def fmt_ceiling(t: dict) -> str:
    """`; at most c× here (…)` for a speed target this machine's GEMM peak bounds, else nothing."""
    ceiling = t.get("ceiling")
    if ceiling is None:
        return ""
    reach = ", out of reach" if ceiling < t["goal"] else ""
    return f"; at most {ceiling:.2f}× on this machine{reach} (its GEMMs at their peak, nothing else taking time)"


def fmt_check(value) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, dict):
        return f"{value['agree']}/{value['total']} ({100 * value['rate']:.1f} %)"
    return f"{value:.2e}"


def context_lines(results: dict) -> list[str]:
    m, t, s = results["machine"], results["texts"], results["settings"]
    # The 1-minute load average after the run counts the bench's own threads (it just ran them for
    # minutes): only what exceeds them is someone else's work.
    foreign = max(results["load_average_before"][0], results["load_average_after"][0] - s["threads"])
    lines = [
        f"machine: {m['cpu']}, {m['physical_cores']} physical cores ({m['logical_cpus']} logical); "
        f"{s['threads']} threads; load average {results['load_average_before'][0]:.2f} before, "
        f"{results['load_average_after'][0]:.2f} after",
        f"texts: {t['n']} from {t['source']}; {t['total_tokens']} tokens "
        f"(mean {t['total_tokens'] / max(t['n'], 1):.0f}, max {t['max_tokens']}); seed {t['seed']}",
        f"short sentence: {s['short_sentence']!r} × {s['latency_repeats']} (p50); best of {s['repeats']} "
        f"pass(es){', systems in turn' if s.get('interleaved') else ', one system after another'}; "
        f"coulisse max_batch_tokens {s['max_batch_tokens'] or PLAN_BUDGET}; "
        + (f"cold start = min of {s['cold_repeats']}" if s["cold_repeats"]
           else "cold start skipped (--cold-repeats 0)"),
        "versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
    ]
    lines += kernel_lines(results)
    if foreign > 0.5 * m["physical_cores"]:
        lines.append("WARNING: the machine was busy (load average, beyond the bench's own threads, above half "
                     "the cores): timings are noisy, shares of the GEMM peaks and ceilings most of all.")
    return lines


def render_text(results: dict) -> str:
    table = [HEADER, *rows(results)]
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(HEADER))]
    out = [*context_lines(results), ""]
    for row in table:
        out.append("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                             for i, cell in enumerate(row)).rstrip())
    out.append("* = the system's best batch size; ratios use each system's best. × ORT: vs ONNX Runtime of "
               "the same precision (fp32 for transformers and coulisse exact, int8 for coulisse int8).")
    out += [f"{NAMES[r['system']]} ({batch_name(r['system'], r['batch'])}) FAILED: {r['error']}"
            for r in results["runs"] if "error" in r]
    out += above_peak_note(results)
    checks, unmeasured_checks = measured_checks(results)
    targets, unmeasured_targets = measured_targets(results)
    out += ["", "checks:"] if checks else []
    out += [f"  {name}: {fmt_check(value)}" for name, value in checks]
    out += ["", "targets (this project's, docs/benchmarks.md):"] if targets else []
    for t in targets:
        sign = "≥" if t["higher_is_better"] else "≤"
        value, goal = fmt_target(t)
        out.append(f"  {t['target']}: {value} (target {sign} {goal}) {verdict(t, 'NOT met')}{fmt_rounds(t)}"
                   f"{fmt_ceiling(t)}")
    out += ["", not_measured_line(unmeasured_checks, unmeasured_targets)] if unmeasured_checks or unmeasured_targets \
        else []
    return "\n".join(out)


def verdict(t: dict, not_met: str) -> str:
    if t.get("above_peak"):
        return "above the peak (!): measured under load"
    return {True: "met", False: not_met, None: "not measured"}[t["met"]]


def above_peak_note(results: dict) -> list[str]:
    """The footnote of a share above 100 % of a peak, where one is printed."""
    fractions = [peak_fraction(results, r) for r in results["runs"] if "error" not in r]
    return [ABOVE_PEAK] if any(f is not None and f > 1 for f in fractions) else []


def measured_checks(results: dict) -> tuple[list[tuple[str, object]], int]:
    """The checks with a value, and how many have none (a system not selected, or failed)."""
    checks = results["summary"]["checks"]
    return [(k, v) for k, v in checks.items() if v is not None], sum(v is None for v in checks.values())


def measured_targets(results: dict) -> tuple[list[dict], int]:
    targets = results["summary"]["targets"]
    shown = [t for t in targets if t["value"] is not None]
    return shown, len(targets) - len(shown)


def not_measured_line(checks: int, targets: int) -> str:
    """One line for the checks and targets whose systems did not run (not selected by --systems, or failed),
    rather than a line of "not measured" each."""
    return (f"not measured: {checks} check(s) and {targets} target(s), whose systems were not run (--systems) or "
            "failed; the JSON output (--json) lists them all.")


def render_markdown(results: dict) -> str:
    table = rows(results)
    lines = ["## Benchmark results", ""]
    lines += [f"- {line}" for line in context_lines(results)]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row + [""] * (len(HEADER) - len(row))) + " |" for row in table]
    lines += ["", "\\* = the system's best batch size; × ORT compares with ONNX Runtime of the same "
              "precision."]
    lines += [f"- {NAMES[r['system']]} ({batch_name(r['system'], r['batch'])}) failed: `{r['error']}`"
              for r in results["runs"] if "error" in r]
    lines += [f"- {line}" for line in above_peak_note(results)]
    checks, unmeasured_checks = measured_checks(results)
    targets, unmeasured_targets = measured_targets(results)
    lines += ["", "Checks:", ""] if checks else []
    lines += [f"- {name}: {fmt_check(value)}" for name, value in checks]
    lines += ["", "Targets (this project's, docs/benchmarks.md):", ""] if targets else []
    for t in targets:
        sign = "≥" if t["higher_is_better"] else "≤"
        value, goal = fmt_target(t)
        lines.append(f"- {t['target']}: {value} (target {sign} {goal}) — {verdict(t, '**not met**')}{fmt_rounds(t)}"
                     f"{fmt_ceiling(t)}")
    if unmeasured_checks or unmeasured_targets:
        lines += ["", not_measured_line(unmeasured_checks, unmeasured_targets)]
    return "\n".join(lines) + "\n"
