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
from types import MappingProxyType

__all__ = ["KERNEL_NAME", "DISPLAY_NAME", "TENSORFLOW_ENVIRONMENT", "set_environment", "install"]

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
