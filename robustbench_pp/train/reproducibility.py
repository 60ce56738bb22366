"""What the bytes of a CPU training run depend on: pinned where torch allows, recorded in the card.

Measured on this project's machine (torch 2.14.1, 2-core AMD EPYC with AVX2 and no AVX-512)
with the quickstart's AlexNet run (width 16, 5000 Fashion-MNIST images, 3 epochs, seed 0):
repeated runs with the same settings give byte-identical weights, and each of these changes
them (and the test error after 3 epochs, between 31.2 % and 34.4 %):

- the torch thread count: 1, 2, 3 and 4 threads give four different weight files (the
  backward pass splits its sums over threads, so the rounding differs);
- the instruction set of the kernels: torch's own (``ATEN_CPU_CAPABILITY=default`` instead
  of the AVX2 torch picks here), oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA=SSE41``) and
  MKL's matrix products (``MKL_CBWR=COMPATIBLE``) each change the weights. Capping all three
  at AVX2 gives the unpinned bytes on this AVX2 machine; a CPU with AVX-512 picks other code
  paths unless capped.

So a CPU run is bit-reproducible for the same torch version, thread count and kernel
instruction set on the same kind of CPU. :func:`pinned_threads` fixes what a process can
fix once torch is loaded (the thread count, deterministic algorithms);
:func:`reproducibility_record` writes the rest into the checkpoint card. The instruction set
can only be capped from the environment before torch starts (``make quickstart`` does it on
AVX2 CPUs). Other CPU models may still differ (oneDNN and MKL also tune to the cache
sizes), and CUDA runs (autocast, cuDNN) are not bit-reproducible.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator

import torch

#: Environment variables that select kernels or threads, recorded when set.
KERNEL_ENVIRONMENT = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def pinned_threads(threads: int, *, deterministic_algorithms: bool = True) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (and deterministic algorithms); restore both after.

    Args:
        threads: torch intra-op threads for the block.
        deterministic_algorithms: also call ``torch.use_deterministic_algorithms(True)``; off
            for CUDA runs, where it would need cuBLAS settings and still not make autocast
            bit-reproducible.
    """
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(threads)
    if deterministic_algorithms:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


def reproducibility_record(device: str | torch.device) -> dict:
    """What the weights of a run on ``device`` depend on, for the checkpoint card.

    Returns:
        A JSON-ready dict: torch version, threads, CPU capability, deterministic mode, the
        kernel environment variables that are set, and the CPU.
    """
    on_cpu = torch.device(device).type == "cpu"
    return {
        "bit_reproducible": (
            "on the same kind of CPU with the same torch version, thread count and instruction set" if on_cpu
            else "no: CUDA runs are not bit-reproducible"
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "environment": {name: os.environ[name] for name in KERNEL_ENVIRONMENT if name in os.environ},
        "cpu": _cpu_model(),
        "machine": platform.machine(),
    }


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
