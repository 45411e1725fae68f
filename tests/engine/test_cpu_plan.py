"""The kernel plan is a pure function of the CPU's features: fed the flags of machines we may not have,
it picks what docs/benchmarks.md and coulisse.engine.cpu argue for each."""

from __future__ import annotations

import pytest

from coulisse.engine import cpu
from coulisse.engine.cpu import Backends, Features, plan

# /proc/cpuinfo flags of three kinds of machine (abridged to what matters, plus noise that must not).
ZEN3 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2 sha_ni vaes"
CASCADE_LAKE = ZEN3 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
SAPPHIRE_RAPIDS = CASCADE_LAKE + " avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8 avx512_fp16"
COOPER_LAKE = CASCADE_LAKE + " avx512_bf16"
SKYLAKE_X = ZEN3 + " avx512f avx512dq avx512cd avx512bw avx512vl"
ALDER_LAKE = ZEN3 + " avx_vnni"
# AMD EPYC Zen 4 (family 25 model 17), as /proc/cpuinfo listed it in session 9
ZEN4 = ZEN3 + (" avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vbmi2"
               " avx512_vnni avx512_bitalg avx512_vpopcntdq")


def features(flags: str, capability: str = "AVX2") -> Features:
    return Features(frozenset(flags.split()), capability)


def test_avx2_only():
    p = plan(features(ZEN3))
    assert (p.int8.kernel, p.int8.options["weight_bits"], p.int8.options["small_rows"]) == ("onednn", 7, 64)
    assert p.int8.fast and "vpmaddubsw" in p.int8.detail
    assert (p.bf16.kernel, p.bf16.fast) == ("torch", False)  # torch cannot prepack bf16 here
    assert p.fp32.kernel == "onednn"
    assert p.fast == "int8"


def test_avx512_vnni():
    p = plan(features(CASCADE_LAKE, "AVX512"))
    assert (p.int8.kernel, p.int8.options["weight_bits"], p.int8.options["gemm"]) == ("coulisse", 8, "coulisse")
    assert "VNNI" in p.int8.detail
    # oneDNN prepacks bf16 on AVX-512 BW/VL/DQ, but without bf16 arithmetic it is no faster than fp32.
    assert (p.bf16.kernel, p.bf16.fast) == ("onednn", False)
    assert p.fast == "int8"


def test_amx():
    p = plan(features(SAPPHIRE_RAPIDS, "AVX512"))
    assert (p.int8.kernel, p.int8.options["weight_bits"]) == ("coulisse", 8)  # its blocks on AMX tiles
    assert "AMX-INT8 tiles where a layer's input width is a multiple of 64" in p.int8.detail and "AMX" in p.bf16.detail
    assert "1.08x oneDNN's AMX GEMM" in p.int8.why
    off = plan(features(SAPPHIRE_RAPIDS, "AVX512"), Backends(int8_gemm=False)).int8  # COULISSE_INT8_GEMM=onednn
    assert off.kernel == "onednn"
    assert "oneDNN's int8 GEMM, activations quantized per token (AMX-INT8 tiles)" in off.detail
    assert (p.bf16.kernel, p.bf16.fast) == ("onednn", True)
    # measured on a Sapphire Rapids-class Xeon: int8 (AMX-INT8) 64 reviews/s, bf16 (AMX-BF16) 44
    assert p.fast == "int8" and "AMX" in p.fast_why
    # without an int8 GEMM, bf16 is the fast preset there
    assert plan(features(SAPPHIRE_RAPIDS, "AVX512"), Backends(onednn_int8=False, fbgemm=False)).fast == "bfloat16"


def test_avx512_bf16_without_amx_prefers_int8():
    """AVX512-BF16 doubles fp32's rate; VNNI int8 quadruples it: the preset stays int8."""
    p = plan(features(COOPER_LAKE, "AVX512"))
    assert (p.bf16.kernel, p.bf16.fast) == ("onednn", True)
    assert p.fast == "int8"


