"""Fitting the ensemble and the post-processing on out-of-fold maps.

Every choice here sees only the training images' out-of-fold maps (each
image predicted by the fold model that did not train on it) and their
labels from the preprocessing cache, never a test map. Images excluded by
the outlier rules (wrong labels) are left out of the fit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config, probmaps
from .arguments import oof_source, progress, section_argument
from .atomic import write_json, write_table
from .cache import original_labels
from .classes import CLASSES, NUM_CLASSES
from .data import read_folds, usable_images
from .ensemble import combine, uniform_weights, union_box
from .errors import ConfigError, DataError, MissingInput
from .metrics import SMOOTH
from .postprocess import PostprocessParams, component_areas, kept_components, smoothed, threshold_cut

log = logging.getLogger("handbone")

# Row labels of the OOF score tables (the "step" column) that other code picks by name.
MODEL_STEP = "model {}"
UNIFORM_STEP = "uniform ensemble"
PLAIN_STEP = "plain"
# fit_postprocess's label of its first row: the fitted ensemble at the base threshold.
PLAIN_LABEL = "ensemble, threshold {}"


def _dice(true_positives, predicted, actual):
    return (2 * true_positives + SMOOTH) / (predicted + actual + SMOOTH)


def oof_maps(folds_path: str | Path, model_dirs: dict[str, Path]) -> list[tuple[str, dict[str, Path]]]:
    """(image stem, {model: map file}) of every usable training image; each
    model's folder holds fold*/ subfolders of out-of-fold maps."""
    usable = usable_images(read_folds(folds_path))
    found = {
        model: {path.name: path for path in Path(folder).glob("fold*/*.npz")} for model, folder in model_dirs.items()
    }
    images, missing = [], []
    for name in usable["image_name"]:
        filename = probmaps.map_filename(name)
        paths = {model: maps.get(filename) for model, maps in found.items()}
        missing += [f"{model}: {name}" for model, path in paths.items() if path is None]
        images.append((Path(name).stem, paths))
    if missing:
        raise MissingInput(f"no out-of-fold map for {len(missing)} training image(s), e.g. {missing[:3]}")
    if not images:
        raise DataError(f"{folds_path} lists no usable training image")
    return images


def _gt_boxes(ground_truth: np.ndarray) -> list[tuple[int, int, int, int]]:
    return [probmaps.bounding_box(channel, 1) for channel in ground_truth]


def _placed(box, crop, region) -> np.ndarray:
    """``crop`` (at ``box``) inside the larger ``region``, zeros elsewhere."""
    top, bottom, left, right = region
    out = np.zeros((bottom - top, right - left), dtype=crop.dtype)
    if crop.size:
        y0, y1, x0, x1 = (int(value) for value in box)
        out[y0 - top : y1 - top, x0 - left : x1 - left] = crop
    return out


def weight_candidates(models: int, step: float) -> np.ndarray:
    """Soft-vote weight vectors to try: each model alone, the uniform mean
    and every point of the simplex grid with spacing ``step``."""
    parts = max(1, round(1 / step))
    grid = [combo for combo in itertools.product(range(parts + 1), repeat=models) if sum(combo) == parts]
    if len(grid) > 2000:
        raise ConfigError(
            f"{len(grid)} weight combinations for {models} models at step {step}: use a larger ensemble.weight_step"
        )
    vectors = [np.eye(models)[model] for model in range(models)] + [np.full(models, 1 / models)]
    vectors += [np.array(combo, dtype=np.float64) / parts for combo in grid]
    return np.array(vectors)


