"""emu2-tiny training code (see ../README.md).

Importing this package first chooses OpenBLAS's kernels where its own CPU detection fails: Debian
12's OpenBLAS 0.3.21 does not know newer Xeons (seen: family 6 model 207, "Intel(R) Xeon(R)
Processor") and falls back to its Prescott (SSE3) kernels: the LM's matmuls ran 4-7x slower (13
against 56-96 GFLOPS on one core), its training step about 3x, an encoder step 1.75x (numbers in
../README.md). The kernels are chosen from the CPU's instruction-set flags, which is all they need. It must run before numpy or torch load
OpenBLAS; an OPENBLAS_CORETYPE set by the caller wins."""
import os


def _openblas_coretype() -> None:
    if os.environ.get("OPENBLAS_CORETYPE"):
        return
    try:
        with open("/proc/cpuinfo") as f:
            line = next(ln for ln in f if ln.startswith("flags"))
    except (OSError, StopIteration):
        return
    flags = set(line.split(":", 1)[1].split())
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif {"avx2", "fma"} <= flags:
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"


_openblas_coretype()
