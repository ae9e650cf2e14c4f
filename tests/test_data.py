import json

import cv2
import numpy as np
import pytest

from handbone.classes import CLASS_TO_INDEX, CLASSES, NUM_CLASSES
from handbone.data import DataError, clip_polygon, index_data_root, rasterize, read_image
from handbone.metrics import dice_per_class


def test_class_order_matches_competition():
    assert NUM_CLASSES == 29
    assert CLASSES[0] == "finger-1" and CLASSES[18] == "finger-19"
    assert CLASSES[19:] == [
        "Trapezium",
        "Trapezoid",
        "Capitate",
        "Hamate",
        "Scaphoid",
        "Lunate",
        "Triquetrum",
        "Pisiform",
        "Radius",
        "Ulna",
    ]


def test_rasterize_known_rectangle_and_triangle():
    annotations = [
        {"label": "Radius", "points": [[2, 1], [5, 1], [5, 3], [2, 3]]},
        {"label": "finger-1", "points": [[0, 0], [4, 0], [0, 4]]},
    ]
    mask = rasterize(annotations, 6, 8)
    assert mask.shape == (29, 6, 8)
    radius = mask[CLASS_TO_INDEX["Radius"]]
    expected = np.zeros((6, 8), np.uint8)
    expected[1:4, 2:6] = 1  # polygon vertices are included, as in cv2.fillPoly
    assert np.array_equal(radius, expected)
    triangle = mask[CLASS_TO_INDEX["finger-1"]]
    assert triangle[0, 0] == 1 and triangle[0, 4] == 1 and triangle[4, 0] == 1
    assert triangle[4, 4] == 0 and triangle.sum() == 15  # 5+4+3+2+1 pixels
    # Multi-label: the overlap keeps both classes.
    assert radius[1, 2] == 1 and triangle[1, 2] == 1
    assert mask.sum(axis=(1, 2))[[i for i in range(29) if CLASSES[i] not in ("Radius", "finger-1")]].sum() == 0


def test_dice_matches_competition_definition():
    truth = np.zeros((2, 4, 4), np.uint8)
    prediction = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2] = 1  # 8 pixels
    prediction[0, :1] = 1  # 4 pixels, all inside
    dice = dice_per_class(prediction, truth)
    assert dice[0] == pytest.approx((2 * 4 + 1e-4) / (4 + 8 + 1e-4))
    assert dice[1] == 1.0  # both empty


def _write_root(root, label_points=None, label=True):
    image_dir = root / "train" / "DCM" / "ID001"
    label_dir = root / "train" / "outputs_json" / "ID001"
    test_dir = root / "test" / "DCM" / "ID002"
    for folder in (image_dir, label_dir, test_dir):
        folder.mkdir(parents=True)
    cv2.imwrite(str(image_dir / "a.png"), np.zeros((10, 12), np.uint8))
    cv2.imwrite(str(test_dir / "t.png"), np.zeros((10, 12), np.uint8))
    if label:
        points = label_points or [[1, 1], [5, 1], [5, 5]]
        (label_dir / "a.json").write_text(json.dumps({"annotations": [{"label": "Radius", "points": points}]}))


def test_index_lists_images_with_person_and_size(tmp_path):
    _write_root(tmp_path)
    index = index_data_root(tmp_path)
    assert list(index["split"]) == ["train", "test"]
    assert list(index["person_id"]) == ["ID001", "ID002"]
    assert list(index[["height", "width"]].iloc[0]) == [10, 12]


def test_index_names_missing_label_file(tmp_path):
    _write_root(tmp_path, label=False)
    with pytest.raises(DataError, match=r"a\.png: no label file"):
        index_data_root(tmp_path)


def test_index_rejects_points_that_are_not_numbers(tmp_path):
    _write_root(tmp_path, label_points=[[1, 1], ["x", 1], [5, 5]])
    with pytest.raises(DataError, match=r"a\.json: annotation 0 \('Radius'\): points are not numbers"):
        index_data_root(tmp_path)


@pytest.mark.parametrize("points, message", [([[1, 1], [5, 1]], "2 points"), ([[1, 1], [50, 1], [5, 5]], "outside")])
def test_index_warns_about_bad_polygons_and_goes_on(tmp_path, caplog, points, message):
    # Geometric faults are reported as outliers by the EDA instead of
    # stopping the whole run.
    _write_root(tmp_path, label_points=points)
    index = index_data_root(tmp_path)
    assert len(index) == 2
    assert any("a.json" in record.message and message in record.message for record in caplog.records)


