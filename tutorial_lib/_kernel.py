"""The course's Jupyter kernel and the TensorFlow switches that every process of the course sets.

The switches are written down here only: ``tutorial_lib`` sets them when it is
imported (``set_environment``), and the ``brats-course`` kernel carries them in
its spec, which is what switches oneDNN on in the chapters: they import Keras,
and so TensorFlow, before ``tutorial_lib``, and TensorFlow reads them once.

``python -m tutorial_lib._kernel --sys-prefix`` installs the kernel into the
running environment (``make setup``); ``--user`` into the user's folder (Binder).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from types import MappingProxyType

__all__ = ["KERNEL_NAME", "DISPLAY_NAME", "TENSORFLOW_ENVIRONMENT", "set_environment", "use_threads", "install"]

KERNEL_NAME = "brats-course"
DISPLAY_NAME = "Python (brats-course)"
TENSORFLOW_ENVIRONMENT = MappingProxyType({
    # TensorFlow leaves its oneDNN kernels off on some x86 CPUs (AMD among them);
    # without them a 3D convolution's backward pass is 5-10x slower on a CPU.
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # No start-up banner of informational lines; warnings and errors still show.
    "TF_CPP_MIN_LOG_LEVEL": "2",
})


def set_environment() -> None:
    """Set each switch of ``TENSORFLOW_ENVIRONMENT`` that the environment does not set already."""
    for name, value in TENSORFLOW_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def use_threads(threads: int | None) -> None:
    """Run each TensorFlow operation on ``threads`` threads (``None``: TensorFlow's own choice, one per core).

    A convolution or a sum split over another number of threads adds its terms
    in another order, so its last bits differ, and a training that starts from
    other last bits ends in another network: on 2 cores, chapter 03's verdict
    once changed with the thread count (``book/running.md``). With one count
    fixed by the profile, every machine and every way of running a chapter
    computes the same numbers. It takes effect if TensorFlow has not run an
    operation yet in this process (a chapter's first cells); otherwise it warns.
    """
    if threads is None:
        return
    previous = os.environ.get("TF_NUM_INTRAOP_THREADS")
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)  # read when TensorFlow starts its runtime
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None:
        return
    current = tensorflow.config.threading.get_intra_op_parallelism_threads()
    if current == threads or (current == 0 and previous == str(threads)):
        return
    try:
        tensorflow.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        warnings.warn(f"TensorFlow already runs with {current or previous or 'its own number of'} threads per "
                      f"operation, not the profile's {threads}: trainings may end in other networks than the "
                      "book's. Restart the kernel and run the chapter from the top.", stacklevel=2)


def install(*, user: bool = False, prefix: str | None = None) -> str:
    """Install the ``brats-course`` kernel for this Python, with the switches in its environment.

    Returns
    -------
    str
        The folder of the installed kernel spec.
    """
    from ipykernel import kernelspec

    return kernelspec.install(user=user, prefix=prefix, kernel_name=KERNEL_NAME, display_name=DISPLAY_NAME,
                              env=dict(TENSORFLOW_ENVIRONMENT))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tutorial_lib._kernel", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sys-prefix", action="store_true", help="into this Python's environment (make setup)")
    where.add_argument("--user", action="store_true", help="into the user's Jupyter folder (Binder)")
    arguments = parser.parse_args(argv)
    print(install(user=arguments.user, prefix=sys.prefix if arguments.sys_prefix else None))


if __name__ == "__main__":
    main()
