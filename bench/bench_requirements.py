"""What `coulisse bench` imports beyond coulisse's own dependencies, per step of a run, checked before any work:
an import that fails an hour in, or halfway through writing the model's folder, costs that hour or leaves the
folder half-built."""

from __future__ import annotations

import importlib
from pathlib import Path

import bench_model

# What each step imports beyond coulisse's own dependencies (all of it in the [bench] extra).
SYSTEM_MODULES = {"transformers": ("transformers",), "ort-fp32": ("onnxruntime",), "ort-int8": ("onnxruntime",)}
BUILD_MODULES = ("transformers", "sentencepiece", "google.protobuf", "subtitle_splitter_fr")
EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx.export(dynamo=True), then quantize_dynamic
BUILD, EXPORT = "the model's first build", "the ONNX exports"
INSTALL = "pip install -e '.[bench]'"


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def requirements(systems: tuple[str, ...], model_dir: Path) -> dict[str, tuple[str, ...]]:
    """{step: the modules it imports} for what this run does: build the model (first run only), run each
    system, export ONNX (first run with an ONNX Runtime system only)."""
    needs = {} if bench_model.model_ready(model_dir) else {BUILD: BUILD_MODULES}
    needs.update({s: SYSTEM_MODULES[s] for s in systems if s in SYSTEM_MODULES})
    if any(s.startswith("ort-") for s in systems) and not bench_model.exports_ready(model_dir):
        needs[EXPORT] = EXPORT_MODULES
    return needs


def missing(systems: tuple[str, ...], model_dir: Path) -> dict[str, list[str]]:
    """{step: its modules that do not import}, checked before any work (an import that fails an hour in, or
    halfway through writing the model's folder, costs that hour or leaves the folder half-built)."""
    found: dict[str, bool] = {}
    gone = {}
    for step, modules in requirements(systems, model_dir).items():
        absent = [m for m in modules if not found.setdefault(m, importable(m))]
        if absent:
            gone[step] = absent
    return gone


def leave_out_unavailable(systems: tuple[str, ...], model_dir: Path) -> tuple[tuple[str, ...], str | None]:
    """The default systems less those this environment cannot run (ONNX Runtime's without onnxruntime, or
    without onnx and onnxscript to export; transformers without transformers), and a line saying so."""
    gone = missing(systems, model_dir)
    out = [s for s in systems if s in gone or (s.startswith("ort-") and EXPORT in gone)]
    if not out:
        return systems, None
    modules = sorted({m for s in out for m in gone.get(s, []) + (gone.get(EXPORT, []) if s.startswith("ort-")
                                                                 else [])})
    return (tuple(s for s in systems if s not in out),
            f"{', '.join(out)} left out: {', '.join(modules)} not installed ({INSTALL} to run them).")


def refusal(gone: dict[str, list[str]]) -> str:
    """One line for what cannot run: each step and its missing modules, and what to install."""
    needed_by: dict[str, list[str]] = {}
    for step, modules in gone.items():
        for module in modules:
            needed_by.setdefault(module, []).append(step)
    grouped: dict[tuple[str, ...], list[str]] = {}
    for module, steps in needed_by.items():
        grouped.setdefault(tuple(steps), []).append(module)
    what = "; ".join(f"{', '.join(modules)} (for {' and '.join(steps)})" for steps, modules in grouped.items())
    return f"not installed: {what}. Install the benchmark's extras: {INSTALL}"
