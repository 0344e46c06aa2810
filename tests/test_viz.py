"""Tests for tutorial_lib.viz: every figure builds on small volumes (Agg backend)."""

from __future__ import annotations

import html
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tutorial_lib import viz  # noqa: E402
from tutorial_lib.config import BRATS  # noqa: E402


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 10, 8, 4)).astype("float32")  # shape: (x, y, z, 4 modalities)
    label = np.zeros((12, 10, 8), np.uint8)  # shape: (x, y, z)
    labels = sorted(value for value in BRATS.labels if value)
    label[3:7, 3:7, 5] = labels[1]  # most tumour on axial slice 5
    label[4:6, 4:6, 5] = labels[2]
    label[4, 4, 2] = labels[0]
    return image, label


def test_label_colours_cover_every_tumour_label_and_keep_background_clear():
    table = viz.label_colors()
    assert table[0, 3] == 0.0
    for label in BRATS.labels:
        if label:
            assert table[label, 3] == 1.0 and tuple(table[label]) == to_rgba(viz.LABEL_COLORS[label])


def test_overlay_colours_labels_and_masks():
    fig = Figure()
    ax = fig.subplots()
    label = np.zeros((3, 3), np.uint8)
    label[1, 1] = max(BRATS.labels)
    viz.overlay(ax, np.zeros((3, 3)), label, alpha=0.5)
    rgba = ax.images[-1].get_array()
    np.testing.assert_allclose(rgba[1, 1], np.array(to_rgba(viz.LABEL_COLORS[max(BRATS.labels)])) * [1, 1, 1, 0.5])
    assert rgba[0, 0, 3] == 0
    viz.overlay(ax, np.zeros((3, 3)), label > 0, alpha=1.0)
    np.testing.assert_allclose(ax.images[-1].get_array()[1, 1], to_rgba(viz.MASK_COLOR))
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(ax, np.zeros((3, 3)), label, alpha=2)
    with pytest.raises(ValueError, match="shape"):
        viz.overlay(ax, np.zeros((3, 3)), np.zeros((2, 2), np.uint8))


def test_show_modalities_picks_the_slice_with_most_tumour(volume):
    image, label = volume
    fig = viz.show_modalities(image, label)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # four modalities + label overlay
    assert fig._suptitle.get_text() == "axial slice 5"
    assert [ax.get_title() for ax in fig.axes[:4]] == list(BRATS.modalities)
    fig.canvas.draw()


def test_show_modalities_slices_any_plane(volume):
    image, label = volume
    fig = viz.show_modalities(image, label, plane="sagittal")
    assert fig._suptitle.get_text().startswith("sagittal slice ")
    with pytest.raises(ValueError, match="plane"):
        viz.show_modalities(image, plane="oblique")


def test_plot_history_accepts_histories_tables_and_several_runs():
    run = {"loss": [0.9, 0.5], "val_loss": [1.0, 0.7], "dice": [0.1, 0.4], "val_dice": [0.1, 0.3]}
    fig = viz.plot_history(run)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    fig = viz.plot_history({"a": run, "b": pd.DataFrame(run)}, metrics=("dice",))
    assert [line.get_label() for line in fig.axes[0].lines] == ["a train", "a val", "b train", "b val"]
    with pytest.raises(ValueError, match="none of the metrics"):
        viz.plot_history(run, metrics=("accuracy",))


def test_slice_viewer_is_static_without_a_kernel(volume):
    image, label = volume
    view = viz.slice_viewer(image, label, label > 0)
    assert isinstance(view, viz.SliceView) and isinstance(view.figure, Figure)
    assert [ax.get_title() for ax in view.figure.axes] == ["ground truth", "prediction"]
    assert view._repr_png_().startswith(b"\x89PNG")  # where HTML cannot be shown
    with pytest.raises(ValueError, match="prediction shape"):
        viz.slice_viewer(image, prediction=np.zeros((2, 2, 2), bool))


def test_slice_viewer_widgets_can_be_built(volume):
    widgets = pytest.importorskip("ipywidgets")
    image, label = volume
    viewer = viz.slice_viewer(image, label, interactive=True)
    assert isinstance(viewer, widgets.VBox)
    controls = {child.description: child for box in viewer.children[:2] for child in box.children}
    assert set(controls) == {"plane", "slice", "modality", "overlay", "opacity"}
    controls["plane"].value = "sagittal"
    assert controls["slice"].max == image.shape[0] - 1


