"""tutorial_lib: the small library behind the brain-tumour segmentation course.

One module per concept: ``config`` (BraTS conventions, run profiles), ``synthetic``
(BraTS-like cases), ``ingest`` (import real BraTS into the cache), ``data``
(readers over the cache), ``models``, ``losses``, ``metrics``, ``postprocess``,
``training``, ``experiments``, ``inference`` and ``viz``.

Arrays are channels-last everywhere: ``(batch, x, y, z, channels)``.
Modules are imported on demand (``from tutorial_lib import models``) so that
importing the package does not start a deep-learning backend.
"""

__version__ = "0.1.0"
