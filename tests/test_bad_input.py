"""The bad-input catalogue: each case gives a clear message naming the file
and the problem (or a documented warning), and never removes an earlier
output. Cases covered in other modules are listed at the end."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

GOOD_POLYGON = [[1, 1], [8, 1], [8, 8], [1, 8]]


def _label(path: Path, annotations) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"annotations": annotations}))


def _root(root: Path) -> Path:
    """A valid data root: two training images of person ID001, one test image."""
    for stem in ("a", "b"):
        image = root / "train" / "DCM" / "ID001" / f"{stem}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), np.full((20, 24), 90, np.uint8))
        _label(
            root / "train" / "outputs_json" / "ID001" / f"{stem}.json", [{"label": "Radius", "points": GOOD_POLYGON}]
        )
    test = root / "test" / "DCM" / "ID002" / "t.png"
    test.parent.mkdir(parents=True)
    cv2.imwrite(str(test), np.zeros((20, 24), np.uint8))
    return root


def _truncate(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    cv2.imwrite(str(path), noise)
    path.write_bytes(path.read_bytes()[:200])


TRAIN_A = "train/DCM/ID001/a.png"
LABEL_A = "train/outputs_json/ID001/a.json"

ERRORS = {
    "truncated PNG": (lambda r: _truncate(r / TRAIN_A), "a.png: not a readable image, corrupt or truncated"),
    "zero-size file": (lambda r: (r / TRAIN_A).write_bytes(b""), "a.png: image file is empty (0 bytes)"),
    "JSON that does not parse": (
        lambda r: (r / LABEL_A).write_text("{not json"),
        "a.json: label file is not valid JSON",
    ),
    "JSON with a wrong schema": (
        lambda r: (r / LABEL_A).write_text('{"shapes": []}'),
        "a.json: label file has no 'annotations' list",
    ),
    "annotation without points": (
        lambda r: _label(r / LABEL_A, [{"label": "Radius"}]),
        "a.json: annotation 0 lacks 'label' or 'points'",
    ),
    "unknown class name": (
        lambda r: _label(r / LABEL_A, [{"label": "Femur", "points": GOOD_POLYGON}]),
        "a.json: annotation 0 ('Femur'): unknown class name",
    ),
    "coordinates not numbers": (
        lambda r: _label(r / LABEL_A, [{"label": "Ulna", "points": [[1, "x"], [2, 2], [3, 1]]}]),
        "a.json: annotation 0 ('Ulna'): points are not numbers",
    ),
    "coordinates not pairs": (
        lambda r: _label(r / LABEL_A, [{"label": "Ulna", "points": [[1, 2, 3], [2, 2, 2], [3, 1, 1]]}]),
        "points are not a list of [x, y] numbers",
    ),
    "coordinates that are NaN": (
        lambda r: _label(r / LABEL_A, [{"label": "Ulna", "points": [[1, float("nan")], [2, 2], [3, 1]]}]),
        "a.json: annotation 0 ('Ulna'): points are not finite numbers (NaN or infinity)",
    ),
    "coordinates too large for a float (1e400 reads as infinity)": (
        lambda r: (r / LABEL_A).write_text(
            '{"annotations": [{"label": "Ulna", "points": [[1, 1e400], [2, 2], [3, 1]]}]}'
        ),
        "a.json: annotation 0 ('Ulna'): points are not finite numbers (NaN or infinity)",
    ),
    "an integer coordinate too large for a float": (
        lambda r: (r / LABEL_A).write_text(
            '{"annotations": [{"label": "Ulna", "points": [[1, 1%s], [2, 2], [3, 1]]}]}' % ("0" * 400)
        ),
        "a.json: annotation 0 ('Ulna'): points are not finite numbers (too large for a float)",
    ),
    "class name that is not a string": (
        lambda r: _label(r / LABEL_A, [{"label": ["Ulna"], "points": GOOD_POLYGON}]),
        "a.json: annotation 0 (['Ulna']): unknown class name",
    ),
    "label file without an image": (
        lambda r: _label(r / "train/outputs_json/ID001/c.json", []),
        "c.json: label file without an image",
    ),
    "image without a label file": (lambda r: (r / LABEL_A).unlink(), "a.png: no label file"),
    "duplicate image names across ID folders": (
        lambda r: (
            (r / "train/DCM/ID003").mkdir()
            or cv2.imwrite(str(r / "train/DCM/ID003/a.png"), np.zeros((4, 4), np.uint8))
            or _label(r / "train/outputs_json/ID003/a.json", [])
        ),
        "a.png: image name used more than once",
    ),
    "empty test folder": (lambda r: (r / "test/DCM/ID002/t.png").unlink(), "no test images"),
    "not a data root": (lambda r: (r / "train/DCM").rename(r / "train/images"), "not a data root (no train/DCM folder"),
}


def _findings(root: Path) -> list[dict]:
    """The EDA's outlier findings for the training images of a data root."""
    from handbone.data import index_data_root, read_annotations
    from handbone.outliers import detect, image_features

    train = index_data_root(root).query("split == 'train'")
    return detect(
        [
            image_features(row.image_name, read_annotations(row.label_path), row.height, row.width)
            for row in train.itertuples()
        ]
    )


