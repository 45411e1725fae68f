"""`coulisse info`: what this machine offers and which kernels coulisse chose for it, and why."""

from __future__ import annotations

import json
import os

import click

from coulisse.interfaces.formatting import count, wrapped


@click.command()
@click.option("-j", "--json", "as_json", is_flag=True, envvar="COULISSE_JSON",
              help="Print the plan as one JSON object.")
def info(as_json: bool) -> None:
    """Show the CPU's features and the kernels each precision runs on it (chosen once, at load).

    \b
    Examples:
      coulisse info
      coulisse info --json
    """
    import torch

    from coulisse.engine import cache
    from coulisse.engine.cpu import FLAGS, this_machine
    from coulisse.engine.cpu_limit import cpu_limit, in_cpus
    from coulisse.engine.gemm_choice import cached_choices
    from coulisse.engine.prepare import bound_onednn_cache
    from coulisse.engine.threads import capped

    plan = this_machine()
    primitives = bound_onednn_cache(dict(os.environ))  # what a pipeline would apply; this process keeps its own
    folder = cache.cache_dir()
    off = ("off (COULISSE_CACHE=0)" if os.environ.get("COULISSE_CACHE") is not None
           else "off (no home folder: set COULISSE_CACHE)")
    where = str(folder) if folder is not None else off
    jobs = cached_choices(plan.features.key) if plan.fp32.kernel == "onednn" else []
    threads, limit = capped(torch.get_num_threads()), cpu_limit()  # what a command runs on (`--threads` aside)
    if as_json:
        choices = {name: {"kernel": c.kernel, "detail": c.detail, "why": c.why, "faster_than_fp32": c.fast,
                          **c.options} for name, c in (("fp32", plan.fp32), ("int8", plan.int8), ("bf16", plan.bf16),
                                                       ("attention", plan.attention)) if c is not None}
        measured = [{"hidden": c.hidden, "intermediate": c.intermediate, "kernel": c.kernel, "onednn_s": c.onednn_s,
                     "mkl_s": c.mkl_s, "cached_in": str(c.path)} for c in jobs]
        click.echo(json.dumps({"flags": sorted(plan.features.flags & set(FLAGS)),
                               "torch_capability": plan.features.capability, "torch": torch.__version__,
                               "threads": threads, "cpu_limit": limit, "kernels": choices, "fp32_corpus_jobs": measured,
                               "fast": {"mode": plan.fast, "why": plan.fast_why}, "weight_cache": where,
                               "onednn_primitive_cache": primitives},
                              ensure_ascii=False))
        return
    limited = "" if limit is None else f" (this process's cgroup allows {in_cpus(limit)})"
    click.echo(f"torch {torch.__version__}, {count(threads, 'thread')}{limited}")
    for line in plan.lines():
        click.echo(readable(line))
    if plan.fp32.kernel == "onednn":
        click.echo(readable("fp32 in corpus jobs, measured here: " + ("; ".join(c.describe() for c in jobs) if jobs
                   else "no model size yet (the first fp32 corpus job times oneDNN against MKL and caches the "
                   "answer)")))
    click.echo(readable(f"int8 weight cache: {where}"))
    click.echo(readable(f"oneDNN's and ideep's kernel caches (entries, one per GEMM shape and token count): "
                        f"{primitives}"))



def readable(line: str, width: int | None = None) -> str:
    """A plan line as a person reads it: what runs, wrapped to the terminal (at most 100 columns), then why it
    was chosen on its own indented lines (the figures and the docs/benchmarks.md sections they come from)."""
    what, _, why = line.partition(" — ")
    out = wrapped(what, width, indent="    ")
    if why:
        out += "\n" + wrapped(f"why: {why}", width, indent="         ", first="    ")
    return out