def fit_ensemble(
    images, models: list[str], cache_dir: str | Path, mode: str, step: float = 0.1, progress: bool = True
) -> tuple[dict, pd.DataFrame]:
    """Score every candidate weighting (and the hard vote) on the OOF maps.

    Returns the chosen ensemble ({mode, models, weights (29 x models)}) and a
    table of OOF Dice per class: each model alone, the uniform mean, the
    best single weight vector ('weighted'), the best vector per class
    ('classwise') and the hard vote.
    """
    candidates = weight_candidates(len(models), step)
    uniform = len(models)  # the candidates' order: each model alone, then the uniform mean
    sums = np.zeros((len(candidates), NUM_CLASSES))
    hard_sums = np.zeros(NUM_CLASSES)
    for stem, paths in tqdm(images, desc="fit ensemble", disable=not progress):
        maps = [probmaps.load_crops(paths[model]) for model in models]
        ground_truth = original_labels(cache_dir, stem)
        for number, gt_box in enumerate(_gt_boxes(ground_truth)):
            region = top, bottom, left, right = union_box([gt_box] + [boxes[number] for _, boxes, _ in maps])
            gt = ground_truth[number, top:bottom, left:right].astype(bool)
            actual = gt.sum()
            stack = np.stack([_placed(boxes[number], crops[number], region) for _, boxes, crops in maps]).astype(
                np.float32
            )
            flat, gt_flat = stack.reshape(len(models), -1), gt.reshape(-1)
            for first in range(0, len(candidates), 16):
                # Same rounding as combine(): stored = floor(sum + 0.5) > 127.5.
                predicted = (candidates[first : first + 16].astype(np.float32) @ flat) >= 127.5
                sums[first : first + 16, number] += _dice(
                    predicted[:, gt_flat].sum(axis=1), predicted.sum(axis=1), actual
                )
            votes = (stack > 127.5).sum(axis=0)
            hard = 255 * votes // len(models) > 127.5
            hard_sums[number] += _dice((hard & gt).sum(), hard.sum(), actual)
    scores, hard_scores = sums / len(images), hard_sums / len(images)
    # Ties go to the uniform mean: weights move only where they buy Dice.
    weighted = int(_best_per_class(scores.mean(axis=1, keepdims=True), uniform)[0])
    classwise = _best_per_class(scores, uniform)
    rows = {MODEL_STEP.format(model): scores[number] for number, model in enumerate(models)}
    rows[UNIFORM_STEP] = scores[uniform]
    rows["weighted ensemble"] = scores[weighted]
    rows["class-wise ensemble"] = scores[classwise, np.arange(NUM_CLASSES)]
    rows["hard vote"] = hard_scores
    weights = {
        "uniform": uniform_weights(len(models)),
        "weighted": np.tile(candidates[weighted], (NUM_CLASSES, 1)),
        "classwise": candidates[classwise],
        "hard": uniform_weights(len(models)),
    }[mode]
    chosen = {"mode": mode, "models": list(models), "weights": np.round(weights, 6).tolist()}
    return chosen, score_table(rows)


