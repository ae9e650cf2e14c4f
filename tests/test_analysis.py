"""The prediction analysis on out-of-fold maps and the report's front-page summary."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_parts

from handbone import probmaps
from handbone.analysis import (
    ERROR_ALPHA,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    TRUE_ALPHA,
    TRUE_POSITIVE,
    added_last_table,
    analyse_image,
    error_overlay,
    write_prediction_analysis,
)
from handbone.classes import CLASS_GROUPS, CLASSES, NUM_CLASSES
from handbone.data import rasterize
from handbone.errors import DataError, MissingInput
from handbone.fitting import UNIFORM_STEP
from handbone.summary import FILES, run_summary

SHAPE = (NUM_CLASSES, 12, 16)


def _crops(full: np.ndarray):
    """A uint8 map as load_crops returns it (whole-image boxes)."""
    return full.shape, [(0, full.shape[1], 0, full.shape[2])] * len(full), list(full)


def _truth() -> np.ndarray:
    truth = np.zeros(SHAPE, np.uint8)
    truth[0, 2:6, 3:8] = 1
    truth[27, 6:11, 2:14] = 1  # Radius
    truth[28, 8:11, 10:15] = 1  # Ulna, overlapping the Radius
    return truth


def _blend(grey: int, colour, alpha: float) -> np.ndarray:
    return np.round((1 - alpha) * grey + alpha * np.array(colour, np.float32)).astype(np.uint8)


def test_class_groups_hold_every_class_once():
    grouped = [name for names in CLASS_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(CLASSES) and len(grouped) == NUM_CLASSES
    assert CLASS_GROUPS["metacarpals"] == ["finger-3", "finger-7", "finger-11", "finger-15", "finger-19"]


def test_a_perfect_map_scores_one_and_shows_no_error():
    truth = _truth()
    result = analyse_image([_crops(truth * 255)], truth)
    assert np.allclose(result.dice, 1) and np.allclose(result.ensemble, 1)
    assert result.similarity.shape == (1, 1, NUM_CLASSES) and np.allclose(result.similarity, 1)
    assert np.isnan(result.without).all()  # one model: no ensemble of the others
    assert list(result.area[[0, 27, 28]]) == [20, 60, 15] and result.area.sum() == 95
    assert np.array_equal(result.predicted[0], result.area)

    image = np.full(SHAPE[1:], 100, np.uint8)
    picture = error_overlay(image, truth.astype(bool), truth.astype(bool))
    bone = truth.any(axis=0)
    assert (picture[bone] == _blend(100, TRUE_POSITIVE, TRUE_ALPHA)).all()
    assert (picture[~bone] == 100).all()  # neither red nor blue anywhere


def test_false_positives_are_red_and_false_negatives_blue_at_their_pixels():
    truth = np.zeros(SHAPE, np.uint8)
    truth[0, 2, 2:4] = 1
    predicted = np.zeros(SHAPE, np.uint8)
    predicted[0, 2, 3] = predicted[0, 5, 5] = 255
    result = analyse_image([_crops(predicted)], truth)
    assert result.dice[0, 0] == pytest.approx(0.5, abs=1e-4)  # 2 x 1 / (2 + 2)
    assert result.dice[0, 1] == 1  # both empty, as in the competition
    assert result.predicted[0, 0] == 2 and result.area[0] == 2

    image = np.full(SHAPE[1:], 80, np.uint8)
    picture = error_overlay(image, predicted > 127, truth.astype(bool))
    assert (picture[5, 5] == _blend(80, FALSE_POSITIVE, ERROR_ALPHA)).all()
    assert (picture[2, 2] == _blend(80, FALSE_NEGATIVE, ERROR_ALPHA)).all()
    assert (picture[2, 3] == _blend(80, TRUE_POSITIVE, TRUE_ALPHA)).all()
    untouched = np.ones(SHAPE[1:], bool)
    untouched[5, 5] = untouched[2, 2] = untouched[2, 3] = False
    assert (picture[untouched] == 80).all()
    red, blue = picture[5, 5], picture[2, 2]  # BGR
    assert red[2] > red[0] and blue[0] > blue[2]


def test_a_bone_taken_for_its_neighbour_shows_both_tints():
    truth = np.zeros(SHAPE, np.uint8)
    truth[0, 4, 4] = 1
    predicted = np.zeros(SHAPE, bool)
    predicted[1, 4, 4] = True  # finger-2 where finger-1 is
    picture = error_overlay(np.full(SHAPE[1:], 80, np.uint8), predicted, truth.astype(bool))
    both = _blend(80, FALSE_POSITIVE, ERROR_ALPHA).astype(np.float32)
    assert (picture[4, 4] == np.round((1 - ERROR_ALPHA) * both + ERROR_ALPHA * np.array(FALSE_NEGATIVE))).all()


def test_identical_models_agree_fully_and_add_nothing_when_added_last():
    truth = _truth()
    imperfect = truth * 255
    imperfect[0, 2:6, 3] = 0  # a column of finger-1 missed
    imperfect[5, 0, 0] = 200  # a false finger-6
    result = analyse_image([_crops(imperfect), _crops(imperfect.copy())], truth)
    assert np.allclose(result.similarity, 1)
    assert result.dice[0, 0] == pytest.approx(2 * 16 / (16 + 20), abs=1e-4)
    assert np.allclose(result.without, result.ensemble)  # either one alone is the same as both
    table = added_last_table(["a", "b"], result.ensemble[None], result.without[None])
    assert list(table["gain"]) == [0.0, 0.0]
    assert table["dice_all"].iloc[0] == pytest.approx(result.ensemble.mean())


def test_different_models_have_the_dice_of_their_masks_as_similarity():
    truth = _truth()
    first, second = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    first[3, 0:2, 0:4] = 255  # 8 pixels
    second[3, 0:2, 2:6] = 255  # 8 pixels, 4 shared
    result = analyse_image([_crops(first), _crops(second)], truth)
    assert result.similarity[0, 1, 3] == pytest.approx(0.5, abs=1e-4)
    assert result.similarity[1, 0, 3] == result.similarity[0, 1, 3]
    assert result.similarity[0, 0, 3] == 1 and result.similarity[0, 1, 4] == 1  # nothing predicted: agree


def test_the_worse_model_adds_least_to_the_ensemble():
    truth = _truth()
    good = truth * 255
    bad = np.zeros(SHAPE, np.uint8)
    bad[:, 0:2, 0:16] = 255  # every class at the top edge, no bone found
    result = analyse_image([_crops(good), _crops(good.copy()), _crops(bad)], truth)
    table = added_last_table(["good1", "good2", "bad"], result.ensemble[None], result.without[None])
    # Outvoted two to one, the bad model changes nothing; without a good one it ties and its pixels win.
    assert table["model"].iloc[-1] == "bad" and table["gain"].iloc[-1] == pytest.approx(0)
    assert (table["gain"].iloc[:2] > 0.1).all()


def _write_run(tmp_path, models: dict, images=("a.png", "b.png", "c.png")):
    """A data root of tiny images with rectangle labels, an index, folds
    (image c excluded) and per model its OOF maps: ``models[name](truth)``
    gives the uint8 map of an image from its label masks."""
    rows, fold_rows = [], []
    for number, name in enumerate(images):
        image_path = tmp_path / "data" / "train" / "DCM" / "ID001" / name
        label_path = tmp_path / "data" / "train" / "outputs_json" / "ID001" / name.replace(".png", ".json")
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image_path), np.full(SHAPE[1:], 90, np.uint8))
        size = 3 + number
        box = [[2, 2], [2 + size, 2], [2 + size, 2 + size], [2, 2 + size]]
        annotations = [
            {"label": "Pisiform", "points": box},
            {"label": "Radius", "points": [[1, 8], [14, 8], [14, 11], [1, 11]]},
        ]
        label_path.write_text(json.dumps({"annotations": annotations}))
        rows.append(["train", "ID001", name, str(image_path), str(label_path), SHAPE[1], SHAPE[2]])
        fold_rows.append([name, "ID001", number % 2, name == "c.png", "label_swap" if name == "c.png" else ""])
        truth = rasterize(annotations, *SHAPE[1:])
        for model, make in models.items():
            probmaps.save(
                tmp_path / model / "oof" / f"fold{number % 2}" / probmaps.map_filename(name), make(truth), name
            )
    columns = ["split", "person_id", "image_name", "image_path", "label_path", "height", "width"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "index.csv", index=False)
    pd.DataFrame(fold_rows, columns=["image_name", "person_id", "fold", "excluded", "exclusion_reason"]).to_csv(
        tmp_path / "folds.csv", index=False
    )
    return [tmp_path / model / "oof" for model in models], tmp_path / "folds.csv", tmp_path / "index.csv"


def test_one_model_gives_a_one_by_one_matrix_and_a_one_row_table(tmp_path):
    def missing_pisiform(truth):
        prediction = truth * 255
        prediction[CLASSES.index("Pisiform")] = 0
        return prediction

    oof, folds, index = _write_run(tmp_path, {"only": missing_pisiform})
    out = tmp_path / "analysis"
    tables = write_prediction_analysis(oof, folds, index, out, progress=False)
    assert len(tables["similarity"]) == 1 and tables["similarity"]["mean_dice"].iloc[0] == 1
    assert len(tables["added_last"]) == 1 and tables["added_last"]["gain"].isna().all()
    per_class = tables["per_class"].set_index("model")
    assert list(per_class.index) == ["only", UNIFORM_STEP]
    assert per_class.loc["only", "Pisiform"] == pytest.approx(0, abs=1e-4)
    assert per_class.loc["only", "Radius"] == 1
    per_image = pd.read_csv(out / "per_image.csv")
    assert sorted(per_image["image_name"].unique()) == ["a.png", "b.png"]  # c is excluded
    pisiform = per_image[per_image["class"] == "Pisiform"].set_index("image_name")
    assert list(pisiform["area"]) == [16, 25]  # 4 x 4 and 5 x 5, vertices included
    assert list(pisiform["predicted_area"]) == [0, 0]
    for name in ("similarity.png", "dice_vs_area/only.png"):
        assert cv2.imread(str(out / name)) is not None
    pictures = sorted(path.name for path in (out / "worst" / "only").glob("*.png"))
    assert pictures == ["1_b.png", "2_a.png"]  # the smoothing makes missing the larger Pisiform worse


def test_two_models_are_compared_and_the_worse_one_adds_least(tmp_path):
    def shifted(truth):
        return np.roll(truth * 255, 2, axis=2)

    oof, folds, index = _write_run(tmp_path, {"exact": lambda truth: truth * 255, "shifted": shifted})
    tables = write_prediction_analysis(oof, folds, index, tmp_path / "analysis", progress=False)
    similarity = tables["similarity"].set_index(["model_a", "model_b"])["mean_dice"]
    assert similarity[("exact", "exact")] == 1 and similarity[("shifted", "shifted")] == 1
    assert similarity[("exact", "shifted")] == similarity[("shifted", "exact")] < 1
    # Both together predict the union of their masks (a tie keeps a pixel): worse than the exact one alone.
    added = tables["added_last"].set_index("model")["gain"]
    assert list(added.index) == ["exact", "shifted"] and added["exact"] > 0 > added["shifted"]
    per_class = tables["per_class"].set_index("model")["mean_dice"]
    assert per_class["exact"] == 1 > per_class["shifted"]
    assert len(list((tmp_path / "analysis" / "worst").glob("*/*.png"))) == 4


def test_a_map_in_another_frame_is_refused_naming_it(tmp_path):
    oof, folds, index = _write_run(tmp_path, {"cropped": lambda truth: (truth * 255)[:, 1:, :]})
    with pytest.raises(DataError, match=r"cropped/oof/fold0/a\.npz.*own frame"):
        write_prediction_analysis(oof, folds, index, tmp_path / "analysis", progress=False)
    assert not (tmp_path / "analysis").exists()


def _write_results(tmp_path, holdout=0.8123, models=("unet", "hrnet")):
    """Small results files of a finished run, with recognisable numbers."""
    files = {name: tmp_path / name for name in FILES}
    pd.DataFrame(
        {
            "split": ["train"] * 4 + ["test"],
            "person_id": ["ID001", "ID001", "ID002", "ID002", "ID003"],
            "image_name": ["a.png", "b.png", "c.png", "d.png", "t.png"],
            "image_path": "x",
            "label_path": "y",
            "height": 8,
            "width": 8,
        }
    ).to_csv(files["index"], index=False)
    pd.DataFrame(
        {
            "image_name": ["a.png", "b.png", "c.png", "d.png"],
            "person_id": ["ID001", "ID001", "ID002", "ID002"],
            "fold": [0, 0, 1, 1],
            "excluded": [False, True, False, False],
            "exclusion_reason": ["", "label_swap,area_outlier", "", ""],
        }
    ).to_csv(files["folds"], index=False)
    pd.DataFrame(
        {"image_name": ["b.png", "b.png", "d.png"], "reason": ["label_swap", "area_outlier", "truncated"]}
    ).assign(score=1, detail="").to_csv(files["outliers"], index=False)
    pd.DataFrame(
        {
            "image_name": ["a.png", "b.png", "c.png", "d.png", "t.png"],
            "split": ["train"] * 4 + ["test"],
            "height": 8,
            "width": 8,
            "side": ["right", "right", "left", "left", "left"],
            "side_confidence": [1.0, 1.0, 1.0, 1.0, 0.71],
            "side_method": ["labels"] * 4 + ["pixels"],
            "side_from_pixels": ["right", "right", "left", "right", "left"],
            "side_from_labels": ["right", "right", "left", "left", ""],
            "sides_agree": [True, True, True, False, ""],
            "flip": [False, False, True, False, True],
            "top": [0, 1, 0, 0, 2],
            "bottom": [8, 7, 8, 8, 6],
            "left": [0, 1, 0, 0, 2],
            "right": [8, 7, 8, 8, 6],
            "labels_inside_crop": [1.0, 0.95, 1.0, 1.0, ""],
        }
    ).to_csv(files["frames"], index=False)
    files["cv_metrics"].write_text(
        json.dumps({"cv_dice": {model: {"mean_dice": 0.7111, "folds": {"0": 0.7011, "1": 0.7211}} for model in models}})
    )
    files["ensemble_weights"].write_text(
        json.dumps({"mode": "uniform", "models": list(models), "weights": [[0.5, 0.5]] * NUM_CLASSES})
    )

    def scores(rows):
        return pd.DataFrame(
            [{"step": step, "mean_dice": value, **dict.fromkeys(CLASSES, value)} for step, value in rows]
        )

    ensemble_rows = [("model unet", 0.7201), ("model hrnet", 0.7302), (UNIFORM_STEP, 0.7403), ("hard vote", 0.73)]
    scores(ensemble_rows).to_csv(files["ensemble_table"], index=False)
    post_rows = [
        ("ensemble, threshold 0.5", 0.7403),
        ("ensemble + thresholds", 0.7504),
        ("ensemble + small components removed", 0.7504),
        ("ensemble + largest component", 0.7605),
    ]
    scores(ensemble_rows + post_rows).to_csv(files["postprocess_table"], index=False)
    files["postprocess_params"].write_text(
        json.dumps(
            {
                "thresholds": [0.35] + [0.5] * 28,
                "min_area": [0] * NUM_CLASSES,
                "largest": [True] * 3 + [False] * 26,
                "sigma": [2.0, 2.0, 1.0] + [0.0] * 26,
                "steps_kept": {"smoothing": True, "thresholds": True, "remove_small": False, "largest_component": True},
                "fitted_on_images": 3,
            }
        )
    )
    files["holdout"].write_text(
        json.dumps(
            {"mean_dice": holdout, "images": 1}
            if holdout
            else {"mean_dice": None, "images": 0, "note": "no test labels"}
        )
    )
    per_class = scores([(model, 0.72) for model in models] + [(UNIFORM_STEP, 0.74)]).rename(columns={"step": "model"})
    per_class.loc[per_class["model"] == UNIFORM_STEP, "Pisiform"] = 0.1234
    per_class.to_csv(files["analysis_per_class"], index=False)
    gains = [0.04, 0.01][: len(models)]
    pd.DataFrame(
        {"model": list(models), "dice_all": 0.74, "dice_without": [0.74 - gain for gain in gains], "gain": gains}
    ).to_csv(files["added_last"], index=False)
    files["test_predictions"] = [tmp_path / "predictions" / model / "test" for model in models]
    for folder in files["test_predictions"]:
        folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "image_name": ["t.png"],
            "side_from_frame": ["left"],
            "confidence_as_framed": [0.61],
            "confidence_mirrored": [0.83],
            "side": ["right"],
            "changed": [True],
        }
    ).to_csv(files["test_predictions"][0] / "side_checks.csv", index=False)
    return files


def _html(rst: str) -> str:
    # Warnings (a broken table, unknown markup) would raise here.
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2})["html_body"]


def test_summary_shows_the_numbers_of_the_run_files(tmp_path):
    text = run_summary(_write_results(tmp_path))
    html = _html(text)
    assert "4 training images of 2 people and 1 test image." in text
    assert "1 training image is excluded" in text and "label swap (1)" in text
    assert "3 findings on 2 images" in text
    assert (
        "2 images of 5 mirrored" in text
        and "85% of the image's side on average (``preprocess.crop``; smallest 50%)" in text
    )
    assert "agrees with the side from the labels on 3 of 4 training images (not on d.png)" in text
    assert "1 crop cut labelled pixels (the least kept: 95.0%)" in text
    assert "Sides: 4 from the labels, 1 from the pixels" in text
    assert "unsure (below 0.90) or decided by the pair rule: t.png (left, pixels, 0.71)" in text
    assert "The models checked the unsure sides of 1 test image in both orientations" in text
    assert "turned 1 decision: t.png (right, unet)" in text
    for number in ("0.7111", "0.7011", "0.7211", "0.7302", "0.7605", "+0.0101", "0.8123", "0.1234", "+0.0400"):
        assert number in html, number
    assert "ensemble + small components removed (not kept)" in html
    assert "thresholds 0.35 to 0.50" in text and "largest piece in 3 classes" in text
    assert "smooths the maps of 3 classes (Gaussian sigma 1 to 2 px)" in text
    assert "best model alone (hrnet)" in html


def test_summary_without_a_held_out_score_or_a_second_model(tmp_path):
    files = _write_results(tmp_path, holdout=None, models=("unet",))
    pd.DataFrame({"model": ["unet"], "dice_all": 0.74, "dice_without": [np.nan], "gain": [np.nan]}).to_csv(
        files["added_last"], index=False
    )
    text = run_summary(files)
    _html(text)
    assert "**Held-out score.** None: no test labels." in text
    assert "With one model there is no ensemble member to weigh" in text


def test_summary_names_a_missing_file(tmp_path):
    files = _write_results(tmp_path)
    files["holdout"].unlink()
    with pytest.raises(MissingInput, match="holdout.*does not exist"):
        run_summary(files)


def test_names_are_escaped_for_restructuredtext(tmp_path):
    files = _write_results(tmp_path, models=("unet_", "*star*"))
    html = _html(run_summary(files))
    assert "unet_" in html and "*star*" in html
