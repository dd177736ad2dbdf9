"""Where the points of a sweep run: in this process, in local worker processes, or on a Dask
cluster (a LocalCluster that the sweep starts, or one it joins). All three are one interface:
``submit(function, argument)`` and ``completed(futures)``; every worker process compiles the
numba kernels once (``warm_up``) before its first point."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

from e2sim.process import HEAP_VARIABLES
from e2sim.studies.points import warm_up

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "E2SIM_THREADS")




def thread_budget(workers: int, threads: int | None = None) -> dict[str, str]:
    """The environment of a worker process: ``threads`` kernel threads, by default the machine's
    cores shared out, so that N workers' numba and BLAS threads do not compete for the same cores,
    and a heap that keeps its memory."""
    share = str(threads or max(1, (os.cpu_count() or 1) // max(workers, 1)))
    return {**dict.fromkeys(THREAD_VARIABLES, share), **HEAP_VARIABLES}


class _Environment:
    """Set environment variables for the processes started inside the block (they inherit it)."""

    def __init__(self, values: dict[str, str]):
        self.values = values

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class InProcess:
    """One worker: this process (no start-up cost; what a small sweep wants)."""

    workers = 1

    def __enter__(self) -> InProcess:
        warm_up()
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, function: Callable, argument: Any) -> _Deferred:
        return _Deferred(function, argument)

    def completed(self, futures: list[_Deferred]) -> Iterator[_Deferred]:
        yield from futures  # each runs when its result is asked for: stored before the next starts


class _Deferred:
    """A call made when its result is first asked for (the in-process executor's future)."""

    def __init__(self, function: Callable, argument: Any):
        self.function, self.argument = function, argument

    def result(self) -> Any:
        return self.function(self.argument)


class LocalProcesses:
    """``workers`` local processes (spawned: no forked numba or BLAS threads)."""

    def __init__(self, workers: int):
        self.workers = workers

    def __enter__(self) -> LocalProcesses:
        context = multiprocessing.get_context("spawn")
        with _Environment(thread_budget(self.workers)):
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=warm_up)
            self.pool.submit(int, 0).result()  # the workers start now, inside the budget
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)

    def submit(self, function: Callable, argument: Any) -> Future:
        return self.pool.submit(function, argument)

    def completed(self, futures: list[Future]) -> Iterator[Future]:
        yield from as_completed(futures)


class DaskCluster:
    """Dask distributed: a LocalCluster of ``workers`` single-threaded processes, or the cluster
    at ``address``. Needs ``pip install "e2sim[dask]"``."""

    def __init__(self, workers: int | None = None, address: str | None = None):
        self.workers, self.address = workers, address

    def __enter__(self) -> DaskCluster:
        try:
            from distributed import Client
        except ImportError:
            raise RuntimeError('Dask is not installed: pip install "e2sim[dask]"') from None
        self.cluster = None
        if self.address is None:
            self.cluster = start_local_cluster(self.workers or 1)
            self.client = Client(self.cluster)
        else:
            self.client = Client(self.address)
        self.client.run(warm_up)
        self.workers = len(self.client.scheduler_info()["workers"])
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def submit(self, function: Callable, argument: Any):
        return self.client.submit(function, argument, pure=False)

    def completed(self, futures: list) -> Iterator:
        from distributed import as_completed as dask_completed

        yield from dask_completed(futures)


def start_local_cluster(workers: int, threads: int | None = None):
    """A Dask LocalCluster of ``workers`` single-threaded processes with :func:`thread_budget`'s
    environment (``threads`` kernel threads each, by default the cores shared out), set before each
    worker starts (Dask's own default, MALLOC_TRIM_THRESHOLD_=65536, hands every freed array back
    to the OS and made a ResNet-20 point 3.5× slower). Dask lets this process's environment
    override the variables it is given for its workers, and writes them into this process's
    environment when a worker starts: the budget is set here too while the workers start, and this
    process's own values are restored after (else a cluster started earlier in this process decided
    the next one's threads, and this process's own runs took its budget)."""
    import dask
    from distributed import LocalCluster

    budget = thread_budget(workers, threads)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": budget}), _Environment(budget):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)


def executor_for(workers: int | None, scheduler: str | None, dask: bool):
    """In-process for one worker; local processes for several; Dask when asked (``dask``, or a
    scheduler address to join)."""
    if scheduler is not None or dask:
        return DaskCluster(workers, scheduler)
    if workers is None or workers <= 1:
        return InProcess()
    return LocalProcesses(workers)