def _pixels(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def test_slice_viewer_redraws_the_slice_and_modality_a_learner_picks(volume, monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr("IPython.display.display", lambda *objects, **options: None)
    drawn, real_figure = [], viz._viewer_figure

    def record(*args, **view):
        drawn.append((view, real_figure(*args, **view)))
        return drawn[-1][1]

    monkeypatch.setattr(viz, "_viewer_figure", record)
    image, label = volume
    viewer = viz.slice_viewer(image, label, interactive=True)
    controls = {child.description: child for box in viewer.children[:2] for child in box.children}
    first = _pixels(drawn[-1][1])
    controls["slice"].value = 2
    assert drawn[-1][0]["index"] == 2 and not np.array_equal(_pixels(drawn[-1][1]), first)
    after_slice = _pixels(drawn[-1][1])
    controls["modality"].value = 3
    assert drawn[-1][0]["channel"] == 3 and not np.array_equal(_pixels(drawn[-1][1]), after_slice)


def test_static_environment_variable_forces_figures(volume, monkeypatch):
    monkeypatch.setenv(viz.STATIC_ENV, "1")
    assert isinstance(viz.slice_viewer(volume[0]), viz.SliceView)


def test_static_viewers_need_no_kernel_and_no_network(volume):
    image, label = volume  # four modalities: the truth over each, the prediction over the first
    page = viz.slice_viewer(image, label, label > 0, interactive=False)._repr_html_()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert captions == ["ground truth over flair", "prediction over flair", "ground truth over t1",
                        "ground truth over t1ce", "ground truth over t2"]
    assert re.findall(r'<iframe class="volume-viewer" title="(.*?)"', page) == [
        f"slice viewer: {caption}" for caption in captions]
    documents = re.findall(r'srcdoc="(.*?)"', page, re.S)
    assert len(documents) == len(captions)  # nilearn's own document per viewer, nothing taken apart
    for document in map(html.unescape, documents):
        assert document.count("brainsprite({") == 1
        assert not re.findall(r"<script[^>]*src=", document), "a viewer whose scripts are not inline"
        # nilearn's favicon is the one outside address; a browser asks for icons of top-level pages only.
        assert [link for link in re.findall(r"(?:src|href)=\"(https?://[^\"]*)", document)
                if not link.endswith("favicon.ico")] == []


def test_static_viewers_thin_large_volumes():
    big = np.zeros((192, 150, 160), np.float32)
    assert viz._thinned(big).shape == (48, 38, 40)  # every 4th voxel: at most 48 per axis
    assert viz._thinned(big[:48, :48, :40]).shape == (48, 48, 40)


def test_history_to_dict_accepts_frames_dicts_and_keras_like_objects():
    frame = pd.DataFrame({"epoch": [0, 1], "loss": [0.5, 0.25]})

    class FakeHistory:
        history = {"loss": [np.float32(0.5), 0.25]}

    expected = {"loss": [0.5, 0.25]}
    assert viz.history_to_dict(frame) == expected
    assert viz.history_to_dict(FakeHistory()) == expected
    assert viz.history_to_dict({"loss": (0.5, 0.25)}) == expected
    with pytest.raises(ValueError, match="History"):
        viz.history_to_dict([0.5, 0.25])


def test_history_plots_have_whole_epoch_ticks_and_labelled_axes():
    fig = viz.plot_history({"loss": [0.9, 0.5, 0.4], "val_loss": [1.0, 0.7, 0.6]}, metrics=("loss",))
    ax = fig.axes[0]
    ticks = [tick for tick in ax.get_xticks() if 1 <= tick <= 3]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss"


def test_label_colours_stay_apart_in_greyscale():
    # Printed or read in greyscale, each label still has its own shade (Rec. 601 luma, 0..1).
    luma = sorted(0.299 * r + 0.587 * g + 0.114 * b for r, g, b, _ in map(to_rgba, viz.LABEL_COLORS.values()))
    assert min(b - a for a, b in zip(luma, luma[1:])) > 0.1