def score_table(rows: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per label: the mean over classes, then Dice per class."""
    table = pd.DataFrame(
        [
            {"step": label, "mean_dice": float(np.mean(values)), **dict(zip(CLASSES, values))}
            for label, values in rows.items()
        ]
    )
    return table


def _ensemble_oof(images, models, ensemble: dict):
    weights = np.asarray(ensemble["weights"], dtype=np.float64)
    order = [ensemble["models"].index(model) for model in models]
    for stem, paths in images:
        maps = [probmaps.load_crops(paths[model]) for model in models]
        yield stem, combine(maps, weights[:, order], ensemble["mode"] == "hard")


def _accept(previous: np.ndarray, candidate: np.ndarray, max_class_drop: float) -> bool:
    """A step is kept only if the mean OOF Dice improves and no class loses
    more than ``max_class_drop``."""
    return bool(candidate.mean() > previous.mean() + 1e-9 and (candidate - previous).min() >= -max_class_drop)


def _best_per_class(scores: np.ndarray, default: int) -> np.ndarray:
    """Per class, the option with the highest Dice; the default option wins
    ties, so a choice moves only when it buys something."""
    best = np.argmax(scores, axis=0)
    tie = scores[default] >= scores[best, np.arange(scores.shape[1])] - 1e-12
    best[tie] = default
    return best


def fit_postprocess(
    images, models: list[str], cache_dir: str | Path, ensemble: dict, options: dict, progress: bool = True
) -> tuple[PostprocessParams, pd.DataFrame, dict]:
    """Fit Gaussian smoothing, then thresholds, then small-component
    removal, then largest-component, each kept only if it passes
    ``_accept`` on the OOF maps of the ensemble. ``options``: the config's
    postprocess section (missing keys take config.yaml's values).

    Returns the frozen parameters, the table of OOF Dice after each step and
    which steps were kept.
    """
    options = config.section("postprocess", options, "postprocess options")
    sigma, thresholds, steps, kept = _fit_smoothing_and_thresholds(
        images, models, cache_dir, ensemble, options, progress
    )
    components = _oof_components(images, models, cache_dir, ensemble, sigma, thresholds, progress)
    min_area, largest = _fit_components(components, options, steps, kept)
    params = PostprocessParams(thresholds, min_area, largest, sigma)
    base = float(options["threshold"])
    table = score_table(
        {
            f"ensemble + {name}" if name != PLAIN_STEP else PLAIN_LABEL.format(base): values
            for name, values in steps.items()
        }
    )
    return params, table, kept


def _fit_smoothing_and_thresholds(images, models, cache_dir, ensemble: dict, options: dict, progress: bool):
    """Pass 1: Dice of every image and class at every smoothing sigma and
    every threshold, from histograms of the quantised probabilities inside
    and outside the label. The sigma per class is chosen at the base
    threshold, then the threshold per class on the maps smoothed so.
    Returns the sigmas and thresholds per class and the steps' scores and
    choices."""
    base = float(options["threshold"])
    grid = (
        sorted(set([base] + [float(value) for value in options["threshold_grid"]]))
        if options["fit_thresholds"]
        else [base]
    )
    sigmas = [0.0] + (
        sorted({float(value) for value in options["sigma_grid"] if value > 0}) if options["smooth"] else []
    )
    default_threshold = grid.index(base)
    cuts = np.array([threshold_cut(value) for value in grid])
    first = np.minimum(np.floor(cuts).astype(int) + 1, 256)  # q > cut  <=>  q >= floor(cut) + 1
    scores = np.zeros((len(sigmas), len(grid), NUM_CLASSES))
    for stem, (shape, boxes, crops) in tqdm(
        _ensemble_oof(images, models, ensemble),
        total=len(images),
        desc="fit smoothing, thresholds",
        disable=not progress,
    ):
        ground_truth = original_labels(cache_dir, stem)
        for number, gt_box in enumerate(_gt_boxes(ground_truth)):
            actual = ground_truth[number].sum()
            for row, sigma in enumerate(sigmas):
                box, crop = smoothed(boxes[number], crops[number], sigma, shape[1:])
                region = top, bottom, left, right = union_box([gt_box, box])
                gt = ground_truth[number, top:bottom, left:right].astype(bool)
                values = _placed(box, crop, region)
                everything = np.bincount(values.reshape(-1), minlength=256)
                inside = np.bincount(values[gt], minlength=256)
                above_all = np.concatenate([np.cumsum(everything[::-1])[::-1], [0]])  # count of q >= k
                above_gt = np.concatenate([np.cumsum(inside[::-1])[::-1], [0]])
                scores[row, :, number] += _dice(above_gt[first], above_all[first], actual)
    scores /= len(images)
    classes, max_drop = np.arange(NUM_CLASSES), options["max_class_drop"]
    steps = {PLAIN_STEP: scores[0, default_threshold]}
    chosen_sigma = _best_per_class(scores[:, default_threshold], 0)
    with_smoothing = scores[chosen_sigma, default_threshold, classes]
    kept = {"smoothing": bool(options["smooth"]) and _accept(steps[PLAIN_STEP], with_smoothing, max_drop)}
    if not kept["smoothing"]:
        chosen_sigma[:] = 0
    steps["smoothing"] = scores[chosen_sigma, default_threshold, classes]
    per_threshold = scores[chosen_sigma, :, classes].T  # (thresholds, classes) at each class's sigma
    chosen = _best_per_class(per_threshold, default_threshold)
    fitted = per_threshold[chosen, classes]
    kept["thresholds"] = bool(options["fit_thresholds"]) and _accept(steps["smoothing"], fitted, max_drop)
    thresholds = [grid[index] for index in chosen] if kept["thresholds"] else [base] * NUM_CLASSES
    steps["thresholds"] = fitted if kept["thresholds"] else steps["smoothing"]
    return [sigmas[index] for index in chosen_sigma], thresholds, steps, kept


def _oof_components(images, models, cache_dir, ensemble: dict, sigma: list, thresholds: list, progress: bool) -> list:
    """Pass 2: connected components of the maps smoothed by ``sigma`` at the
    chosen thresholds; per image and class, each component's area and
    overlap with the label (and the label's size) decide every min-area /
    largest choice."""
    components = []
    for stem, (shape, boxes, crops) in tqdm(
        _ensemble_oof(images, models, ensemble), total=len(images), desc="fit components", disable=not progress
    ):
        ground_truth = original_labels(cache_dir, stem)
        image_components = []
        for number in range(NUM_CLASSES):
            actual = int(ground_truth[number].sum())
            (top, bottom, left, right), crop = smoothed(boxes[number], crops[number], sigma[number], shape[1:])
            if crop.size == 0:
                image_components.append((np.zeros(1, np.int64), np.zeros(1, np.int64), actual))
                continue
            labels, areas = component_areas(crop > threshold_cut(thresholds[number]))
            gt = ground_truth[number, top:bottom, left:right].astype(bool)
            hits = np.bincount(labels[gt], minlength=len(areas))
            image_components.append((areas, hits, actual))
        components.append(image_components)
    return components


def _component_scores(components: list, min_areas, largest) -> np.ndarray:
    total = np.zeros(NUM_CLASSES)
    for image_components in components:
        for number, (areas, hits, actual) in enumerate(image_components):
            keep = kept_components(areas, min_areas[number], largest[number])
            total[number] += _dice(hits[keep].sum(), areas[keep].sum(), actual)
    return total / len(components)


def _fit_components(components: list, options: dict, steps: dict, kept: dict) -> tuple[list, list]:
    """The minimum area per class, then largest-component per class, each
    kept if ``_accept`` says so; adds their scores to ``steps`` and
    ``kept``."""
    max_drop = options["max_class_drop"]
    areas_grid = [0] + sorted(int(value) for value in options["min_area_grid"] if int(value) > 0)
    if not options["remove_small"]:
        areas_grid = [0]
    no_largest = [False] * NUM_CLASSES
    per_area = np.array([_component_scores(components, [area] * NUM_CLASSES, no_largest) for area in areas_grid])
    chosen_area = _best_per_class(per_area, 0)
    with_areas = per_area[chosen_area, np.arange(NUM_CLASSES)]
    kept["remove_small"] = _accept(steps["thresholds"], with_areas, max_drop)
    min_area = [areas_grid[index] for index in chosen_area] if kept["remove_small"] else [0] * NUM_CLASSES
    steps["small components removed"] = with_areas if kept["remove_small"] else steps["thresholds"]

    largest = [False] * NUM_CLASSES
    kept["largest_component"] = False
    if options["largest_component"]:
        with_largest = _component_scores(components, min_area, [True] * NUM_CLASSES)
        largest = [bool(value) for value in with_largest > steps["small components removed"] + 1e-12]
        candidate = _component_scores(components, min_area, largest)
        kept["largest_component"] = _accept(steps["small components removed"], candidate, max_drop)
        if not kept["largest_component"]:
            largest = [False] * NUM_CLASSES
    steps["largest component"] = _component_scores(components, min_area, largest)
    return min_area, largest


def oof_inputs(oof_dirs: list, folds_path: str | Path) -> tuple[list[str], list]:
    """The models (named by their folders, ``.../{model}/oof``) and the
    usable training images with each model's out-of-fold map."""
    model_dirs = {Path(folder).parent.name: Path(folder) for folder in oof_dirs}
    return list(model_dirs), oof_maps(folds_path, model_dirs)


def write_ensemble_fit(oof_dirs, folds_path, cache_dir, options: dict, out, table_out, progress=True):
    """``handbone fit-ensemble``: the chosen weights (JSON) and the table of
    OOF Dice per model and ensemble (CSV). ``options``: the ensemble section
    (what it leaves out: config.yaml's)."""
    options = config.section("ensemble", options, "fit-ensemble --options")
    models, images = oof_inputs(oof_dirs, folds_path)
    chosen, table = fit_ensemble(images, models, cache_dir, options["mode"], options["weight_step"], progress)
    write_json(chosen, out)
    write_table(table, table_out)
    for _, row in table.iterrows():
        log.info("OOF Dice %-22s %.4f", row["step"], row["mean_dice"])
    return chosen, table


def oof_summary(table: pd.DataFrame) -> dict:
    """The mean OOF Dice of each model alone (when fit-ensemble's rows are in
    ``table``), of the fitted ensemble before post-processing and of the
    final masks: the numbers `dvc exp show` compares experiments by."""
    scores = table.set_index("step")["mean_dice"].astype(float)
    prefix = MODEL_STEP.format("")
    models = {step.removeprefix(prefix): float(score) for step, score in scores.items() if step.startswith(prefix)}
    plain = [step for step in scores.index if step.startswith(PLAIN_LABEL.format(""))]
    if not plain:
        raise DataError(f"no '{PLAIN_LABEL.format('<threshold>')}' row among the OOF steps {list(scores.index)}")
    summary = {"ensemble": float(scores[plain[0]]), "final": float(scores.iloc[-1])}
    return {"oof_dice": {**summary, **({"models": models} if models else {})}}


def write_postprocess_fit(
    oof_dirs,
    folds_path,
    cache_dir,
    ensemble_path,
    options: dict,
    out,
    table_out,
    ensemble_table=None,
    figure=None,
    progress=True,
    summary_out=None,
):
    """``handbone fit-postprocess``: the frozen post-processing (params.json,
    with the steps kept and the number of images it was fitted on), the
    table of OOF Dice after each step (behind fit-ensemble's rows when
    ``ensemble_table`` is given), optionally a figure of the Dice per
    class of the models and the final ensemble, and ``oof_summary`` as JSON
    (``summary_out``, a DVC metric)."""
    models, images = oof_inputs(oof_dirs, folds_path)
    ensemble = json.loads(Path(ensemble_path).read_text())
    params, table, kept = fit_postprocess(images, models, cache_dir, ensemble, options, progress)
    if ensemble_table:
        table = pd.concat([pd.read_csv(ensemble_table), table], ignore_index=True)
    write_json({**params.to_dict(), "steps_kept": kept, "fitted_on_images": len(images)}, out)
    write_table(table, table_out)
    if summary_out:
        write_json(oof_summary(table), summary_out)
    for _, row in table.iterrows():
        log.info("OOF Dice %-45s %.4f", row["step"], row["mean_dice"])
    if figure:
        from .figures import per_class_dice

        shown = [step for step in table["step"] if step.startswith(MODEL_STEP.format(""))] + [table["step"].iloc[-1]]
        if UNIFORM_STEP in set(table["step"]) and len(shown) > 2:
            shown.insert(-1, UNIFORM_STEP)
        rows = {step: table.set_index("step").loc[step, CLASSES].to_numpy(dtype=float) for step in shown}
        per_class_dice(rows, Path(figure), "Out-of-fold Dice per class: models, ensemble, after post-processing")
    log.info("post-processing steps kept: %s", ", ".join(name for name, value in kept.items() if value) or "none")
    return params, table, kept


# -- the command line: `handbone fit-ensemble, fit-postprocess` (cli.py dispatches) --


def fit_ensemble_command(args) -> None:
    write_ensemble_fit(args.oof, args.folds, args.cache, args.options, args.out, args.table, progress(args))


def fit_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=fit_ensemble_command)
    oof_source(parser)
    section_argument(parser, "ensemble")
    parser.add_argument("--out", required=True, help="weights.json to write")
    parser.add_argument("--table", required=True, help="CSV of OOF Dice per model and ensemble")


def fit_postprocess_command(args) -> None:
    write_postprocess_fit(
        args.oof,
        args.folds,
        args.cache,
        args.ensemble,
        args.options,
        args.out,
        args.table,
        args.ensemble_table,
        args.figure,
        progress(args),
        args.summary,
    )


def fit_postprocess_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=fit_postprocess_command)
    oof_source(parser)
    parser.add_argument("--ensemble", required=True, help="weights.json written by fit-ensemble")
    parser.add_argument("--ensemble-table", help="fit-ensemble's CSV, put in front of this step's rows")
    section_argument(parser, "postprocess")
    parser.add_argument("--out", required=True, help="params.json to write")
    parser.add_argument("--table", required=True, help="CSV of OOF Dice after each step")
    parser.add_argument("--figure", help="PNG of the OOF Dice per class of the models and the final ensemble")
    parser.add_argument(
        "--summary", help="JSON of the mean OOF Dice per model, of the fitted ensemble and after post-processing"
    )
