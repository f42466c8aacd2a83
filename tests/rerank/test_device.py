"""The CPU number-type rule follows the per-CPU measurements in docs/dtype_by_cpu.md."""

from pathlib import Path

import pytest

from rerank.device import bf16_measured_faster


def cpuinfo(vendor: str, flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: a CPU\nflags\t\t: fpu sse2 avx2 {flags}\n"


@pytest.mark.parametrize("vendor,flags,fast", [
    ("GenuineIntel", "avx512f avx512_bf16 amx_bf16 amx_tile", True),   # AMX: bf16 1.94x float32
    ("AuthenticAMD", "avx512f avx512_vnni avx512_bf16", True),        # Zen 4: 1.34x scoring, 1.49x a train step
    ("GenuineIntel", "avx512f avx512_vnni avx512_bf16", False),       # no AMX: bf16 0.67x float32
    ("AuthenticAMD", "", False),                                      # AVX2 only: bf16 emulated, 0.14x
    ("GenuineIntel", "avx512f", False),
])
def test_bf16_only_where_it_was_measured_faster(vendor, flags, fast):
    assert bf16_measured_faster(cpuinfo(vendor, flags)) is fast


def test_a_flag_named_only_in_another_line_does_not_count():
    assert not bf16_measured_faster("vendor_id\t: AuthenticAMD\nbugs\t: avx512_bf16\nflags\t: avx2\n")


DTYPE_TABLE = Path(__file__).resolve().parents[2] / "docs" / "dtype_by_cpu.md"


def _documented_rows() -> list[tuple[str, str, str, float]]:
    """(CPU, vendor_id, flags present, bf16-with-rescoring speed over float32) of each row of the table."""
    import re

    lines = [line for line in DTYPE_TABLE.read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[1:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        vendor = {"AMD": "AuthenticAMD", "Intel": "GenuineIntel"}[re.match(r"(AMD|Intel)", cells["CPU"]).group(1)]
        words = cells["flags"].replace(",", " ").split()
        absent = {words[i + 1] for i, word in enumerate(words[:-1]) if word == "no"}  # "no amx"
        flags = [w for w in words if w != "no" and w not in absent]
        speed = float(re.search(r"\((\d+\.\d+)x", cells["bf16 + top-10 rescoring"]).group(1))
        rows.append((cells["CPU"], vendor, " ".join(flags), speed))
    return rows


def test_every_cpu_of_the_measured_table_gets_bf16_exactly_where_it_was_faster():
    rows = _documented_rows()
    assert len(rows) >= 2
    for cpu, vendor, flags, speed in rows:
        assert bf16_measured_faster(cpuinfo(vendor, flags)) is (speed > 1.0), (cpu, flags, speed)


def test_auto_on_cpu_is_bf16_exactly_where_the_rule_says(monkeypatch):
    import torch

    from rerank import device

    cpu = torch.device("cpu")
    for fast, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert device.resolve_dtype("auto", cpu) == expected
        # a dtype asked for is kept whatever the CPU
        assert [device.resolve_dtype(name, cpu) for name in ("float32", "bfloat16", "float16")] == \
            [torch.float32, torch.bfloat16, torch.float16]
        assert device.resolve_dtype("auto", torch.device("mps")) == torch.float32  # no CPU rule off the CPU
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        device.resolve_dtype("fp8", cpu)


def test_auto_on_cuda_is_bf16_where_the_gpu_has_it_else_fp16(monkeypatch):
    import torch

    from rerank import device

    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, supported=supported, **kwargs: supported)
        assert device.resolve_dtype("auto", torch.device("cuda")) == expected
        assert device.resolve_dtype("float32", torch.device("cuda")) == torch.float32


def test_this_cpu_is_classified_from_the_flags_its_instructions_report():
    # Oracle: the instruction sets PyTorch's cpuinfo library reads with CPUID, not the /proc/cpuinfo text.
    import platform

    import torch

    from rerank.device import cpu_has_fast_bf16

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the rule reads /proc/cpuinfo of x86 Linux")
    amx, bf16 = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    if amx is None or bf16 is None:
        pytest.skip("this torch does not report AMX / AVX512-BF16")
    vendor = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("vendor_id"))
    cpu_has_fast_bf16.cache_clear()
    assert cpu_has_fast_bf16() is (amx() or (bf16() and vendor == "AuthenticAMD"))


def test_a_cross_encoder_on_auto_runs_in_the_chosen_dtype(monkeypatch, tiny_cross_encoder):
    # Not only the name: bf16 weights give other scores than float32 ones (without the float32 rescoring).
    import numpy as np
    import torch

    from rerank import CrossEncoder, device

    pairs = [("what is bm25", f"document {i} about ranking functions and bm25 {'and more ' * i}") for i in range(12)]
    exact = CrossEncoder(str(tiny_cross_encoder), device="cpu", dtype="float32", max_length=64).predict(pairs)
    for fast, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda fast=fast: fast)
        model = CrossEncoder(str(tiny_cross_encoder), device="cpu", dtype="auto", max_length=64, exact_top_k=None)
        assert model.dtype == expected
        scores = model.predict(pairs)
        assert np.array_equal(scores, exact) is (expected == torch.float32)
