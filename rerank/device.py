"""Choosing the device and the number type the cross-encoder runs in."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def detect_device(device: str | None = None) -> torch.device:
    """``device`` if given, else the first of cuda, mps, cpu that is available."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16): there bf16 matmuls beat
    fp32; elsewhere they are emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Map ``dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``) to a torch dtype.

    ``"auto"`` picks the fastest type that keeps rankings: bf16 on GPUs that support it (fp16 on older
    ones), bf16 on CPUs with hardware bf16, fp32 otherwise. On CPUs the choice follows the instruction set,
    from measurements (README, "Which CPU path is fastest"), never from a timing at load time, which would
    make the scores depend on the machine's load: with AMX, bf16 (+ float32 rescoring of the top 10) ran
    2.3x float32; with AVX2 only, bf16 is emulated (0.14x float32 on the GEMMs) and int8 gained nothing
    (fbgemm 1.09x on the GEMMs, ONNX Runtime and OpenVINO slower end to end), so float32. AVX512-BF16
    without AMX is taken to be like AMX (not measured by this project).
    """
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose 'auto' or one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32
