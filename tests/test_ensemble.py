"""Voting modes, post-processing steps and their fitting on out-of-fold maps."""

import json

import numpy as np
import pandas as pd
import pytest

from handbone import probmaps, rle
from handbone.ensemble import combine, ensemble_maps
from handbone.fitting import fit_ensemble, fit_postprocess, oof_maps, oof_summary, score_table
from handbone.masks import pack_mask
from handbone.overlays import masks_of
from handbone.postprocess import PostprocessParams, class_mask, smoothed

SHAPE = (29, 12, 16)


def _crops(full: np.ndarray):
    """A uint8 map as load_crops returns it (whole-image boxes)."""
    return full.shape, [(0, full.shape[1], 0, full.shape[2])] * len(full), list(full)


def _full(result) -> np.ndarray:
    shape, boxes, crops = result
    out = np.zeros(shape, np.uint8)
    for number, ((top, bottom, left, right), crop) in enumerate(zip(boxes, crops)):
        out[number, top:bottom, left:right] = crop
    return out


def test_soft_votes_uniform_weighted_and_classwise():
    first, second = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    first[0, 2, 3], second[0, 2, 3] = 200, 100
    first[1, 5, 5], second[1, 5, 5] = 0, 250
    maps = [_crops(first), _crops(second)]
    uniform = _full(combine(maps))
    assert uniform[0, 2, 3] == 150 and uniform[1, 5, 5] == 125
    weighted = _full(combine(maps, np.tile([0.75, 0.25], (29, 1))))
    assert weighted[0, 2, 3] == 175 and weighted[1, 5, 5] == 63  # 62.5 rounds up
    per_class = np.tile([0.5, 0.5], (29, 1))
    per_class[0], per_class[1] = [1.0, 0.0], [0.0, 1.0]
    classwise = _full(combine(maps, per_class))
    assert classwise[0, 2, 3] == 200 and classwise[1, 5, 5] == 250


def test_hard_vote_keeps_strict_majorities():
    maps = [np.zeros(SHAPE, np.uint8) for _ in range(3)]
    maps[0][0, 1, 1] = maps[1][0, 1, 1] = 200  # 2 of 3 models: kept
    maps[2][0, 4, 4] = 255  # 1 of 3: dropped
    voted = _full(combine([_crops(m) for m in maps], hard=True)) > 127.5
    assert voted[0, 1, 1] and not voted[0, 4, 4] and voted.sum() == 1
    two = _full(combine([_crops(maps[0]), _crops(maps[2])], hard=True)) > 127.5
    assert not two.any()  # 1 of 2 is a tie, not a majority


def test_ensemble_of_sparse_maps_matches_the_dense_mean(tmp_path):
    rng = np.random.default_rng(0)
    dense = []
    for model in ("a", "b"):
        probabilities = np.zeros(SHAPE, np.float32)
        top, left = rng.integers(0, 6, 2)
        probabilities[3, top : top + 5, left : left + 9] = rng.random((5, 9))
        probmaps.save(tmp_path / model / "test" / "x.npz", probabilities, "x.png")
        dense.append(probmaps.load_quantized(tmp_path / model / "test" / "x.npz").astype(np.float32))
    out = ensemble_maps([tmp_path / "a" / "test", tmp_path / "b" / "test"], tmp_path / "ens", progress=False)
    expected = np.floor((dense[0] + dense[1]) / 2 + 0.5)
    expected[expected < probmaps.FLOOR] = 0
    assert np.array_equal(probmaps.load_quantized(out / "x.npz"), expected.astype(np.uint8))


def test_small_components_are_removed_and_the_largest_piece_kept():
    crop = np.zeros((20, 20), np.uint8)
    crop[2:10, 2:10] = 220  # the bone: 64 pixels
    crop[15:17, 15:17] = 220  # a speck: 4 pixels
    crop[12:15, 2:6] = 220  # a second piece: 12 pixels
    plain = PostprocessParams.plain()
    assert class_mask(crop, 0, plain).sum() == 80
    small = PostprocessParams.plain()
    small.min_area[0] = 5
    assert class_mask(crop, 0, small).sum() == 76 and not class_mask(crop, 0, small)[15, 15]
    largest = PostprocessParams.plain()
    largest.largest[0] = True
    mask = class_mask(crop, 0, largest)
    assert mask.sum() == 64 and mask[2:10, 2:10].all()
    higher = PostprocessParams.plain()
    higher.thresholds[0] = 0.9  # 220 / 255 = 0.86
    assert not class_mask(crop, 0, higher).any()


def _oof_setup(tmp_path, models: dict, truth: np.ndarray, names=("a.png", "b.png")):
    """Out-of-fold maps (one fold per image) and a cache holding the labels."""
    cache = tmp_path / "cache"
    cache.mkdir()
    rows = []
    for fold, name in enumerate(names):
        stem = name[:-4]
        np.save(cache / f"{stem}.mask.npy", pack_mask(truth))
        np.save(cache / f"{stem}.image.npy", np.zeros(truth.shape[1:], np.uint8))
        rows.append({"image_name": name, "person_id": str(fold), "fold": fold, "excluded": False})
        for model, probabilities in models.items():
            probmaps.save(tmp_path / model / "oof" / f"fold{fold}" / f"{stem}.npz", probabilities, name)
    pd.DataFrame(rows).to_csv(tmp_path / "folds.csv", index=False)
    height, width = truth.shape[1:]
    stems = [name[:-4] for name in names]
    pd.DataFrame({"stem": stems, "height": height, "width": width}).to_csv(cache / "cache.csv", index=False)
    images = oof_maps(tmp_path / "folds.csv", {model: tmp_path / model / "oof" for model in models})
    return images, cache


