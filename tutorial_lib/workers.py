"""Where a grid's trainings run: here, on a local cluster of worker processes, or on a Dask scheduler's workers.

The trainings of a grid are independent: each configuration trains into its
own run folder (:mod:`tutorial_lib.experiments`). A task scheduler can hand
them to several processes, GPUs or machines at once, and Dask's
``distributed`` is the one the course uses: :func:`grid_client` returns a
``distributed.Client`` that :func:`tutorial_lib.experiments.run_grid` submits
to, or ``None`` for today's one-after-another run in the chapter's process.

It decides in this order:

1. ``scheduler`` (a chapter parameter) or ``$BRATS_COURSE_SCHEDULER`` names a
   running scheduler, e.g. ``tcp://10.0.0.5:8786``: the grid goes to its
   workers, on whatever machines they run (``book/many_machines.md``);
2. otherwise ``workers`` local worker processes, one training each: a count,
   or ``"gpus"`` for one per visible GPU (each worker then sees only its own
   GPU, as ``dask-cuda`` arranges it);
3. one worker, or no GPU under ``"gpus"``: ``None``, the chapter trains in
   its own process.

Each local worker runs TensorFlow with the profile's threads per operation
(``execution.threads``) and its share of the cores for the pools between
operations, and starts as :mod:`tutorial_lib._grid_worker` sets it up, so
that a network trained by a worker is the one the chapter's process would
train, to the last bit.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from tutorial_lib._kernel import TENSORFLOW_ENVIRONMENT

if TYPE_CHECKING:  # distributed is imported only when a grid is spread
    from distributed import Client

__all__ = ["SCHEDULER_VARIABLE", "visible_gpus", "worker_environment", "grid_client"]

SCHEDULER_VARIABLE = "BRATS_COURSE_SCHEDULER"


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (``[]`` on a CPU machine).

    ``CUDA_VISIBLE_DEVICES`` when it is set (``""`` or ``"-1"``: none), else
    one entry per GPU that ``nvidia-smi -L`` lists.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [] if listed.strip() in ("", "-1") else [entry.strip() for entry in listed.split(",")]
    if shutil.which("nvidia-smi") is None:
        return []
    found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [str(index) for index, line in enumerate(found.stdout.splitlines()) if line.startswith("GPU ")]


def worker_environment(workers: int, *, threads: int | None, gpu: str | None = None) -> dict[str, str]:
    """Environment of one of ``workers`` local worker processes.

    Parameters
    ----------
    workers : int
        Worker processes sharing this machine.
    threads : int or None
        TensorFlow threads per operation (the profile's ``execution.threads``);
        ``None``: the worker's share of the cores.
    gpu : str, optional
        The one GPU this worker sees; ``None`` leaves ``CUDA_VISIBLE_DEVICES`` alone.

    Examples
    --------
    >>> environment = worker_environment(2, threads=1, gpu="1")
    >>> environment["TF_NUM_INTRAOP_THREADS"], environment["CUDA_VISIBLE_DEVICES"]
    ('1', '1')
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    share = str(max(1, (os.cpu_count() or 1) // workers))
    environment = {**TENSORFLOW_ENVIRONMENT, "TF_NUM_INTRAOP_THREADS": str(threads or share),
                   "TF_NUM_INTEROP_THREADS": share, "OMP_NUM_THREADS": str(threads or share)}
    if gpu is not None:
        environment["CUDA_VISIBLE_DEVICES"] = gpu
    return environment


def grid_client(workers: int | str = 1, *, threads: int | None = None, scheduler: str | None = None) -> Client | None:
    """A Dask client for a chapter's grids, or ``None`` to train them in the chapter's process.

    Parameters
    ----------
    workers : int or "gpus"
        Local worker processes (the profile's ``execution.grid_workers``);
        ``"gpus"``: one per visible GPU.
    threads : int or None
        TensorFlow threads per operation in each local worker.
    scheduler : str, optional
        Address of a running Dask scheduler; default ``$BRATS_COURSE_SCHEDULER``.
        It wins over ``workers``: the scheduler's workers are what runs.

    Returns
    -------
    distributed.Client or None

    Raises
    ------
    ValueError
        For a worker count below 1 or a word other than ``"gpus"``.

    Examples
    --------
    >>> grid_client(1, scheduler="") is None
    True
    """
    address = os.environ.get(SCHEDULER_VARIABLE, "") if scheduler is None else scheduler
    if address:
        from distributed import Client

        return Client(address)
    if workers == "gpus":
        gpus: list[str | None] = list(visible_gpus())
    elif isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        gpus = [None] * workers
    else:
        raise ValueError(f"grid workers must be a count of at least 1 or 'gpus', got {workers!r}")
    return _local_client(gpus, threads) if len(gpus) > 1 else None


def _local_client(gpus: list[str | None], threads: int | None) -> Client:
    """A client of a cluster on this machine: one single-threaded worker process per entry of ``gpus``."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    quiet = logging.ERROR  # the workers' start-up lines would land in the chapter's output
    workers = {index: {"cls": Nanny, "options": {
        "nthreads": 1, "memory_limit": 0, "silence_logs": quiet, "host": "127.0.0.1",
        "preload": ["tutorial_lib._grid_worker"],  # what makes a worker's networks the chapter's
        "env": worker_environment(len(gpus), threads=threads, gpu=gpu)}} for index, gpu in enumerate(gpus)}
    # ":0": three chapters of one build each start a cluster; a fixed port would clash.
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": True, "dashboard_address": ":0"}}
    return Client(SpecCluster(workers=workers, scheduler=scheduler, silence_logs=quiet, name="brats-course grid"))