def _index(root: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "handbone", "-q", "index", "--data-root", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_data_is_named_and_the_earlier_index_survives(tmp_path, case):
    root = _root(tmp_path / "root")
    out = tmp_path / "results" / "index" / "index.csv"
    assert _index(root, out).returncode == 0  # the earlier, good output
    before = out.read_bytes()
    damage, message = ERRORS[case]
    damage(root)
    result = _index(root, out)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert out.read_bytes() == before
    assert [path.name for path in out.parent.iterdir()] == ["index.csv"]  # no half-written file left beside it


WARNINGS = {
    "polygon with fewer than 3 points": ([[1, 1], [5, 5]], "polygon has 2 points, at least 3 are needed"),
    "polygon with zero area": ([[1, 1], [2, 2], [3, 3]], "polygon has zero area"),
    "coordinates outside the image": ([[1, 1], [60, 1], [5, 5]], "polygon lies partly outside the 24x20 image"),
    "a point far outside the image": (
        [[1, 1], [1e15, 1e15], [1, 8]],
        "polygon lies partly outside the 24x20 image (point 1 at [1e+15, 1e+15])",
    ),
    "polygon entirely outside the image": ([[100, 100], [120, 100], [100, 120]], "polygon lies entirely outside"),
}


@pytest.mark.parametrize("case", list(WARNINGS))
def test_geometric_faults_warn_and_the_eda_flags_them(tmp_path, case):
    """Documented behaviour: a warning naming the file at indexing; the EDA
    then reports the image as a polygon_invalid outlier, which the default
    outliers.exclude_reasons leave out of training."""
    root = _root(tmp_path / "root")
    points, message = WARNINGS[case]
    _label(root / LABEL_A, [{"label": "Radius", "points": GOOD_POLYGON}, {"label": "Ulna", "points": points}])
    result = _index(root, tmp_path / "index.csv")
    assert result.returncode == 0 and f"a.json: annotation 1 ('Ulna'): {message}" in result.stderr
    findings = _findings(root)
    assert any(f["image_name"] == "a.png" and f["reason"] == "polygon_invalid" for f in findings)


def test_the_eda_rule_survives_a_point_far_outside_the_image(tmp_path):
    """A finite point however far out (here 1e15) is clipped to the image by
    every computation: the eda command finishes and flags the polygon, which
    the default exclude_reasons leave out of training."""
    root = _root(tmp_path / "root")
    far = [[2, 2], [1e15, 1e15], [2, 9]]
    _label(root / LABEL_A, [{"label": "Radius", "points": GOOD_POLYGON}, {"label": "Ulna", "points": far}])
    assert _index(root, tmp_path / "index.csv").returncode == 0
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "handbone",
            "-q",
            "eda",
            "--index",
            str(tmp_path / "index.csv"),
            "--out-dir",
            str(tmp_path / "eda"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    outliers = (tmp_path / "eda" / "outliers.csv").read_text()
    assert "a.png,polygon_invalid,1,Ulna: outside the image" in outliers


def test_an_unexpected_eda_error_still_names_the_file(tmp_path, monkeypatch):
    """A bug keeps its traceback, but the user learns which label triggered it."""
    from handbone import eda
    from handbone.data import index_data_root

    def broken(*args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(eda, "image_features", broken)
    with pytest.raises(ZeroDivisionError) as raised:
        eda.run_eda(index_data_root(_root(tmp_path / "root")), tmp_path / "eda", progress=False)
    assert any(note.endswith("a.json") and "a.png" in note for note in raised.value.__notes__)


def test_a_class_twice_in_one_image_is_an_outlier_not_an_error(tmp_path):
    root = _root(tmp_path / "root")
    _label(
        root / LABEL_A,
        [{"label": "Radius", "points": GOOD_POLYGON}, {"label": "Radius", "points": [[12, 12], [18, 12], [15, 18]]}],
    )
    findings = _findings(root)
    assert {(f["image_name"], f["reason"]) for f in findings} >= {("a.png", "class_duplicated")}


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    from handbone.model import build_model, load_checkpoint, save_checkpoint

    unet = {
        "arch": "Unet",
        "encoder": "tu-mobilenetv3_small_050",
        "encoder_weights": None,
        "kwargs": {"decoder_channels": [16, 16, 8, 8, 8]},
    }
    fpn = {"arch": "FPN", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None}
    save_checkpoint(tmp_path / "model.pt", build_model(unet), {"model": fpn, "input_size": 64})
    with pytest.raises(ValueError, match="checkpoint does not fit model"):
        load_checkpoint(tmp_path / "model.pt", torch.device("cpu"))


# Covered elsewhere: 16-bit, palette, RGB and RGBA PNGs and non-square images
# are read correctly (test_inference.py::test_predicting_a_folder_of_odd_sizes_and_png_modes,
# test_data.py::test_read_image_accepts_16_bit_and_rgb); a typo'd config key
# (test_workflow.py::test_bad_config_is_refused_naming_the_key); an unknown encoder stops
# the run before any training (test_workflow.py::test_an_unknown_encoder_stops_the_run_before_any_training);
# a damaged cache entry (test_preprocess.py); a killed run
# (test_workflow.py::test_a_run_killed_during_training_recovers_to_the_same_submission).