def test_read_image_accepts_16_bit_and_rgb(tmp_path):
    gray16 = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    assert np.array_equal(read_image(tmp_path / "g16.png"), (gray16 >> 8).astype(np.uint8))
    rgb = np.full((4, 5, 3), 100, np.uint8)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    image = read_image(tmp_path / "rgb.png")
    assert image.shape == (4, 5) and int(image[0, 0]) == 100


def test_index_names_truncated_and_empty_images(tmp_path):
    _write_root(tmp_path)
    test_dir = tmp_path / "test" / "DCM" / "ID002"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    cv2.imwrite(str(test_dir / "whole.png"), noise)
    data = (test_dir / "whole.png").read_bytes()
    (test_dir / "cut.png").write_bytes(data[: len(data) // 2])
    (test_dir / "empty.png").write_bytes(b"")
    with pytest.raises(DataError) as raised:
        index_data_root(tmp_path)
    message = str(raised.value)
    assert "2 problem(s)" in message
    assert "cut.png: not a readable image, corrupt or truncated" in message
    assert "empty.png: image file is empty (0 bytes)" in message
    assert "whole.png" not in message


def test_clip_polygon_keeps_what_is_inside_and_bounds_the_rest():
    inside = np.array([[0, 0], [11, 0], [11, 9], [0, 9]], float)
    assert np.array_equal(clip_polygon(inside, 10, 12), inside)
    crossing = np.array([[-10, 2], [5, 2], [5, 6], [-10, 6]], float)
    assert np.array_equal(clip_polygon(crossing, 10, 12), [[-0.5, 2], [5, 2], [5, 6], [-0.5, 6]])
    far = np.array([[2, 2], [1e300, 2], [2, 1e300]], float)
    clipped = clip_polygon(far, 10, 12)
    assert np.isfinite(clipped).all() and clipped.min() >= -0.5 and clipped[:, 0].max() <= 11.5
    assert len(clip_polygon(np.array([[20, 20], [30, 20], [30, 30]], float), 10, 12)) == 0


def test_rasterize_draws_the_part_of_a_far_out_polygon_inside_the_image():
    annotations = [
        {"label": "Radius", "points": [[2, 2], [1e15, 2], [2, 1e15]]},  # covers everything right of and below (2, 2)
        {"label": "Ulna", "points": [[1, 1], [float("nan"), 1], [5, 5]]},  # refused by the index; skipped here
        {"label": "Lunate", "points": [[1, 1], [10**400, 1], [5, 5]]},
    ]
    mask = rasterize(annotations, 10, 12)
    expected = np.zeros((10, 12), np.uint8)
    expected[2:, 2:] = 1
    assert np.array_equal(mask[CLASS_TO_INDEX["Radius"]], expected)
    assert mask[CLASS_TO_INDEX["Ulna"]].sum() == 0 and mask[CLASS_TO_INDEX["Lunate"]].sum() == 0


@pytest.mark.parametrize(
    "points, message",
    [
        ([[1, 1], [1e15, 1e15], [1, 5]], "polygon lies partly outside the 12x10 image (point 1 at [1e+15, 1e+15])"),
        ([[1e15, 1e15], [2e15, 1e15], [1e15, 2e15]], "polygon lies entirely outside the 12x10 image"),
    ],
)
def test_index_warns_about_far_out_points_naming_file_and_annotation(tmp_path, caplog, points, message):
    _write_root(tmp_path, label_points=points)
    assert len(index_data_root(tmp_path)) == 2
    assert any(f"a.json: annotation 0 ('Radius'): {message}" in record.message for record in caplog.records)


def test_a_polygon_slightly_past_the_edge_is_cut_by_the_border_not_outside(tmp_path, caplog):
    # Some tools put the image's edge at x = width; within the tolerance
    # the bone is just cut by the border (reported by the EDA as truncated).
    _write_root(tmp_path, label_points=[[1, 1], [12, 1], [12, 5], [1, 5]])
    index_data_root(tmp_path)
    assert not caplog.records
