"""The training process and the machine: tuning for shared CPUs, and dying with the parent. Nothing
here imports torch: `passive_openmp` must run before torch is imported to have any effect."""
from __future__ import annotations

import os
import signal
import sys


def passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning. With spinning threads, a CPU shared with
    loader workers or other programs runs the training step up to 10 times slower (measured:
    alexnet-mini on 2 busy cores, 13 against 150 images/s). Only works before torch is imported,
    and an OMP_WAIT_POLICY already set wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory() -> None:
    """Stop glibc from handing freed tensor memory back to the OS after every step only to
    page-fault it in again on the next (thousands of faults a step; slow, above all in VMs):
    about 15-20% of alexnet-mini's CPU step time. Loader workers inherit it through fork."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 31)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` when the parent dies (Linux; elsewhere nothing). torchrun starts its
    ranks in sessions of their own, so a `kill -9` of `netdsl train --nproc N` (or of its process group)
    would leave them training and writing the run directory; with this they get SIGTERM, save, and stop."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request: act as the kernel would have
        os.kill(os.getpid(), sig)