def test_fitted_weights_follow_the_out_of_fold_dice(tmp_path):
    truth = np.zeros(SHAPE, np.uint8)
    truth[0, 2:6, 2:6] = 1
    truth[1, 7:11, 8:14] = 1
    good_at_0, good_at_1 = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    good_at_0[0] = truth[0] * 0.9  # right on class 0 ...
    good_at_0[1, 0:3, 0:3] = 0.9  # ... wrong place for class 1
    good_at_1[1] = truth[1] * 0.9
    good_at_1[0, 9:12, 0:3] = 0.9
    images, cache = _oof_setup(tmp_path, {"m0": good_at_0, "m1": good_at_1}, truth)
    chosen, table = fit_ensemble(images, ["m0", "m1"], cache, "classwise", 0.1, progress=False)
    weights = np.array(chosen["weights"])
    assert weights[0].tolist() == [1.0, 0.0] and weights[1].tolist() == [0.0, 1.0]
    scores = table.set_index("step")
    assert scores.loc["class-wise ensemble", "finger-1"] == pytest.approx(1.0)
    assert scores.loc["class-wise ensemble", "finger-2"] == pytest.approx(1.0)
    assert scores.loc["model m0", "finger-2"] < 0.01
    assert scores.loc["class-wise ensemble", "mean_dice"] >= scores.loc["uniform ensemble", "mean_dice"]
    weighted, _ = fit_ensemble(images, ["m0", "m1"], cache, "weighted", 0.1, progress=False)
    assert len({tuple(row) for row in weighted["weights"]}) == 1  # one weight per model, for every class


def test_postprocessing_is_fitted_on_oof_and_steps_that_buy_nothing_are_dropped(tmp_path):
    truth = np.zeros(SHAPE, np.uint8)
    truth[0, 2:8, 2:8] = 1
    prediction = np.zeros(SHAPE, np.float32)
    prediction[0, 2:8, 2:8] = 0.8
    prediction[0, 10, 14] = 0.8  # a stray pixel: hurts class 0's Dice
    images, cache = _oof_setup(tmp_path, {"m": prediction}, truth)
    ensemble = {"mode": "uniform", "models": ["m"], "weights": [[1.0]] * 29}
    options = {
        "threshold": 0.5,
        "smooth": False,
        "fit_thresholds": True,
        "threshold_grid": [0.3, 0.5, 0.7],
        "remove_small": True,
        "min_area_grid": [2, 4, 64],
        "largest_component": True,
        "max_class_drop": 0.001,
    }
    params, table, kept = fit_postprocess(images, ["m"], cache, ensemble, options, progress=False)
    # Every threshold gives the same masks here: the step buys nothing and is dropped.
    assert kept["thresholds"] is False and params.thresholds == [0.5] * 29
    # Removing components below 2 pixels fixes class 0; the smallest area that does is chosen.
    assert kept["remove_small"] is True and params.min_area[0] == 2 and params.min_area[1] == 0
    # With the speck gone, keeping the largest component changes nothing: dropped.
    assert kept["largest_component"] is False and not any(params.largest)
    rows = table.set_index("step")["finger-1"]
    assert rows["ensemble + small components removed"] == pytest.approx(1.0)
    assert rows["ensemble, threshold 0.5"] == pytest.approx(2 * 36 / 73, abs=1e-4)
    json.dumps(params.to_dict())  # frozen as JSON


