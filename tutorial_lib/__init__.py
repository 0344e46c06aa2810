"""tutorial_lib: the small library behind the brain-tumour segmentation course.

One module per concept: ``config`` (BraTS conventions, run profiles), ``chapters`` (opening a
chapter), ``synthetic`` (BraTS-like cases, drawn by one of several scanner appearances),
``baseline`` (the FLAIR-threshold baseline), ``sources`` (BraTS download layouts, safe
extraction, validation), ``ingest`` (build the cache), ``data`` (NumPy readers over the cache),
``datasets`` (Keras readers), ``augment`` (training-time augmentation), ``models``, ``losses``,
``metrics`` (per case and lesion by lesion), ``calibration`` (reliability, temperature scaling),
``postprocess``, ``training``, ``costs`` (FLOPs and memory of a step),
``experiments`` (the run cache), ``recipes`` (trainings several chapters share), ``inference``
and ``viz``.

Arrays are channels-last everywhere: ``(batch, x, y, z, channels)``.
Modules are imported on demand (``from tutorial_lib import models``) so that
importing the package does not start a deep-learning backend.
"""

import logging as _logging
import os as _os
import sys as _sys
import warnings as _warnings

from tutorial_lib._kernel import set_environment as _set_environment

# TensorFlow reads its switches (tutorial_lib._kernel) once, when it is imported,
# so setting them here only helps when tutorial_lib comes first; otherwise say so.
if "tensorflow" in _sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in _os.environ:
    _warnings.warn(
        "TensorFlow was imported before tutorial_lib without TF_ENABLE_ONEDNN_OPTS set, so "
        "on some CPUs (AMD among them) its oneDNN kernels are off and 3D training on the CPU "
        "runs several times slower. Use the 'brats-course' Jupyter kernel (`make setup` "
        "installs it), set TF_ENABLE_ONEDNN_OPTS=1 before starting Python, or import "
        "tutorial_lib before keras.",
        RuntimeWarning,
        stacklevel=2,
    )
_set_environment()


def _not_a_retracing_note(record: _logging.LogRecord) -> bool:
    # The chapters train and evaluate many networks in one kernel; TensorFlow counts the
    # first trace of each new network's step as "retracing" and prints a long warning
    # (to stdout in a notebook, so onto the book's pages) that points at nothing to fix.
    return "triggered tf.function retracing" not in record.getMessage()


# A filter on the named logger, which TensorFlow fetches by the same name: no import of it here.
_logging.getLogger("tensorflow").addFilter(_not_a_retracing_note)

__version__ = "0.1.0"
