"""What machine a benchmark ran on, recorded with its results: on a CPU the figures depend on the model of CPU and
on whether it multiplies bfloat16 in hardware, so a result without them cannot be compared with another."""

import platform
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def fast_bf16() -> bool:
    """Whether this machine multiplies bfloat16 in hardware (else PyTorch emulates it, far slower than float32)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return torch.cuda.is_available() or any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def matmul_gflops(rows: int, hidden: int, intermediate: int, dtype=torch.float32, repeats: int = 200) -> float:
    """GFLOP/s of one LM weight product (hidden -> intermediate size) on `rows` token rows, in `dtype`."""
    x = torch.randn(rows, hidden, dtype=dtype)
    w = torch.randn(intermediate, hidden, dtype=dtype)
    for _ in range(20):
        torch.nn.functional.linear(x, w)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(x, w)
    return round(2 * rows * w.numel() * repeats / (time.perf_counter() - start) / 1e9, 1)
