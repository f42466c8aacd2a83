"""Choosing the device and the number type the cross-encoder runs in."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from esrerank_errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def detect_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (an ``InputError`` when it is no device name, or one this machine lacks), else
    the first of cuda, mps, cpu that is available."""
    if device is not None:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"device {device!r} (--device) is not a device name: give cuda, cuda:1, mps or "
                             "cpu") from None
        _check_available(chosen)
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(device: torch.device) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {str(device)!r} (--device): this machine has no CUDA GPU that torch can use")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {str(device)!r} (--device): this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"device {str(device)!r} (--device): MPS is not available on this machine")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True where bf16 was measured faster than float32 on this kind of CPU (docs/dtype_by_cpu.md, written by
    benchmarks/bench_dtype_by_cpu.py): with AMX (Intel Xeon family 6 model 167: bf16 scoring 1.94x float32 with
    the top-10 rescoring, a training step 1.46x); AMD with AVX512-BF16 (Zen 4:
    scoring 1.34x with the float32 top-10 rescoring, a training step 1.49x). Not on Intel with AVX512-BF16
    and no AMX, where bf16 scored 0.67x float32 (issue 25's report), nor without bf16 instructions, where
    bf16 is emulated (0.14x)."""
    try:
        return bf16_measured_faster(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def bf16_measured_faster(cpuinfo: str) -> bool:
    """The rule of :func:`cpu_has_fast_bf16` on the text of ``/proc/cpuinfo``."""
    lines = cpuinfo.splitlines()
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    vendor = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")), "")
    if "amx_bf16" in flags:
        return True
    return "avx512_bf16" in flags and vendor == "AuthenticAMD"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Map ``dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``) to a torch dtype.

    ``"auto"`` picks the fastest type that keeps rankings: bf16 on GPUs that support it (fp16 on older
    ones), bf16 on CPUs with hardware bf16, fp32 otherwise. On CPUs the choice follows the instruction set,
    from measurements (docs/reranking_speed.md, docs/dtype_by_cpu.md), never from a timing at load time, which would
    make the scores depend on the machine's load: with AMX, bf16 (+ float32 rescoring of the top 10) ran
    1.94x float32 (a training step 1.46x); on AMD Zen 4 (AVX512-BF16, no AMX) 1.34x; on an Intel CPU with
    AVX512-BF16 and no AMX 0.67x, so float32 there; with AVX2 only, bf16 is emulated (0.14x float32 on the
    GEMMs) and int8 gained nothing (fbgemm 1.09x on the GEMMs, ONNX Runtime and OpenVINO slower end to end),
    so float32. The table is docs/dtype_by_cpu.md (``cpu_has_fast_bf16``).
    """
    if dtype != "auto":
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose 'auto' or one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32
