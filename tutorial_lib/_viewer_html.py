"""Volumes a reader can click through in a static page: nilearn's brainsprite viewers, offline.

:func:`nilearn.plotting.view_img` writes a whole HTML document per volume: the
slices as a sprite image inlined as PNG, and its JavaScript (jQuery and brainsprite,
about 100 kB) inlined too, so it needs neither a kernel nor a network. The book shows
several volumes of one case together, so :func:`viewer_frame` keeps one copy of the
scripts for all of them, drops the document's one outside link (nilearn's favicon),
and wraps the result in a titled ``<iframe srcdoc>`` that a page can embed as is.
"""

from __future__ import annotations

import html
import re
from typing import Sequence

import numpy as np

# Volumes are thinned to at most this many voxels per axis: the sprite (and the page) grows
# with the number of voxels, and a viewer needs to show where things are, not every voxel.
MAX_VOXELS_PER_AXIS = 48
_SCRIPT = re.compile(r"<script[^>]*>.*?</script>", re.S)
_LIBRARIES = ("jQuery v", "brainsprite v")
_VIEWER_HEIGHT_PX, _CAPTION_PX = 300, 40


def _thinned(volume: np.ndarray) -> np.ndarray:
    steps = [max(1, -(-size // MAX_VOXELS_PER_AXIS)) for size in volume.shape]
    return volume[tuple(slice(None, None, step) for step in steps)]


# The cache's axes point left, posterior and superior (scans.TRAINING_AXES), so the viewer's
# L and R are the patient's; its millimetre coordinates would not be (annotate=False).
_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def _centre(labels: np.ndarray) -> tuple[float, float, float] | None:
    """Where every viewer of a frame starts: the middle of the first volume's labels, in viewer space."""
    if not labels.any():
        return None
    return tuple(float(value) for value in (_AFFINE[:3, :3] @ np.argwhere(labels).mean(axis=0)))


def _viewer_document(background: np.ndarray, overlay: np.ndarray, colors: Sequence[str],
                     cut: tuple[float, float, float] | None) -> str:
    """nilearn's document for ``overlay`` (integer labels, 0 = none) over ``background``."""
    import nibabel as nib
    from matplotlib.colors import ListedColormap
    from nilearn import plotting

    affine = _AFFINE
    stat_map = nib.Nifti1Image(overlay.astype(np.float32), affine)
    view = plotting.view_img(
        stat_map, bg_img=nib.Nifti1Image(background.astype(np.float32), affine),
        cmap=ListedColormap(["#000000", *colors]), vmin=0, vmax=len(colors), symmetric_cmap=False, threshold=0.5,
        colorbar=False, annotate=False, draw_cross=True, black_bg=False, dim=0, resampling_interpolation="nearest",
        opacity=0.6, title=None, cut_coords=cut,
    )
    return view.get_standalone()


def _parts(document: str) -> tuple[list[str], str]:
    """The library scripts of a nilearn document, and its body without them."""
    body = document.split("<body>", 1)[1].split("</body>", 1)[0]
    libraries = [script for script in _SCRIPT.findall(body) if any(name in script[:200] for name in _LIBRARIES)]
    for script in libraries:
        body = body.replace(script, "")
    body = body.replace('class="slider"', 'class="slider" aria-label="overlay opacity"')
    return libraries, body


def viewer_frame(views: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[str]]], *, title: str) -> str:
    """One ``<iframe>`` holding a viewer per ``(caption, background, labels, colors)``, scripts inlined once.

    ``labels`` holds integers ``1..len(colors)`` (0: nothing drawn), coloured by ``colors``.
    """
    libraries, bodies = [], []
    cut = _centre(_thinned(views[0][2]))  # all viewers start at one place, so they compare
    for caption, background, labels, colors in views:
        scripts, body = _parts(_viewer_document(_thinned(background), _thinned(labels), colors, cut))
        libraries = libraries or scripts
        bodies.append(f'<section aria-label="{html.escape(caption)}"><p class="caption">{html.escape(caption)}</p>'
                      f"{body}</section>")
    document = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8"><title>'
        f"{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:0}}"
        ".caption{margin:8px 0 0;font-weight:bold}.hidden{display:none}</style></head><body>"
        + "".join(libraries) + "".join(bodies) + "</body></html>"
    )
    height = len(views) * (_VIEWER_HEIGHT_PX + _CAPTION_PX)
    return (f'<iframe class="volume-viewer" title="{html.escape(title)}" srcdoc="{html.escape(document)}" '
            f'style="width:100%;max-width:720px;height:{height}px;border:0"></iframe>')
