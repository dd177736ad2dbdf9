"""How e2sim runs in its process: the thread budget, and stopping cleanly on SIGINT/SIGTERM.

**Threads.** numpy's BLAS (OpenBLAS, MKL) starts one thread per core by default. The engine's GEMMs
are small and interleaved with numba kernels, so those threads spin against numba's and against
any other process: on 2 cores a 3-epoch LeNet-5 ``e2sim run`` took 9.4 s with BLAS's default and
4.9 s with one BLAS thread (19.3 s and 7.6 s next to a CPU-bound process), with identical results.
So e2sim runs BLAS on one thread and gives the budget (``--threads``, else ``E2SIM_THREADS``, else
every core this process may use) to its numba kernels that run in parallel.

**Signals.** While :func:`stop_on_signals` is active, SIGINT and SIGTERM set a flag that the
training loop reads between iterations (nothing is raised inside a numba kernel); a second signal
stops at once with :class:`KeyboardInterrupt`.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

THREADS_VARIABLE = "E2SIM_THREADS"
MAX_THREADS = 1024


class ThreadsError(RuntimeError):
    """A thread count out of range (from ``E2SIM_THREADS`` or a caller)."""


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
    """Inside the block BLAS runs on one thread and numba's parallel kernels on ``threads``
    (default :func:`default_threads`, at most numba's pool size); both are restored after."""
    import numba
    from threadpoolctl import threadpool_limits

    wanted = default_threads() if threads is None else threads
    if not 1 <= wanted <= MAX_THREADS:
        raise ThreadsError(f"threads must be from 1 to {MAX_THREADS}, got {wanted}")
    used = min(wanted, numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    numba.set_num_threads(used)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield used
    finally:
        numba.set_num_threads(previous)


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