def test_zen4_runs_vnni_int8_and_avx512_bf16_with_avx512_c_kernels():
    """Zen 4 multiplies int8 with VNNI and bf16 with vdpbf16ps; int8 was the faster of the two there
    (docs/benchmarks.md, session 9), so the preset stays int8. The C kernels run their AVX-512 code."""
    p = plan(features(ZEN4, "AVX512"))
    assert (p.int8.options["weight_bits"], p.int8.options["isa"]) == (8, "AVX-512 VNNI")
    assert (p.bf16.kernel, p.bf16.fast) == ("onednn", True) and "AVX512-BF16" in p.bf16.detail
    assert p.fast == "int8"
    assert "(AVX-512)" in p.int8.detail and "(AVX-512)" in p.fp32.detail
    assert "(AVX2)" in plan(features(ZEN3)).int8.detail and "(AVX2)" in plan(features(ZEN3)).fp32.detail
    assert "(portable C)" in plan(features("")).int8.detail


@pytest.mark.parametrize("flags, bits", [(SKYLAKE_X, 7), (ALDER_LAKE, 8), ("", 7)])
def test_weight_width_follows_vnni(flags, bits):
    """8-bit weights only where int8 pairs are summed straight into 32 bits (no 16-bit saturation)."""
    assert plan(features(flags)).int8.options["weight_bits"] == bits


def test_the_build_decides_what_the_cpu_cannot():
    f = features(SAPPHIRE_RAPIDS, "AVX512")
    no_onednn = plan(f, Backends(onednn_fp32=False, onednn_int8=False, fbgemm=True, c_kernels=False))
    assert (no_onednn.fp32.kernel, no_onednn.int8.kernel) == ("torch", "fbgemm")
    nothing = plan(features(ZEN3), Backends(False, False, False, False))
    assert nothing.int8.kernel == "none" and nothing.fast == "float32"
    assert plan(features(ZEN3), Backends(fbgemm=False)).int8.options["small_rows"] == 0
    # what finishes the fp32 layers is said only where the C kernels were built
    assert "C pass" in plan(features(ZEN3)).fp32.detail
    assert "C pass" not in plan(features(ZEN3), Backends(c_kernels=False)).fp32.detail


def test_attention_runs_in_c_where_the_kernels_are_built():
    """fp32 and int8 attention: the C kernel at the C kernels' level, or SDPA, and `coulisse info` says which."""
    zen4, zen3 = plan(features(ZEN4, "AVX512")), plan(features(ZEN3))
    assert zen4.attention.kernel == "c" and "(AVX-512" in zen4.attention.detail
    assert zen3.attention.kernel == "c" and "(AVX2" in zen3.attention.detail
    assert plan(features(ZEN3), Backends(c_kernels=False)).attention.kernel == "sdpa"
    off = plan(features(ZEN3), Backends(c_attention=False))
    assert off.attention.kernel == "sdpa" and "COULISSE_C_ATTENTION=0" in off.attention.why
    assert any(line.startswith("attention (fp32, int8): one C call") for line in zen3.lines())
    assert any(line.startswith("attention (fp32, int8, bf16): one C call") for line in zen4.lines())
    # bf16 products for int8 exactly where AVX-512 comes with AVX512-BF16, unless turned off
    assert zen4.attention.options["int8_bf16_products"] and "bf16 pairs" in zen4.attention.detail
    assert not zen3.attention.options["int8_bf16_products"] and "bf16" not in zen3.attention.detail
    no_bf16 = features(ZEN4.replace(" avx512_bf16", ""), "AVX512")
    assert not plan(no_bf16).attention.options["int8_bf16_products"]
    off = plan(features(ZEN4, "AVX512"), Backends(attention_bf16=False)).attention
    assert not off.options["int8_bf16_products"] and off.options["bf16_inputs"]  # the switch is int8's only
    assert "int8" not in off.detail.partition(";")[2] and "bf16 pipelines" in off.detail


def test_attention_products_on_amx_tiles_where_the_cpu_has_them():
    """bf16 attention products on AMX-BF16 tiles with AMX, on AVX512-BF16 without it or with
    COULISSE_ATTENTION_AMX=0; `coulisse info` says which."""
    spr = plan(features(SAPPHIRE_RAPIDS, "AVX512")).attention
    assert spr.options["amx"] and "AMX-BF16 tiles" in spr.detail and "2.0x" in spr.why
    for other in (plan(features(ZEN4, "AVX512")).attention, plan(features(COOPER_LAKE, "AVX512")).attention,
                  plan(features(SAPPHIRE_RAPIDS, "AVX512"), Backends(attention_amx=False)).attention):
        assert not other.options["amx"] and "AMX" not in other.detail and "(AVX512-BF16" in other.detail
    assert not plan(features(ZEN3)).attention.options["amx"]


