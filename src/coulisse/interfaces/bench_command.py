"""`coulisse bench`: coulisse against transformers and ONNX Runtime, run from a source checkout (the
harness lives in bench/)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from coulisse.interfaces.jobs.lock import check_output_path, check_writable

SYSTEMS = ("transformers", "ort-fp32", "ort-int8", "coulisse-exact", "coulisse-int8", "coulisse-bf16",
           "coulisse-fast")


def bench_dir() -> Path:
    # src/coulisse/interfaces/bench_command.py -> the repository root is three folders above the package.
    return Path(__file__).resolve().parents[3] / "bench"


def load_harness():
    """bench/run_bench.py of the source checkout this coulisse runs from. The harness stays out of the
    package (it drives transformers and ONNX Runtime in worker processes): from an installed wheel, the
    command says in one line where to get it."""
    folder = bench_dir()
    if not (folder / "run_bench.py").is_file():
        raise click.ClickException(
            "`coulisse bench` runs from a source checkout: its harness, bench/run_bench.py, does not ship "
            f"in the package, and this coulisse is installed at {Path(__file__).resolve().parents[1]}. git clone "
            "the coulisse repository, then in it: pip install -e '.[bench]' and run coulisse bench there."
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("run_bench")
    except ImportError as e:
        hint = "install the benchmark's extras: pip install -e '.[bench]'"
        raise click.ClickException(f"{e}; {hint}") from None


def parse_systems(ctx, param, value: str | None) -> tuple[str, ...] | None:
    """--systems as a tuple (None: the defaults); click names the option in the error."""
    if value is None:
        return None
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        what = f"unknown system {', '.join(map(repr, unknown))}" if unknown else f"no system in {value!r}"
        raise click.BadParameter(f"{what}; give a comma-separated subset of {', '.join(SYSTEMS)}.")
    return names


def check_output(path: Path | None, flag: str) -> None:
    """Refuse, before an hour of benchmark, an output that could not be written at its end (the table was
    printed, then a raw FileNotFoundError lost the results)."""
    if path is not None:
        check_output_path(path, flag, example="bench.json")
        check_writable(path, flag)


def choose_systems(harness, named: tuple[str, ...] | None, model_dir: Path) -> tuple[str, ...]:
    """The systems to run. Named ones are run as given or refused, in one line, when a package they need is
    missing; the defaults leave out those this machine or environment cannot run, saying so on stderr."""
    if named is None:
        from coulisse.engine.cpu import this_machine

        chosen, left_out = default_systems(this_machine())
        chosen, unavailable = harness.leave_out_unavailable(chosen, model_dir)
        for line in (left_out, unavailable):
            if line:
                click.echo(line, err=True)
    else:
        chosen = named
    gone = harness.missing(chosen, model_dir)
    if gone:
        raise click.ClickException(harness.refusal(gone))
    return chosen


def default_systems(plan) -> tuple[tuple[str, ...], str | None]:
    """The systems a bench runs when none are named, for a kernel plan (`coulisse.engine.cpu.plan`), and why
    one was left out: coulisse-bf16 only where the CPU multiplies bf16 (AMX-BF16, AVX512-BF16). Elsewhere its
    linear layers run PyTorch's reference GEMM, several times slower than fp32 (0.26x transformers' speed on a
    Zen 3, docs/benchmarks.md): the slowest system of the run by far, measuring a path known to be slow."""
    if plan.bf16.fast:
        return SYSTEMS, None
    return (tuple(s for s in SYSTEMS if s != "coulisse-bf16"),
            f"coulisse-bf16 left out: this CPU does not multiply bf16 — {plan.bf16.detail}: {plan.bf16.why}. "
            "Name it in --systems to measure it.")


def option(*flags: str, env: str, **kwargs):
    return click.option(*flags, envvar=f"COULISSE_BENCH_{env}", **kwargs)


@click.command()
@option("-n", "--n", "n", env="N", type=click.IntRange(min=1), default=160, show_default=True,
        help="Number of texts (a fixed seeded sample of the Allociné reviews).")
@option("--seed", env="SEED", type=int, default=0, show_default=True, help="Seed of the text sample.")
@option("-s", "--systems", env="SYSTEMS", default=None, callback=parse_systems,
        help=f"Comma-separated systems to run, among {','.join(SYSTEMS)} (default: all of them, coulisse-bf16 only "
             "where the CPU multiplies bf16: AMX-BF16 or AVX512-BF16).")
@option("-t", "--threads", env="THREADS", type=click.IntRange(min=1), default=None,
        help="Threads for every system (default: all physical cores).")
@option("-b", "--max-batch-tokens", env="MAX_BATCH_TOKENS", type=click.IntRange(min=1), default=None,
        help="coulisse's token budget per batch (default: the kernel plan's for each system's precision: 4,096 for "
             "int8 on AMX tiles, else 1,024).")
@option("-r", "--repeats", env="REPEATS", type=click.IntRange(min=1), default=1, show_default=True,
        help="Timed passes over the texts per system (the best counts).")
@option("-l", "--latency-repeats", env="LATENCY_REPEATS", type=click.IntRange(min=1), default=50,
        show_default=True, help="Calls on the short sentence (p50 reported).")
@option("-c", "--cold-repeats", env="COLD_REPEATS", type=click.IntRange(min=0), default=2, show_default=True,
        help="Cold starts per system (the fastest counts; 0: skip).")
@option("--timeout", env="TIMEOUT", type=float, default=900.0, show_default=True,
        help="Seconds allowed to each measured process.")
@option("-d", "--model-dir", env="MODEL_DIR", type=click.Path(path_type=Path), default=None,
        help="Where the bench builds and caches its own random camembert-base-sized model and its ONNX exports "
             "[~/.cache/coulisse-bench/...]: a new, empty or earlier bench folder, not a model to benchmark.")
@option("-j", "--json", "json_path", env="JSON", type=click.Path(dir_okay=False, path_type=Path),
        default=None, help="Also write the raw results to this JSON file.")
@option("--markdown", "markdown_path", env="MARKDOWN", type=click.Path(dir_okay=False, path_type=Path),
        default=None, help="Also write the machine, table, checks and targets as Markdown.")
@option("--kernels/--no-kernels", env="KERNELS", default=True, show_default=True,
        help="Measure the machine's GEMM peaks (fp32, bf16, int8) in the same run; figures become fractions of them.")
@option("--interleave/--one-after-another", env="INTERLEAVE", default=True, show_default=True,
        help="Hold every system loaded and run their timed passes in turn (a VM whose speed drifts during the "
             "run then slows them alike; needs memory for all at once), or run each system to the end alone.")
def bench(n, seed, systems, threads, max_batch_tokens, repeats, latency_repeats, cold_repeats, timeout,
          model_dir, json_path, markdown_path, kernels, interleave):
    """Benchmark transformers, ONNX Runtime fp32/int8, coulisse exact/int8/bf16/fast: one run, same model, same texts.

    Reports reviews/s, tokens/s, p50 latency of one short sentence, peak RSS and cold start per system,
    each measured in its own process, and the CPU's features, the kernels chosen and its GEMM peaks, so
    each speed is also a fraction of the peak of its precision (its fastest kernel). coulisse exact runs
    twice: pipeline()'s default kernels, and the ones a corpus job picks (throughput=True); then the
    ratios between systems, a check that their logits agree, and whether coulisse meets its targets
    against each peer, each speed target with the most this machine allows (its GEMMs at their peak,
    nothing else taking time). Runs from a source checkout with pip install -e '.[bench]'. The first run
    builds a random camembert-base-sized model, and exports it to ONNX where an ONNX Runtime system runs (a
    minute or two). Default systems whose packages are missing are left out, with a line saying what to
    install; named ones are refused. The GEMM peaks and the shares of them need a quiet machine.

    The defaults take tens of minutes on 2 cores (16 texts with -c 1 -l 10 took 6.5 minutes on a busy
    2-core VM; the default 160 texts and 50 latency calls take several times that); the quick example below
    took 45 s on that VM once the model was built.

    \b
    Examples:
      coulisse bench -n 20 -l 5 -c 0 --no-kernels -s coulisse-exact,coulisse-int8   # quick look
      coulisse bench
      coulisse bench --n 20 --cold-repeats 1 --json bench.json
      coulisse bench -s coulisse-exact,coulisse-int8 -b 2048
    """
    harness = load_harness()
    model_dir = model_dir if model_dir is not None else harness.bench_model.DEFAULT_DIR
    try:
        harness.bench_model.check_folder(model_dir)
    except ValueError as e:
        raise click.ClickException(f"--model-dir {e}") from None
    check_output(json_path, "--json")
    check_output(markdown_path, "--markdown")
    chosen = choose_systems(harness, systems, model_dir)
    cores = harness.physical_cores()
    if threads is not None and threads > cores:
        click.echo(f"--threads {threads} is more than this machine's {cores} physical cores: threads share a core "
                   "and every system runs slower than it could (the default is one per physical core).", err=True)
    opts = harness.Options(n=n, seed=seed, systems=chosen, threads=threads,
                           max_batch_tokens=max_batch_tokens, repeats=repeats,
                           latency_repeats=latency_repeats, cold_repeats=cold_repeats, timeout=timeout,
                           json_path=json_path, markdown_path=markdown_path, kernels=kernels,
                           interleave=interleave, model_dir=model_dir)
    harness.report(harness.run(opts), opts)
