import numpy as np
import pandas as pd
import pytest

from handbone import probmaps
from handbone.classes import CLASSES
from handbone.ensemble import ensemble_maps
from handbone.postprocess import PostprocessParams
from handbone.submission import SubmissionError, validate, write_submission


def _write(path, rows):
    pd.DataFrame(rows, columns=["image_name", "class", "rle"]).to_csv(path, index=False)
    return path


def _good_rows(name="a.png"):
    return [[name, class_name, "1 2" if i == 0 else ""] for i, class_name in enumerate(CLASSES)]


def test_valid_submission_passes(tmp_path):
    path = _write(tmp_path / "s.csv", _good_rows() + _good_rows("b.png"))
    assert validate(path, {"a.png": (4, 4), "b.png": (4, 4)}) == 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows[:-1], "missing"),
        (lambda rows: rows + [rows[0]], "repeated"),
        (lambda rows: [[r[0], "Finger-1" if r[1] == "finger-1" else r[1], r[2]] for r in rows], "unknown"),
        (lambda rows: [[r[0], r[1], "1 2 3" if i == 0 else r[2]] for i, r in enumerate(rows)], "odd number"),
        (lambda rows: [[r[0], r[1], "15 5" if i == 0 else r[2]] for i, r in enumerate(rows)], "past the image"),
        (lambda rows: [["ID001/a.png", r[1], r[2]] for r in rows], "bare file name"),
    ],
)
def test_malformed_submissions_are_rejected(tmp_path, mutate, message):
    path = _write(tmp_path / "s.csv", mutate(_good_rows()))
    with pytest.raises(SubmissionError, match=message):
        validate(path, {"a.png": (4, 4), "ID001/a.png": (4, 4)})


def test_wrong_columns_and_missing_image_are_rejected(tmp_path):
    path = tmp_path / "s.csv"
    pd.DataFrame([["a.png", "finger-1", ""]], columns=["image", "class", "rle"]).to_csv(path, index=False)
    with pytest.raises(SubmissionError, match="columns"):
        validate(path)
    path = _write(tmp_path / "t.csv", _good_rows())
    with pytest.raises(SubmissionError, match="have no rows"):
        validate(path, {"a.png": (4, 4), "b.png": (4, 4)})


def test_ensemble_mean_then_submission_threshold(tmp_path):
    shape = (29, 3, 4)
    first, second = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    first[0, 0, :2] = 1.0  # both models agree: mean 1.0
    first[1, 1, 1] = 0.8  # one model only: mean 0.4, below 0.5
    second[0, 0, :2] = 1.0
    for folder, probabilities in (("m1", first), ("m2", second)):
        probmaps.save(tmp_path / folder / "img.npz", probabilities, "img.png")
    ensemble_maps([tmp_path / "m1", tmp_path / "m2"], tmp_path / "ens", progress=False)
    assert probmaps.load(tmp_path / "ens" / "img.npz")[1, 1, 1] == pytest.approx(0.4, abs=0.003)
    index = tmp_path / "index.csv"
    pd.DataFrame(
        [
            {
                "split": "test",
                "person_id": "ID1",
                "image_name": "img.png",
                "image_path": "x",
                "label_path": "",
                "height": 3,
                "width": 4,
            }
        ]
    ).to_csv(index, index=False)
    out = write_submission(tmp_path / "ens", index, tmp_path / "sub.csv", PostprocessParams.plain(0.5), progress=False)
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["class"]) == CLASSES
    assert table.loc[0, "rle"] == "1 2" and (table["rle"].iloc[1:] == "").all()
    assert validate(out, {"img.png": (3, 4)}) == 1


def test_probability_map_storage_round_trip_and_windows(tmp_path):
    rng = np.random.default_rng(0)
    probabilities = np.zeros((29, 50, 70), np.float32)
    probabilities[0, 10:20, 30:45] = rng.random((10, 15))  # a bone
    probabilities[3, 0, 69] = 0.9  # a single pixel in a corner
    probabilities[5] = 0.001  # negligible everywhere: dropped
    probmaps.save(tmp_path / "m.npz", probabilities, "img.png")
    quantized = probmaps.load_quantized(tmp_path / "m.npz")
    expected = probmaps.quantize(probabilities)
    expected[expected < probmaps.FLOOR] = 0  # negligible probabilities are dropped
    assert np.array_equal(quantized, expected)
    assert np.abs(probmaps.load(tmp_path / "m.npz") - probabilities).max() <= 0.5 / 255 + 0.001
    window = (5, 15, 40, 70)
    assert np.array_equal(probmaps.load_quantized(tmp_path / "m.npz", window), expected[:, 5:15, 40:70])
    assert probmaps.image_name(tmp_path / "m.npz") == "img.png"
    with np.load(tmp_path / "m.npz") as archive:
        assert archive["class_00"].shape == (10, 15) and archive["class_05"].size == 0
        assert archive["class_00"].dtype == np.uint8
