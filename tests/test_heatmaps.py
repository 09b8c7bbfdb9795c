"""Heatmaps: the choice of films, the hot region, the way back to original pixels, localization by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xray_spark.evaluate.localization import TOLERANCE, localization_metrics
from xray_spark.heatmap_choice import HeatmapChoice
from xray_spark.heatmap_choice import parse_heatmap_choice as parse_choice
from xray_spark.score.heatmaps import hot_region, to_original


@pytest.mark.parametrize(
    ("text", "choice"),
    [("none", HeatmapChoice("none")), ("called", HeatmapChoice("called")), ("top:100", HeatmapChoice("top", 100))],
)
def test_choices_parse(text, choice):
    assert parse_choice(text) == choice and str(choice) == text


@pytest.mark.parametrize("text", ["top", "top:0", "top:-3", "all", "top:ten"])
def test_bad_choices_name_the_forms(text):
    with pytest.raises(ValueError, match="none, called or top:N"):
        parse_choice(text)


def test_the_hot_region_is_the_connected_part_around_the_peak():
    cam = np.zeros((8, 8), dtype=np.float32)
    cam[2:4, 5:7] = 1.0  # the hot spot: columns 5-6, rows 2-3 of an 8 x 8 map
    cam[6, 0] = 0.9  # a second warm spot, not connected: not in the box
    (px, py), (bx, by, bw, bh) = hot_region(cam, 64)  # one map cell = 8 px
    assert 40 <= px <= 56 and 16 <= py <= 32
    assert bx >= 36 and bx + bw <= 60 and by >= 12 and by + bh <= 36
    assert bw < 24 and bh < 24


def test_coordinates_go_back_through_the_pad_and_the_resize():
    # a 2000 x 1000 film was padded to 2000 x 2000 (500 px above and below), then resized to 128
    assert to_original(64, 128, 2000, 1000, "x") == pytest.approx(1000)
    assert to_original(64, 128, 2000, 1000, "y") == pytest.approx(500)
    assert to_original(0, 128, 2000, 1000, "y") == pytest.approx(-500)  # the padding, above the film
    assert to_original(32, 128, None, None, "x") == 32  # unknown size: the stored image is the original


def _frame(rows, columns):
    return pd.DataFrame(rows, columns=columns)


def test_localization_measures_by_hand():
    maps = _frame(
        [
            # image, finding, peak, predicted box, original size
            ("a", "Mass", 110, 110, 90, 90, 40, 40, 1000, 1000),  # peak in the box, predicted box inside it
            ("b", "Mass", 500, 500, 480, 480, 40, 40, 1000, 1000),  # far away
            ("c", "Nodule", 205 + 60, 210, 250, 190, 40, 40, 1000, 1000),  # 60 px right of the box: tolerance only
            ("d", "Nodule", 10, 10, 0, 0, 20, 20, 1000, 1000),  # no box for it: not counted
        ],
        [
            "image_id",
            "finding",
            "peak_x",
            "peak_y",
            "box_x",
            "box_y",
            "box_w",
            "box_h",
            "original_width",
            "original_height",
        ],
    )
    boxes = _frame(
        [("a", "Mass", 80, 80, 60, 60), ("b", "Mass", 80, 80, 60, 60), ("c", "Nodule", 190, 190, 15, 30)],
        ["image_id", "finding", "x", "y", "w", "h"],
    )
    result = localization_metrics(maps, boxes, seed=1)
    assert result["boxes_with_heatmap"] == 3
    mass, nodule = result["by_finding"]["Mass"], result["by_finding"]["Nodule"]
    assert (mass["pointing"], mass["pointing_tolerant"]) == (0.5, 0.5)
    assert (nodule["pointing"], nodule["pointing_tolerant"]) == (0.0, 1.0)  # 60 px < 15/224 x 1000 = 67 px
    # a's predicted box (90..130) covers 40 x 40 of which 40 x 40 lies in the true box (80..140): IoBB 1
    assert mass["iobb_accuracy"]["0.7"] == 0.5 and mass["iou_accuracy"]["0.5"] == 0.0  # IoU 1600 / 3600
    assert mass["iou_accuracy"]["0.4"] == 0.5
    margin = TOLERANCE * 1000
    assert mass["chance"] == pytest.approx((60 + 2 * margin) ** 2 / 1e6)
    assert result["overall"]["boxes"] == 3


def test_grad_cam_differentiates_the_logit_so_a_certain_film_still_gets_a_heatmap():
    """A film whose probability is 1.0 in float32 (the films the worklist shows first) has a zero gradient there."""
    from xray_spark.keras_runtime import feature_layer, grad_cam, grad_cam_model
    from xray_spark.models import build_model, keras

    keras().utils.set_random_seed(3)  # the layers' initial weights: not those of whatever ran before in this process
    model = build_model("small_cnn", n_labels=2, image_size=32, seed=3)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel, bias + np.array([60.0, 0.0], dtype=np.float32)])
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 1), dtype=np.uint8)
    assert (model.predict(images, verbose=0)[:, 0] == 1.0).all()  # saturated: sigmoid's gradient is exactly 0

    cams = grad_cam(grad_cam_model(model), images, np.zeros(4, dtype=int))
    assert cams.shape == (4, 4, 4) and np.allclose(cams.reshape(4, -1).max(axis=1), 1.0)
    on_probability = keras().Model(model.inputs, [feature_layer(model).output, model.output])
    assert grad_cam(on_probability, images, np.zeros(4, dtype=int)).max() == 0.0  # what the heatmap was before
