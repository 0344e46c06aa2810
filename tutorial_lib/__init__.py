"""tutorial_lib: the small library behind the brain-tumour segmentation course.

One module per concept: ``config`` (BraTS conventions, run profiles), ``synthetic``
(BraTS-like cases), ``baseline`` (the FLAIR-threshold baseline), ``sources``
(BraTS download layouts, safe extraction, validation), ``ingest`` (build the cache), ``data``
(readers over the cache), ``models``, ``losses``, ``metrics``, ``postprocess``,
``training``, ``experiments``, ``inference`` and ``viz``.

Arrays are channels-last everywhere: ``(batch, x, y, z, channels)``.
Modules are imported on demand (``from tutorial_lib import models``) so that
importing the package does not start a deep-learning backend.
"""

import os as _os

# TensorFlow leaves its oneDNN kernels off on some x86 CPUs (AMD among them);
# without them a 3D convolution's backward pass is 5-10x slower on CPU. This
# only takes effect when tutorial_lib is imported before TensorFlow/Keras.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
