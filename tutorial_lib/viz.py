"""Figures for the course: modalities, label overlays, curves, a slice viewer.

Every function returns a ``matplotlib.figure.Figure`` made without pyplot's
global state, so a notebook shows it exactly once (as the cell's result, or
with ``display(fig)``) and tests need no cleanup. :func:`slice_viewer` is
interactive (ipywidgets) in a live Jupyter kernel and falls back to a static
figure elsewhere, e.g. when papermill builds the book.

Volumes are channels-last: images ``(x, y, z, channels)``, labels ``(x, y, z)``.
Slices are drawn with ``x`` horizontal and ``y`` vertical (origin lower left).
"""

from __future__ import annotations

import html
import os
from typing import Any, Mapping, Sequence

import matplotlib.pyplot  # noqa: F401  (activates Jupyter's inline display of figures)
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from tutorial_lib.config import BRATS

__all__ = [
    "LABEL_COLORS",
    "PLANES",
    "label_colors",
    "show_modalities",
    "overlay",
    "history_to_dict",
    "plot_history",
    "slice_viewer",
    "SliceView",
]

# One colour per non-background label, in increasing label order
# (necrotic core red, edema green, enhancing tumour yellow).
_PALETTE = ("#e6194b", "#3cb44b", "#ffe119")
LABEL_COLORS: Mapping[int, str] = dict(
    zip(sorted(label for label in BRATS.labels if label != 0), _PALETTE)
)
MASK_COLOR = "#00bfff"  # binary masks (e.g. a whole-tumour prediction)
PLANES: Mapping[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
STATIC_ENV = "TUTORIAL_LIB_STATIC_FIGURES"


def label_colors() -> np.ndarray:
    """RGBA lookup table indexed by label value (background transparent).

    Returns
    -------
    numpy.ndarray
        float, shape ``(max_label + 1, 4)``.

    Examples
    --------
    >>> float(label_colors()[0, 3])
    0.0
    """
    table = np.zeros((max(BRATS.labels) + 1, 4))
    for label, color in LABEL_COLORS.items():
        table[label] = to_rgba(color)
    return table


def _take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(volume, index, axis=axis).T  # x horizontal, y vertical


def _default_slice(shape: Sequence[int], axis: int, label: np.ndarray | None) -> int:
    """The slice with the most tumour, or the middle one."""
    if label is not None and np.any(label):
        other_axes = tuple(a for a in range(3) if a != axis)
        return int(np.argmax(np.count_nonzero(label, axis=other_axes)))
    return shape[axis] // 2


def _axis_of(plane: str) -> int:
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {list(PLANES)}, got {plane!r}")
    return PLANES[plane]


def overlay(
    ax: Axes, image2d: np.ndarray, label2d: np.ndarray | None = None, *, alpha: float = 0.4
) -> Axes:
    """Draw a grey-scale slice with a coloured label (or mask) on top.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    image2d : numpy.ndarray
        ``(rows, columns)`` intensities, shown as given (transpose beforehand if needed).
    label2d : numpy.ndarray, optional
        Same shape: BraTS labels (integers, colours from :data:`LABEL_COLORS`)
        or a boolean mask (one colour).
    alpha : float, optional
        Opacity of the overlay, 0 to 1.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``.

    Raises
    ------
    ValueError
        If the shapes differ or ``alpha`` is outside [0, 1].

    Examples
    --------
    >>> fig = Figure(); ax = fig.subplots()
    >>> overlay(ax, np.zeros((4, 4)), np.eye(4, dtype=np.uint8) * 2) is ax
    True
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    ax.imshow(image2d, cmap="gray", origin="lower", interpolation="nearest")
    if label2d is not None:
        if label2d.shape != image2d.shape:
            raise ValueError(f"label shape {label2d.shape} != image shape {image2d.shape}")
        if label2d.dtype == bool:
            rgba = np.zeros(label2d.shape + (4,))
            rgba[label2d] = to_rgba(MASK_COLOR)
        else:
            rgba = label_colors()[np.clip(label2d.astype(int), 0, max(BRATS.labels))].copy()
        rgba[..., 3] *= alpha
        ax.imshow(rgba, origin="lower", interpolation="nearest")
    ax.set_axis_off()
    return ax


def _legend(fig: Figure) -> None:
    handles = [
        Patch(color=color, label=f"{label}: {BRATS.labels[label]}") for label, color in LABEL_COLORS.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False)


def _channel_names(channels: int, modalities: Sequence[str] | None) -> Sequence[str]:
    if modalities:
        return modalities
    if channels == len(BRATS.modalities):
        return BRATS.modalities
    return [f"channel {c}" for c in range(channels)]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    if image.ndim != 4:
        raise ValueError(f"image must be (x, y, z) or (x, y, z, channels), got shape {image.shape}")
    return image


def show_modalities(
    image: np.ndarray,
    label: np.ndarray | None = None,
    *,
    slice_index: int | None = None,
    plane: str = "axial",
    modalities: Sequence[str] | None = None,
    alpha: float = 0.4,
) -> Figure:
    """One panel per modality at one slice, plus the label overlaid on the first.

    Parameters
    ----------
    image : numpy.ndarray
        ``(x, y, z, channels)``.
    label : numpy.ndarray, optional
        ``(x, y, z)`` BraTS labels.
    slice_index : int, optional
        Default: the slice with the most tumour, or the middle slice.
    plane : {"axial", "coronal", "sagittal"}, optional
        Slicing plane.
    modalities : sequence of str, optional
        Panel titles; default ``BRATS.modalities`` when there are four channels.
    alpha : float, optional
        Label opacity.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a wrongly shaped image or an unknown plane.

    Examples
    --------
    >>> fig = show_modalities(np.random.rand(8, 8, 6, 4), np.zeros((8, 8, 6), np.uint8))
    """
    image = _check_image(image)
    axis = _axis_of(plane)
    index = _default_slice(image.shape, axis, label) if slice_index is None else slice_index
    channels = image.shape[-1]
    names = _channel_names(channels, modalities)
    panels = channels + (label is not None)
    fig = Figure(figsize=(2.6 * panels, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels))
    for channel in range(channels):
        overlay(axes[channel], _take_slice(image[..., channel], axis, index))
        axes[channel].set_title(names[channel])
    if label is not None:
        first = _take_slice(image[..., 0], axis, index)
        overlay(axes[-1], first, _take_slice(label, axis, index), alpha=alpha)
        axes[-1].set_title(f"{names[0]} + labels")
        _legend(fig)
    fig.suptitle(f"{plane} slice {index}")
    return fig


def history_to_dict(history: Any) -> dict[str, list[float]]:
    """Convert a training history to ``{metric: [value per epoch]}``.

    Parameters
    ----------
    history : keras.callbacks.History, pandas.DataFrame or mapping
        A Keras ``History`` (its ``.history`` attribute is used), a table with
        one row per epoch (an ``epoch`` column is dropped), or a mapping of
        metric name to per-epoch values.

    Returns
    -------
    dict of str to list of float
        Plain lists, ready for JSON.

    Raises
    ------
    ValueError
        If ``history`` is none of the accepted types.

    Examples
    --------
    >>> history_to_dict({"loss": [0.5, 0.25]})
    {'loss': [0.5, 0.25]}
    """
    if isinstance(history, pd.DataFrame):
        columns = [column for column in history.columns if column != "epoch"]
        mapping: Mapping[str, Any] = {column: history[column].tolist() for column in columns}
    elif isinstance(getattr(history, "history", None), Mapping):
        mapping = history.history
    elif isinstance(history, Mapping):
        mapping = history
    else:
        raise ValueError(
            f"expected a keras History, a DataFrame or a dict of lists, got {type(history).__name__}"
        )
    return {str(name): [float(value) for value in values] for name, values in mapping.items()}


def _runs(history_or_runs: Any) -> dict[str, dict[str, list[float]]]:
    """One run, or a mapping of run name -> run (detected by non-list values)."""
    if isinstance(history_or_runs, Mapping) and history_or_runs and all(
        not isinstance(value, (list, tuple, np.ndarray)) for value in history_or_runs.values()
    ):
        return {str(name): history_to_dict(run) for name, run in history_or_runs.items()}
    return {"": history_to_dict(history_or_runs)}


def plot_history(history_or_dataframe: Any, *, metrics: Sequence[str] = ("loss", "dice")) -> Figure:
    """Learning curves: one panel per metric, training solid and validation dashed.

    Parameters
    ----------
    history_or_dataframe : History, DataFrame, dict, or dict of those
        One run (a Keras ``History``, a per-epoch table such as
        :func:`tutorial_lib.training.load_history`, or ``{metric: values}``),
        or ``{run name: run}`` to compare several runs.
    metrics : sequence of str, optional
        Metric names; ``val_<name>`` is drawn too when present.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the history type is unknown or no run logs any requested metric.

    Examples
    --------
    >>> fig = plot_history({"loss": [0.9, 0.5], "val_loss": [1.0, 0.7]}, metrics=("loss",))
    """
    runs = _runs(history_or_dataframe)
    if not any(name in run for run in runs.values() for name in metrics):
        raise ValueError(f"none of the metrics {list(metrics)} is in the history")
    fig = Figure(figsize=(4.0 * len(metrics), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics):
        for run_index, (run_name, columns) in enumerate(runs.items()):
            color = f"C{run_index}"
            for key, style, split in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                if key in columns:
                    label = f"{run_name} {split}".strip()
                    epochs = range(1, len(columns[key]) + 1)
                    ax.plot(epochs, columns[key], style, color=color, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.legend(fontsize="small")
    return fig


def _in_live_kernel() -> bool:
    """True inside a Jupyter kernel with ipywidgets, unless static figures are requested."""
    if os.environ.get(STATIC_ENV, "") not in ("", "0"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _viewer_figure(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray | None]],
    *,
    plane: str,
    index: int,
    channel: int,
    show_overlay: bool,
    alpha: float,
) -> Figure:
    axis = _axis_of(plane)
    fig = Figure(figsize=(3.2 * len(panels), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    background = _take_slice(image[..., channel], axis, index)
    for ax, (title, volume) in zip(axes, panels):
        mask = None if volume is None or not show_overlay else _take_slice(volume, axis, index)
        overlay(ax, background, mask, alpha=alpha)
        ax.set_title(title)
    fig.suptitle(f"{plane} slice {index}")
    return fig


def slice_viewer(
    image: np.ndarray,
    label: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    *,
    interactive: bool | None = None,
    modalities: Sequence[str] | None = None,
    plane: str = "axial",
    alpha: float = 0.4,
) -> Any:
    """Browse a volume: plane, slice, modality, overlay on/off and opacity.

    Ground truth and prediction, when given, are drawn side by side over the
    same slice.

    Parameters
    ----------
    image : numpy.ndarray
        ``(x, y, z, channels)``.
    label, prediction : numpy.ndarray, optional
        ``(x, y, z)`` BraTS labels or boolean masks.
    interactive : bool, optional
        ``None`` (default): widgets inside a live Jupyter kernel, a static
        :class:`SliceView` elsewhere or when the environment variable
        ``TUTORIAL_LIB_STATIC_FIGURES=1`` is set (the book build sets it, so
        executed pages hold viewers that need no kernel). ``False`` forces the
        :class:`SliceView`, ``True`` the widgets.
    modalities : sequence of str, optional
        Channel names; default ``BRATS.modalities`` for four channels.
    plane : {"axial", "coronal", "sagittal"}, optional
        Initial plane.
    alpha : float, optional
        Initial overlay opacity.

    Returns
    -------
    ipywidgets.VBox or SliceView
        The widgets, or viewers that need no kernel (with a still figure).

    Raises
    ------
    ValueError
        For mismatched shapes or an unknown plane.

    Examples
    --------
    >>> view = slice_viewer(np.random.rand(8, 8, 6, 1), interactive=False)
    >>> view.figure.axes[0].get_title()
    'image'
    >>> "<iframe" in view._repr_html_()
    True
    """
    image = _check_image(image)
    panels = [("image", None)] if label is None and prediction is None else []
    for title, volume in (("ground truth", label), ("prediction", prediction)):
        if volume is not None:
            if volume.shape != image.shape[:3]:
                raise ValueError(f"{title} shape {volume.shape} != image shape {image.shape[:3]}")
            panels.append((title, volume))
    reference = label if label is not None else prediction
    index = _default_slice(image.shape, _axis_of(plane), reference)
    view = dict(plane=plane, index=index, channel=0, show_overlay=True, alpha=alpha)
    if interactive is None:
        interactive = _in_live_kernel()
    if not interactive:
        return SliceView(image, panels, _channel_names(image.shape[-1], modalities), view)
    return _slice_widgets(image, panels, modalities, view)


class SliceView:
    """A volume shown without a kernel: viewers a reader clicks through, and a still figure.

    A page (the built book, JupyterLab, Colab) shows the viewers: nilearn's static
    HTML viewers with their code inlined, one per panel over the first channel, then
    the first panel over every other channel, each thinned to at most 48 voxels per
    axis. Where HTML cannot be shown (a PDF, a terminal), the still :attr:`figure`.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
        The initial view as a still image.
    """

    def __init__(self, image: np.ndarray, panels: Sequence[tuple[str, np.ndarray | None]], names: Sequence[str],
                 view: dict) -> None:
        self.figure = _viewer_figure(image, panels, **view)
        self._image, self._panels, self._names = image, panels, names

    def _repr_html_(self) -> str:
        values = sorted(LABEL_COLORS)
        views = []
        for title, volume in self._panels:  # coloured as overlay() colours the still figure
            if volume is None or np.asarray(volume).dtype == bool:
                mask = np.zeros(self._image.shape[:3], bool) if volume is None else np.asarray(volume)
                views.append((title, mask.astype(np.uint8), [MASK_COLOR]))
            else:  # BraTS labels 1, 2, 4 -> colours 1, 2, 3
                views.append((title, np.searchsorted(values, volume, side="right"), [LABEL_COLORS[v] for v in values]))
        frames = [(f"{title} over {self._names[0]}", self._image[..., 0], labels, colors)
                  for title, labels, colors in views]
        frames += [(f"{views[0][0]} over {name}", self._image[..., channel], *views[0][1:])
                   for channel, name in enumerate(self._names) if channel]
        return "".join(f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                       f'<iframe class="volume-viewer" title="slice viewer: {html.escape(caption)}" srcdoc="'
                       f'{html.escape(_nilearn_viewer(background, labels, colors))}" style="width:100%;'
                       f'max-width:720px;height:300px;border:0"></iframe></figure>'
                       for caption, background, labels, colors in frames)

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        return buffer.getvalue()


def _slice_widgets(
    image: np.ndarray, panels: Sequence[tuple[str, np.ndarray | None]], modalities: Any, view: dict
) -> Any:
    import ipywidgets as widgets
    from IPython.display import display

    names = _channel_names(image.shape[-1], modalities)
    last_slice = image.shape[PLANES[view["plane"]]] - 1
    controls = dict(
        plane=widgets.Dropdown(options=list(PLANES), value=view["plane"], description="plane"),
        index=widgets.IntSlider(value=view["index"], min=0, max=last_slice, description="slice"),
        channel=widgets.Dropdown(options=[(n, c) for c, n in enumerate(names)], description="modality"),
        show_overlay=widgets.Checkbox(value=True, description="overlay"),
        alpha=widgets.FloatSlider(value=view["alpha"], min=0.0, max=1.0, step=0.05, description="opacity"),
    )

    def follow_plane(change: dict) -> None:
        limit = image.shape[PLANES[change["new"]]] - 1
        controls["index"].max = limit
        controls["index"].value = min(controls["index"].value, limit)

    controls["plane"].observe(follow_plane, names="value")

    def draw(**settings: Any) -> None:
        display(_viewer_figure(image, panels, **settings))

    output = widgets.interactive_output(draw, controls)
    boxes = list(controls.values())
    return widgets.VBox([widgets.HBox(boxes[:3]), widgets.HBox(boxes[3:]), output])


# Volumes are thinned to at most this many voxels per axis: the sprite (and the page) grows
# with the number of voxels, and a viewer needs to show where things are, not every voxel.
MAX_VOXELS_PER_AXIS = 48
# The cache's axes point left, posterior and superior (scans.TRAINING_AXES), so the viewer's
# L and R are the patient's; its millimetre coordinates would not be (annotate=False).
_VIEWER_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def _thinned(volume: np.ndarray) -> np.ndarray:
    steps = [max(1, -(-size // MAX_VOXELS_PER_AXIS)) for size in volume.shape]
    return volume[tuple(slice(None, None, step) for step in steps)]


def _nilearn_viewer(background: np.ndarray, labels: np.ndarray, colors: Sequence[str]) -> str:
    """nilearn's static viewer of ``labels`` (1..len(colors); 0 = none) over ``background``: an HTML document.

    Built with nilearn's public :func:`~nilearn.plotting.view_img`; the document
    holds the slices and nilearn's scripts inline, so it needs no kernel and no network.
    It opens at the labels' centre (nilearn's own choice can miss the tumour in
    two of the three views), so viewers of one label volume open at one place.
    """
    import nibabel as nib
    from matplotlib.colors import ListedColormap
    from nilearn import plotting

    labels = _thinned(labels)
    centre = tuple(_VIEWER_AFFINE[:3, :3] @ np.argwhere(labels).mean(axis=0)) if labels.any() else None
    view = plotting.view_img(
        nib.Nifti1Image(labels.astype(np.float32), _VIEWER_AFFINE),
        bg_img=nib.Nifti1Image(_thinned(background).astype(np.float32), _VIEWER_AFFINE),
        cmap=ListedColormap(["#000000", *colors]), vmin=0, vmax=len(colors), symmetric_cmap=False, threshold=0.5,
        colorbar=False, annotate=False, draw_cross=True, black_bg=False, dim=0, resampling_interpolation="nearest",
        opacity=0.6, title=None, cut_coords=centre,
    )
    return view.get_standalone()