def test_smoothing_is_fitted_per_class_and_kept_where_it_buys_dice(tmp_path):
    # Class 0: a square whose map has holes and specks (pixel noise) that a
    # Gaussian fills and spreads below the threshold. Class 1: a line one
    # pixel wide that any smoothing erases, so it keeps its map as it is.
    truth = np.zeros(SHAPE, np.uint8)
    truth[0, 2:10, 2:10] = 1
    truth[1, 6, 2:14] = 1
    prediction = np.zeros(SHAPE, np.float32)
    prediction[0] = truth[0] * 0.9
    prediction[0, 3, 4] = prediction[0, 6, 7] = prediction[0, 8, 3] = 0.1  # holes
    prediction[0, 1, 13] = prediction[0, 10, 12] = 0.9  # specks
    prediction[1] = truth[1] * 0.9
    images, cache = _oof_setup(tmp_path, {"m": prediction}, truth)
    ensemble = {"mode": "uniform", "models": ["m"], "weights": [[1.0]] * 29}
    options = {"smooth": True, "sigma_grid": [1, 4], "fit_thresholds": False, "remove_small": False}
    options["largest_component"] = False
    params, table, kept = fit_postprocess(images, ["m"], cache, ensemble, options, progress=False)
    assert kept["smoothing"] is True and params.sigma[0] == 1.0 and params.sigma[1] == 0.0
    rows = table.set_index("step")
    assert rows.loc["ensemble, threshold 0.5", "finger-1"] == pytest.approx(2 * 61 / (63 + 64), abs=1e-4)
    assert rows.loc["ensemble + smoothing", "finger-1"] > rows.loc["ensemble, threshold 0.5", "finger-1"]
    assert rows.loc["ensemble + smoothing", "finger-2"] == pytest.approx(1.0)
    # The frozen parameters reproduce the fitted score when the submission applies them.
    masks = masks_of(probmaps.load_quantized(images[0][1]["m"]), params)
    overlap = (masks[0] & truth[0].astype(bool)).sum()
    assert 2 * overlap / (masks[0].sum() + truth[0].sum()) == pytest.approx(
        rows.loc["ensemble + smoothing", "finger-1"], abs=1e-4
    )
    # Smoothing that buys nothing is dropped: a clean map.
    clean = {"m": truth.astype(np.float32) * 0.9}
    (tmp_path / "clean").mkdir()
    images, cache = _oof_setup(tmp_path / "clean", clean, truth)
    params, _, kept = fit_postprocess(images, ["m"], cache, ensemble, options, progress=False)
    assert kept["smoothing"] is False and params.sigma == [0.0] * 29


def test_smoothed_crops_give_the_masks_of_the_smoothed_image(tmp_path):
    from handbone.submission import image_rles

    rng = np.random.default_rng(0)
    probabilities = np.zeros((29, 40, 50), np.float32)
    probabilities[0, 5:20, 8:30] = rng.uniform(0.3, 1.0, (15, 22))  # inside the image
    probabilities[1, 30:40, 0:12] = rng.uniform(0.3, 1.0, (10, 12))  # against two borders
    probmaps.save(tmp_path / "img.npz", probabilities, "img.png")
    params = PostprocessParams.plain(0.5)
    params.sigma[0], params.sigma[1] = 2.0, 3.0
    # The stored crops, each grown by 3 sigma and smoothed, against the whole map smoothed.
    whole = masks_of(probmaps.load_quantized(tmp_path / "img.npz"), params)
    rles = image_rles(tmp_path / "img.npz", params)
    for number in (0, 1):
        assert rles[number] == rle.encode(whole[number])
    assert whole[0].sum() > 0 and (whole[0] != masks_of(probmaps.load_quantized(tmp_path / "img.npz"))[0]).any()
    (top, bottom, left, right), crop = smoothed((5, 20, 8, 30), np.full((15, 22), 200, np.uint8), 2.0, (40, 50))
    assert (top, bottom, left, right) == (0, 26, 2, 36) and crop.shape == (26, 34)
    assert smoothed((5, 20, 8, 30), np.full((15, 22), 200, np.uint8), 0.0, (40, 50))[0] == (5, 20, 8, 30)


def test_a_missing_oof_map_is_an_error(tmp_path):
    truth = np.zeros(SHAPE, np.uint8)
    _oof_setup(tmp_path, {"m": np.zeros(SHAPE, np.float32)}, truth)
    (tmp_path / "m" / "oof" / "fold1" / "b.npz").unlink()
    with pytest.raises(FileNotFoundError, match="m: b.png"):
        oof_maps(tmp_path / "folds.csv", {"m": tmp_path / "m" / "oof"})


def test_oof_summary_names_each_model_the_fitted_ensemble_and_the_final_masks():
    rows = {
        "model a": np.full(29, 0.5),
        "model b": np.full(29, 0.6),
        "uniform ensemble": np.full(29, 0.65),
        "ensemble, threshold 0.5": np.full(29, 0.7),
        "ensemble + thresholds": np.full(29, 0.75),
        "ensemble + largest component": np.full(29, 0.8),
    }
    summary = oof_summary(score_table(rows))
    assert summary == {
        "oof_dice": {
            "ensemble": pytest.approx(0.7),
            "final": pytest.approx(0.8),
            "models": {"a": 0.5, "b": pytest.approx(0.6)},
        }
    }
    # A pseudo round's table without fit-ensemble's rows has no per-model entry.
    assert oof_summary(score_table({"ensemble, threshold 0.5": np.full(29, 0.7)})) == {
        "oof_dice": {"ensemble": pytest.approx(0.7), "final": pytest.approx(0.7)}
    }


def test_fit_ensemble_takes_the_ensemble_section_as_json_options_and_names_a_bad_one(tmp_path, caplog):
    from handbone import cli

    argv = ["--quiet", "fit-ensemble", "--oof", str(tmp_path / "m0" / "oof"), "--folds", str(tmp_path / "folds.csv")]
    argv += ["--cache", str(tmp_path), "--out", str(tmp_path / "w.json"), "--table", str(tmp_path / "t.csv")]
    assert cli.main([*argv, "--options", '{"mode": "median"}']) == 1
    assert "fit-ensemble --options" in caplog.text and "median" in caplog.text
    assert not (tmp_path / "w.json").exists()
