"""The CPU number-type rule follows the per-CPU measurements in docs/dtype_by_cpu.md."""

import pytest

from rerank.device import bf16_measured_faster


def cpuinfo(vendor: str, flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: a CPU\nflags\t\t: fpu sse2 avx2 {flags}\n"


@pytest.mark.parametrize("vendor,flags,fast", [
    ("GenuineIntel", "avx512f avx512_bf16 amx_bf16 amx_tile", True),   # AMX: bf16 2.3x float32
    ("AuthenticAMD", "avx512f avx512_vnni avx512_bf16", True),        # Zen 4: 1.34x scoring, 1.49x a train step
    ("GenuineIntel", "avx512f avx512_vnni avx512_bf16", False),       # no AMX: bf16 0.67x float32
    ("AuthenticAMD", "", False),                                      # AVX2 only: bf16 emulated, 0.14x
    ("GenuineIntel", "avx512f", False),
])
def test_bf16_only_where_it_was_measured_faster(vendor, flags, fast):
    assert bf16_measured_faster(cpuinfo(vendor, flags)) is fast


def test_a_flag_named_only_in_another_line_does_not_count():
    assert not bf16_measured_faster("vendor_id\t: AuthenticAMD\nbugs\t: avx512_bf16\nflags\t: avx2\n")
