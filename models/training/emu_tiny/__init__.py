"""emu2-tiny training code (see ../README.md).

Importing this package first chooses OpenBLAS's kernels where its own CPU detection fails: Debian
12's OpenBLAS 0.3.21 does not know newer Xeons (seen: family 6 model 207, "Intel(R) Xeon(R)
Processor") and falls back to its Prescott (SSE3) kernels: the LM's matmuls ran 4-7x slower (13
against 56-96 GFLOPS on one core), its training step about 3x, an encoder step 1.75x (numbers in
../README.md). The kernels are chosen from the CPU's instruction-set flags, which is all they need. It must run before numpy or torch load
OpenBLAS; an OPENBLAS_CORETYPE set by the caller wins.

It also keeps freed memory in glibc's heap (_keep_freed_memory): the training steps allocate and
free their activations every step, and glibc serves blocks from ~128 KB to 32 MB with fresh mmap'd
pages (or trims its heap), so every step page-faults its activations in again. On a 2-core EPYC VM
(2026-11-27) the LM's few-shot and video training steps ran 1.3-2.7x slower without it (two timing
runs; models/training/README.md)."""
import ctypes
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


def _keep_freed_memory() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's mallopt parameters
    libc.mallopt(m_mmap_threshold, 32 << 20)   # its maximum: blocks up to 32 MB come from the heap
    libc.mallopt(m_trim_threshold, 1 << 30)    # and freed heap memory is kept
    libc.mallopt(m_top_pad, 256 << 20)


_openblas_coretype()
_keep_freed_memory()
