"""Fitting the ensemble and the post-processing on out-of-fold maps.

Every choice here sees only the training images' out-of-fold maps (each
image predicted by the fold model that did not train on it) and their
labels from the preprocessing cache, never a test map. Images excluded by
the outlier rules (wrong labels) are left out of the fit.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import probmaps
from .classes import CLASSES, NUM_CLASSES
from .data import read_folds, usable_images
from .errors import DataError
from .ensemble import combine, uniform_weights, union_box
from .metrics import SMOOTH
from .postprocess import PostprocessParams, component_areas, kept_components, threshold_cut
from .cache import CacheEntry

log = logging.getLogger("handbone")


def _dice(true_positives, predicted, actual):
    return (2 * true_positives + SMOOTH) / (predicted + actual + SMOOTH)


def oof_maps(folds_path: str | Path, model_dirs: dict[str, Path]) -> list[tuple[str, dict[str, Path]]]:
    """(image stem, {model: map file}) of every usable training image; each
    model's folder holds fold*/ subfolders of out-of-fold maps."""
    usable = usable_images(read_folds(folds_path))
    found = {model: {path.name: path for path in Path(folder).glob("fold*/*.npz")} for model, folder in model_dirs.items()}
    images, missing = [], []
    for name in usable["image_name"]:
        filename = probmaps.map_filename(name)
        paths = {model: maps.get(filename) for model, maps in found.items()}
        missing += [f"{model}: {name}" for model, path in paths.items() if path is None]
        images.append((Path(name).stem, paths))
    if missing:
        raise FileNotFoundError(f"no out-of-fold map for {len(missing)} training image(s), e.g. {missing[:3]}")
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
        raise ValueError(f"{len(grid)} weight combinations for {models} models at step {step}: use a larger ensemble.weight_step")
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
        ground_truth = CacheEntry(cache_dir, stem).mask()
        for number, gt_box in enumerate(_gt_boxes(ground_truth)):
            region = top, bottom, left, right = union_box([gt_box] + [boxes[number] for _, boxes, _ in maps])
            gt = ground_truth[number, top:bottom, left:right].astype(bool)
            actual = gt.sum()
            stack = np.stack([_placed(boxes[number], crops[number], region) for _, boxes, crops in maps]).astype(np.float32)
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
    rows = {f"model {model}": scores[number] for number, model in enumerate(models)}
    rows["uniform ensemble"] = scores[uniform]
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
    table = pd.DataFrame([{"step": label, "mean_dice": float(np.mean(values)), **dict(zip(CLASSES, values))}
                          for label, values in rows.items()])
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
    """Fit thresholds, then small-component removal, then largest-component,
    each kept only if it passes ``_accept`` on the OOF maps of the ensemble.

    Returns the frozen parameters, the table of OOF Dice after each step and
    which steps were kept.
    """
    base = float(options.get("threshold", 0.5))
    max_drop = float(options.get("max_class_drop", 0.001))
    grid = sorted(set([base] + [float(value) for value in options.get("threshold_grid", [])])) if options.get("fit_thresholds", True) else [base]
    default_threshold = grid.index(base)
    cuts = np.array([threshold_cut(value) for value in grid])

    # Pass 1: Dice of every image and class at every threshold, from
    # histograms of the quantised probabilities inside and outside the label.
    per_threshold = np.zeros((len(grid), NUM_CLASSES))
    for stem, (shape, boxes, crops) in tqdm(_ensemble_oof(images, models, ensemble), total=len(images),
                                            desc="fit thresholds", disable=not progress):
        ground_truth = CacheEntry(cache_dir, stem).mask()
        for number, gt_box in enumerate(_gt_boxes(ground_truth)):
            region = top, bottom, left, right = union_box([gt_box, boxes[number]])
            gt = ground_truth[number, top:bottom, left:right].astype(bool)
            values = _placed(boxes[number], crops[number], region)
            everything = np.bincount(values.reshape(-1), minlength=256)
            inside = np.bincount(values[gt], minlength=256)
            above_all = np.concatenate([np.cumsum(everything[::-1])[::-1], [0]])  # count of q >= k
            above_gt = np.concatenate([np.cumsum(inside[::-1])[::-1], [0]])
            first = np.floor(cuts).astype(int) + 1  # q > cut  <=>  q >= floor(cut) + 1
            first = np.minimum(first, 256)
            per_threshold[:, number] += _dice(above_gt[first], above_all[first], gt.sum())
    per_threshold /= len(images)
    steps = {"plain": per_threshold[default_threshold]}
    chosen = _best_per_class(per_threshold, default_threshold)
    fitted = per_threshold[chosen, np.arange(NUM_CLASSES)]
    kept = {"thresholds": bool(options.get("fit_thresholds", True)) and _accept(steps["plain"], fitted, max_drop)}
    thresholds = [grid[index] for index in chosen] if kept["thresholds"] else [base] * NUM_CLASSES
    steps["thresholds"] = fitted if kept["thresholds"] else steps["plain"]

    # Pass 2: connected components at the chosen thresholds; a component's
    # area and overlap with the label decide every min-area / largest choice.
    areas_grid = [0] + sorted(int(value) for value in options.get("min_area_grid", []) if int(value) > 0)
    if not options.get("remove_small", True):
        areas_grid = [0]
    per_area = np.zeros((len(areas_grid), NUM_CLASSES))
    components = []  # per image, per class: (areas, true positives, label pixels)
    for stem, (shape, boxes, crops) in tqdm(_ensemble_oof(images, models, ensemble), total=len(images),
                                            desc="fit components", disable=not progress):
        ground_truth = CacheEntry(cache_dir, stem).mask()
        image_components = []
        for number in range(NUM_CLASSES):
            actual = int(ground_truth[number].sum())
            crop = crops[number]
            if crop.size == 0:
                image_components.append((np.zeros(1, np.int64), np.zeros(1, np.int64), actual))
                continue
            top, bottom, left, right = (int(value) for value in boxes[number])
            labels, areas = component_areas(crop > threshold_cut(thresholds[number]))
            gt = ground_truth[number, top:bottom, left:right].astype(bool)
            hits = np.bincount(labels[gt], minlength=len(areas))
            image_components.append((areas, hits, actual))
        components.append(image_components)

    def scores_for(min_areas, largest) -> np.ndarray:
        total = np.zeros(NUM_CLASSES)
        for image_components in components:
            for number, (areas, hits, actual) in enumerate(image_components):
                keep = kept_components(areas, min_areas[number], largest[number])
                total[number] += _dice(hits[keep].sum(), areas[keep].sum(), actual)
        return total / len(components)

    no_largest = [False] * NUM_CLASSES
    for row, area in enumerate(areas_grid):
        per_area[row] = scores_for([area] * NUM_CLASSES, no_largest)
    chosen_area = _best_per_class(per_area, 0)
    with_areas = per_area[chosen_area, np.arange(NUM_CLASSES)]
    kept["remove_small"] = _accept(steps["thresholds"], with_areas, max_drop)
    min_area = [areas_grid[index] for index in chosen_area] if kept["remove_small"] else [0] * NUM_CLASSES
    steps["small components removed"] = with_areas if kept["remove_small"] else steps["thresholds"]

    largest = [False] * NUM_CLASSES
    if options.get("largest_component", True):
        with_largest = scores_for(min_area, [True] * NUM_CLASSES)
        largest = [bool(value) for value in with_largest > steps["small components removed"] + 1e-12]
        candidate = scores_for(min_area, largest)
        kept["largest_component"] = _accept(steps["small components removed"], candidate, max_drop)
        if not kept["largest_component"]:
            largest = [False] * NUM_CLASSES
    else:
        kept["largest_component"] = False
    steps["largest component"] = scores_for(min_area, largest)

    params = PostprocessParams(thresholds, min_area, largest)
    table = score_table({f"ensemble + {name}" if name != "plain" else f"ensemble, threshold {base}": values
                         for name, values in steps.items()})
    return params, table, kept
