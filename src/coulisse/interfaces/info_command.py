"""`coulisse info`: what this machine offers and which kernels coulisse chose for it, and why."""

from __future__ import annotations

import json

import click


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

    plan = this_machine()
    folder = cache.cache_dir()
    where = str(folder) if folder is not None else "off (COULISSE_CACHE=0)"
    if as_json:
        choices = {name: {"kernel": c.kernel, "detail": c.detail, "why": c.why, "faster_than_fp32": c.fast,
                          **c.options} for name, c in (("fp32", plan.fp32), ("int8", plan.int8), ("bf16", plan.bf16))}
        click.echo(json.dumps({"flags": sorted(plan.features.flags & set(FLAGS)),
                               "torch_capability": plan.features.capability, "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "kernels": choices,
                               "fast": {"mode": plan.fast, "why": plan.fast_why}, "weight_cache": where},
                              ensure_ascii=False))
        return
    click.echo(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for line in plan.lines():
        click.echo(line)
    click.echo(f"int8 weight cache: {where}")