def test_plan_is_pure():
    """Same features, same plan; the flags' order and unrelated flags change nothing."""
    a = plan(features(SAPPHIRE_RAPIDS))
    b = plan(features(" ".join(reversed(SAPPHIRE_RAPIDS.split())) + " hypervisor pku"))
    assert a.int8 == b.int8 and a.bf16 == b.bf16 and a.fast == b.fast
    assert features(ZEN3 + " pku").key == features(ZEN3).key


def test_read_flags_and_name(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: {SAPPHIRE_RAPIDS}\n"
                       f"\nprocessor\t: 1\nflags\t\t: {SAPPHIRE_RAPIDS}\n", encoding="utf-8")
    assert cpu.read_flags(str(cpuinfo)) == frozenset(SAPPHIRE_RAPIDS.split())
    assert cpu.read_flags(str(tmp_path / "absent")) == frozenset()
    assert cpu.cpu_name(str(cpuinfo)) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.cpu_name(str(tmp_path / "absent")) == ""


def test_this_machine_matches_its_own_flags():
    """What runs here is the plan of this machine's flags (the detection adds nothing else)."""
    here = cpu.detect()
    assert here.flags == cpu.read_flags()
    assert cpu.this_machine() == plan(here, cpu.backends())
    assert all(line for line in cpu.this_machine().lines())


def test_without_cpuinfo_the_kernels_say_what_the_cpu_has(monkeypatch):
    """macOS, Windows and Linux on arm64 list no `flags` in /proc/cpuinfo: the plan then read an empty set, and
    `--fast` never chose int8 on an AVX2 or VNNI PC. The flags come from the C kernels' own detection then, which
    claims nothing /proc/cpuinfo does not list here and finds the features that decide the plan."""
    import torch

    from coulisse.models.quantize import kernels

    here, capability = cpu.read_flags(), torch.backends.cpu.get_cpu_capability()
    seen = cpu.flags_from_kernels(capability)
    assert seen <= here
    decisive = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"}
    if kernels() is not None:
        assert seen & decisive == here & decisive
    monkeypatch.setattr(cpu, "read_flags", lambda path="/proc/cpuinfo": frozenset())
    cpu.detect.cache_clear()
    try:
        assert cpu.detect().flags == seen and cpu.detect().capability == capability
    finally:
        cpu.detect.cache_clear()
    # no C extension: torch's dispatch level, which knows AVX2 and AVX-512 only
    monkeypatch.setattr("coulisse.models.native.kernels", lambda: None)
    assert cpu.flags_from_kernels("AVX2") == {"avx2", "fma"}
    assert "avx512f" in cpu.flags_from_kernels("AVX512") and not cpu.flags_from_kernels("DEFAULT")


@pytest.mark.parametrize("flags, capability, rows, kernel", [
    (CASCADE_LAKE, "AVX512", 32, "coulisse's VNNI kernel"), (ZEN4, "AVX512", 32, "coulisse's VNNI kernel"),
    (SAPPHIRE_RAPIDS, "AVX512", 6, "coulisse's VNNI kernel"), (ZEN3, "AVX2", 64, "fbgemm"),
    (ALDER_LAKE, "AVX2", 64, "fbgemm"), (SKYLAKE_X, "AVX512", 64, "fbgemm")])
def test_few_rows_run_on_coulisse_kernel_where_avx512_vnni(flags, capability, rows, kernel):
    """Up to 32 rows, where AVX512-VNNI and the C kernels are there, coulisse's own int8 kernel (the weights
    streamed once); up to 6 with AMX, where coulisse's GEMM on tiles (its columns split between the threads)
    overtakes it; elsewhere fbgemm up to 64."""
    p = plan(features(flags, capability))
    assert p.int8.options["small_rows"] == rows and kernel in p.int8.detail
    if "amx_int8" in flags:  # with oneDNN's GEMM instead, the few-row kernel keeps its 32 rows
        assert plan(features(flags, capability), Backends(int8_gemm=False)).int8.options["small_rows"] == 32


def test_few_rows_kernel_needs_the_build_and_can_be_turned_off():
    f = features(ZEN4, "AVX512")
    assert plan(f, Backends(c_kernels=False)).int8.options["small_rows"] == 64  # fbgemm then
    off = plan(f, Backends(fbgemm=False, int8_small=False)).int8  # COULISSE_INT8_SMALL=0 turns both off
    assert off.options["small_rows"] == 0 and "≤" not in off.detail


