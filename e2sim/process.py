"""How e2sim runs in its process: the thread budget, the heap, and stopping cleanly on SIGINT/SIGTERM.

**Threads.** numpy's BLAS (OpenBLAS, MKL) starts one thread per core by default, and its threads
spin-wait between calls. Next to another CPU-bound process they fight it for the cores: on 2 cores
a 3-epoch LeNet-5 ``e2sim run`` took 9.0-10.0 s with BLAS's default and 5.0-5.4 s with one BLAS
thread (4.7-4.8 s either way on a quiet machine). BLAS's thread count also changes the order of
fp32 sums, so results depended on the machine's core count. So e2sim runs BLAS on one thread
(results now the same on any machine; a ResNet-20 fp32 step is about 12% slower on a quiet
2-core machine for it) and gives the budget (``--threads``, else ``E2SIM_THREADS``, else every
core this process may use) to its own kernels: numba's parallel ones, and the GEMMs and im2col
that :func:`in_parallel` splits into parts.

**Heap.** A training step allocates and frees hundreds of megabytes of short-lived arrays (a
ResNet-20 fp32 step at batch 128: about 125 MB). glibc's malloc hands large freed blocks back to the
OS and takes them again on the next allocation, so every step paid for about 32,000 page faults,
each zero-filling a fresh page: 15% of that step (547 -> 465 ms on 2 cores; int8 599 -> 513 ms).
From its first training or pricing call e2sim therefore keeps freed memory on the heap
(:func:`keep_heap`: glibc's ``mallopt``, blocks up to 1 GB from the heap, up to 1 GB of free
heap kept; the processes e2sim starts get the same through :data:`HEAP_VARIABLES`), which also
speeds up pricing (a ResNet-20 point priced in a worker: 186 -> 107 ms). It is a setting of the
whole process, left as it is afterwards: memory e2sim freed stays with the process for its
next step (the process's peak does not grow). ``E2SIM_KEEP_HEAP=0``, or the user's own
``MALLOC_*_`` or ``glibc.malloc`` settings, leave the allocator alone; other C libraries than
glibc are left alone too.

**Garbage collection.** Lowering and pricing make hundreds of thousands of short-lived Python
objects, and Python's cyclic collector walks every object the process holds each time it runs a
full collection: a third of a design point's pricing in a sweep (11.4 -> 7.5-8.2 ms per ResNet-20
point) and a tenth of a whole ``e2sim.estimate`` (54 -> 47-49 ms). :func:`gc_paused` turns the
collector off for such a call (reference counting still frees everything outside cycles; cycles
made inside are collected after it, as usual).

**Signals.** While :func:`stop_on_signals` is active, SIGINT and SIGTERM set a flag that the
training loop reads between iterations (nothing is raised inside a numba kernel); a second signal
stops at once with :class:`KeyboardInterrupt`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

THREADS_VARIABLE = "E2SIM_THREADS"
HEAP_VARIABLE = "E2SIM_KEEP_HEAP"
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks up to this size come from the heap (not mapped afresh)
TRIM_THRESHOLD_BYTES = 1 << 30  # free heap kept before any is handed back to the OS
# the same settings as glibc reads them from the environment (the processes e2sim starts)
HEAP_VARIABLES = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
                  "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}  # fmt: skip
_heap_kept: bool | None = None  # None until keep_heap() first ran; then whether the heap is kept
MAX_THREADS = 1024
_kernel_threads = 1  # inside thread_budget: its threads; else 1 (serial)
_pools: dict[int, ThreadPoolExecutor] = {}


class ThreadsError(RuntimeError):
    """A thread count out of range (from ``E2SIM_THREADS`` or a caller)."""


class HeapError(RuntimeError):
    """``E2SIM_KEEP_HEAP`` set to something other than 0 or 1."""


def keep_heap() -> bool:
    """Keep freed memory on the heap (see the module's docstring), once per process; whether it is
    kept. Left alone with ``E2SIM_KEEP_HEAP=0``, where the user set glibc's malloc themselves, and
    on other C libraries than glibc."""
    global _heap_kept
    raw = os.environ.get(HEAP_VARIABLE, "").strip()
    if raw not in ("", "0", "1"):
        raise HeapError(f"{HEAP_VARIABLE}={raw!r}: must be 1 (keep freed memory on the heap, the default) or 0")
    if _heap_kept is None:
        _heap_kept = raw != "0" and not _malloc_set_by_user() and _set_glibc_heap()
    return _heap_kept


def _malloc_set_by_user() -> bool:
    return any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ) or (
        "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))  # fmt: skip


def _set_glibc_heap() -> bool:
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl and others have no mallopt to set)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES)) and bool(mallopt(m_trim_threshold,
                                                                                 TRIM_THRESHOLD_BYTES))  # fmt: skip


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """``E2SIM_THREADS`` when set (a whole number from 1 to 1024), else :func:`available_cores`."""
    raw = os.environ.get(THREADS_VARIABLE)
    if raw is None or raw.strip() == "":
        return available_cores()
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_THREADS:
        raise ThreadsError(f"{THREADS_VARIABLE}={raw!r}: must be a whole number of threads from 1 to {MAX_THREADS}")
    return int(raw)


@contextlib.contextmanager
def thread_budget(threads: int | None = None) -> Iterator[int]:
    """Inside the block BLAS runs on one thread, and numba's parallel kernels and
    :func:`in_parallel` on ``threads`` (default :func:`default_threads`, at most numba's pool
    size); the threads are restored after. The heap is kept from then on (:func:`keep_heap`)."""
    import numba
    from threadpoolctl import threadpool_limits

    wanted = default_threads() if threads is None else threads
    if not 1 <= wanted <= MAX_THREADS:
        raise ThreadsError(f"threads must be from 1 to {MAX_THREADS}, got {wanted}")
    keep_heap()
    global _kernel_threads
    used = min(wanted, numba.config.NUMBA_NUM_THREADS)
    previous, previous_kernels = numba.get_num_threads(), _kernel_threads
    numba.set_num_threads(used)
    _kernel_threads = used
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield used
    finally:
        numba.set_num_threads(previous)
        _kernel_threads = previous_kernels


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block (see the module's docstring); as it
    was after, so that blocks nest."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def kernel_threads() -> int:
    """Threads the engine may split one kernel or GEMM over (1 outside :func:`thread_budget`)."""
    return _kernel_threads


def split(total: int, parts: int, smallest: int) -> list[tuple[int, int]]:
    """At most ``parts`` contiguous ranges covering ``range(total)``, each at least ``smallest``
    long (one range when ``total`` is too small to split)."""
    count = max(1, min(parts, total // max(smallest, 1)))
    edges = [total * i // count for i in range(count + 1)]
    return list(itertools.pairwise(edges))


PARALLEL_ELEMENTS = 1 << 18  # a kernel over a tensor from this size splits its work over the kernel threads


def in_parts(total: int, elements: int, fill: Callable[[int, int], Any]) -> list[Any]:
    """``fill(lo, hi)`` over contiguous parts of ``range(total)`` (rows, channels, elements): one
    part, or one per kernel thread when the work covers ``PARALLEL_ELEMENTS`` elements or more;
    the results in order. Each part must write only its own slice of a result."""
    parts = split(total, kernel_threads(), 1) if elements >= PARALLEL_ELEMENTS else [(0, total)]
    return in_parallel([lambda lo=lo, hi=hi: fill(lo, hi) for lo, hi in parts])


def in_parallel(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """The results of ``calls``, run on :func:`kernel_threads` threads. They gain only where they
    release the GIL (numba ``nogil`` kernels, BLAS); each must write its own part of a result, so
    that no result depends on the thread count.

    The calling thread is one of the threads: it and ``kernel_threads() − 1`` helpers from the
    pool take the calls one by one from a shared list until none is left (one hand-off per helper,
    not one per call: a hand-off costs tens of µs). It waits for the calls, not for the helpers, so
    a helper that starts late finds nothing to do, and a call may itself call this."""
    if _kernel_threads == 1 or len(calls) <= 1:
        return [call() for call in calls]
    pool = _pools.get(_kernel_threads)
    if pool is None:
        pool = _pools[_kernel_threads] = ThreadPoolExecutor(_kernel_threads, thread_name_prefix="e2sim-kernel")
    return _SharedCalls(calls).run(pool, min(_kernel_threads, len(calls)) - 1)


class _SharedCalls:
    """Calls taken one by one by whichever thread is free; their results in order."""

    def __init__(self, calls: Sequence[Callable[[], Any]]) -> None:
        self.calls = calls
        self.results: list[Any] = [None] * len(calls)
        self.next = iter(range(len(calls)))  # one step of a range iterator is atomic under the GIL
        self.unfinished = len(calls)
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.finished = threading.Event()

    def run(self, pool: ThreadPoolExecutor, helpers: int) -> list[Any]:
        for _ in range(helpers):
            pool.submit(self.take)
        self.take()
        self.finished.wait()
        if self.errors:
            raise self.errors[0]
        return self.results

    def take(self) -> None:
        for index in self.next:
            if not self.errors:
                try:
                    self.results[index] = self.calls[index]()
                except BaseException as error:  # raised again in the calling thread
                    self.errors.append(error)
            with self.lock:
                self.unfinished -= 1
                if not self.unfinished:
                    self.finished.set()


class StopRequest:
    """Whether a stop was asked for (by a signal while :func:`stop_on_signals` is active)."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def ask(self, name: str) -> None:
        self.signal = name


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM ask the returned request to stop (the first time; the second raises
    KeyboardInterrupt). Previous handlers come back after the block. Outside the main thread,
    where Python cannot install handlers, the request is never set."""
    request = StopRequest()

    def handle(number: int, frame) -> None:
        if request:
            raise KeyboardInterrupt
        request.ask(signal.Signals(number).name)

    installed = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            installed[number] = signal.signal(number, handle)
    except ValueError:  # not the main thread
        pass
    try:
        yield request
    finally:
        for number, previous in installed.items():
            signal.signal(number, previous)
