"""The compute dtype, chosen from what the hardware reports at run time rather than from one machine's timing:
bfloat16 where matmuls run natively in it (AVX512-BF16 or AMX on a CPU; a bf16-capable GPU), float32 elsewhere,
where bfloat16 is emulated (4.5x slower, measured on an AVX2 machine). Captured attention rows are float32
either way (capture.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from headrank.engine import defaults

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
AUTO_OVERRIDE = "HEADRANK_AUTO_DTYPE"
"""an environment variable that makes "auto" take this dtype whatever the hardware reports: CI runs the suite
once with each, so that no test passes only on the machine it was written on."""


@dataclass(frozen=True)
class Precision:
    dtype: str
    reason: str


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[1].split()) if ":" in line else set()


def choose_dtype(
    requested: str = defaults.DTYPE, device: str = defaults.DEVICE, flags: set[str] | None = None
) -> Precision:
    """`requested` unless it is "auto"; then bfloat16 where the device runs it natively, else float32."""
    if requested not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, not {requested!r}")
    if requested != "auto":
        return Precision(requested, "asked for")
    forced = os.environ.get(AUTO_OVERRIDE, "")
    if forced:
        if forced not in DTYPE_CHOICES[1:]:
            raise ValueError(f"{AUTO_OVERRIDE} must be one of {DTYPE_CHOICES[1:]}, not {forced!r}")
        return Precision(forced, f"{AUTO_OVERRIDE}={forced} (the hardware probe overridden)")
    import torch

    if device.startswith("cuda"):
        # is_bf16_supported() also counts emulation (pre-Ampere cards): native bfloat16 starts at compute capability 8
        if torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0):
            return Precision("bfloat16", f"{torch.cuda.get_device_name(device)} runs bfloat16 natively")
        return Precision("float32", "this GPU has no native bfloat16 (compute capability below 8.0)")
    capability = torch.backends.cpu.get_cpu_capability()
    native = sorted(set(NATIVE_BF16_FLAGS) & (cpu_flags() if flags is None else flags))
    if native:
        return Precision("bfloat16", f"CPU {capability} with {', '.join(native)}: native bfloat16 matmuls")
    return Precision("float32", f"CPU {capability} without AVX512-BF16 or AMX: bfloat16 would be emulated")


def reference_dtype(requested: str) -> str:
    """The dtype heads are selected and trained in: "auto" is float32 there, so that what is chosen or learnt does
    not depend on the machine (inference then runs in the machine's dtype); a dtype asked for is kept."""
    return "float32" if requested == "auto" else requested