@pytest.mark.parametrize("flags, capability, kernel", [
    (CASCADE_LAKE, "AVX512", "coulisse"), (ZEN4, "AVX512", "coulisse"), (COOPER_LAKE, "AVX512", "coulisse"),
    (SAPPHIRE_RAPIDS, "AVX512", "coulisse"), (SKYLAKE_X, "AVX512", "onednn"), (ALDER_LAKE, "AVX2", "onednn"),
    (ZEN3, "AVX2", "onednn"), ("", "DEFAULT", "onednn")])
def test_own_gemm_where_avx512_vnni_is_the_best_int8(flags, capability, kernel):
    """Every int8 GEMM on coulisse's kernel wherever AVX512-VNNI is (AMX CPUs: its blocks on AMX tiles), CPUs
    without AVX512-VNNI keep oneDNN; `coulisse info` says which."""
    p = plan(features(flags, capability))
    assert p.int8.kernel == kernel and p.int8.options.get("gemm", "onednn") == kernel
    assert ("coulisse's int8 GEMM" in p.int8.detail) == (kernel == "coulisse")
    assert p.fast == ("int8" if flags else "float32")


def test_own_gemm_needs_the_build_and_can_be_turned_off():
    f = features(ZEN4, "AVX512")
    for backends in (Backends(c_kernels=False), Backends(int8_gemm=False), Backends(onednn_int8=False)):
        assert plan(f, backends).int8.options.get("gemm", "onednn") == "onednn"
    # COULISSE_INT8_SMALL=0 moves a few rows to the many-row kernel, not off coulisse's GEMM
    assert plan(f, Backends(int8_small=False, fbgemm=False)).int8.options == \
        {"weight_bits": 8, "small_rows": 0, "isa": "AVX-512 VNNI", "gemm": "coulisse"}


def test_backends_read_the_switch(monkeypatch):
    monkeypatch.setenv("COULISSE_INT8_GEMM", "onednn")
    assert not cpu.backends().int8_gemm
    monkeypatch.setenv("COULISSE_INT8_GEMM", "coulisse")
    assert cpu.backends().int8_gemm


@pytest.mark.parametrize("flags, capability", [
    (SAPPHIRE_RAPIDS, "AVX512"), (CASCADE_LAKE, "AVX512"), (ZEN4, "AVX512"), (ZEN3, "AVX2"), ("", "DEFAULT")])
def test_int8_on_amx_tiles_batches_more_tokens(flags, capability):
    """Where coulisse's int8 GEMM runs on AMX tiles, the plan gives int8 pipelines its own token budget per batch
    (measured faster there, docs/benchmarks.md session 19); elsewhere none, and the engine's default holds."""
    p = plan(features(flags, capability))
    on_tiles = "amx_int8" in flags
    assert p.int8.options.get("batch_tokens") == (cpu.AMX_BATCH_TOKENS if on_tiles else None)
    assert ("batches of up to 4,096 tokens" in p.int8.detail) == on_tiles
    # with oneDNN's int8 GEMM (coulisse's turned off), no budget of its own either
    assert "batch_tokens" not in plan(features(flags, capability), Backends(int8_gemm=False)).int8.options


@pytest.mark.parametrize("flags, capability", [(ZEN3, "AVX2"), (CASCADE_LAKE, "AVX512"), (COOPER_LAKE, "AVX512"),
                                               (SAPPHIRE_RAPIDS, "AVX512"), (SKYLAKE_X, "AVX512"),
                                               (ALDER_LAKE, "AVX2"), (ZEN4, "AVX512"), ("", "DEFAULT")])
@pytest.mark.parametrize("backends", [Backends(), Backends(c_kernels=False), Backends(onednn_int8=False)])
def test_the_reasons_a_user_reads_cite_machines_not_the_project_history(flags, capability, backends):
    """`coulisse info` prints these lines to users: they name the CPU a figure was measured on and the document
    that holds it, never the project's working sessions ("session 15" meant nothing to a reader)."""
    p = plan(features(flags, capability), backends)
    text = "\n".join(p.lines())
    assert text.strip()
    assert "session" not in text.lower()
