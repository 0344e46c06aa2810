"""Set-up of a grid worker process (a Dask ``--preload``): what makes its trainings the chapter's, bit for bit.

Two things a chapter's kernel has and a Dask worker lacks:

* Keras is imported in the process's main thread, before any task runs;
* no other thread draws from Python's global random generator while a task
  trains. Keras seeds every unseeded initializer from that generator when a
  network is built (``keras.random.make_default_seed``), right after
  ``keras.utils.set_random_seed``; a worker's own threads (its heartbeats and
  transfers, through Dask and Tornado) draw from it too, at times no one
  controls, so a network built there started from other weights. They get
  a generator of their own here.

``dask worker --preload tutorial_lib._grid_worker`` applies it to a worker
started by hand (``book/many_machines.md``); ``tutorial_lib.workers``
preloads it into the local ones.
"""

from __future__ import annotations

import random
import sys
from types import ModuleType

import keras  # noqa: F401  (imported here, in the main thread, as a chapter's kernel imports it)

__all__ = ["own_random_generator", "dask_setup"]

_PREFIXES = ("distributed", "dask", "tornado")


def own_random_generator(prefixes: tuple[str, ...] = _PREFIXES) -> list[str]:
    """Give every loaded module under ``prefixes`` that uses ``random`` a generator of its own; their names."""
    private = random.Random()
    patched = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in prefixes and isinstance(module, ModuleType) and vars(module).get("random") is random:
            module.random = private
            patched.append(name)
    return patched


def dask_setup(worker=None) -> None:  # the preload hook Dask calls as the worker starts
    own_random_generator()
