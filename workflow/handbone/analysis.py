"""Prediction analysis on out-of-fold maps: which bones and images the
models fail on, and how much the models differ (the report's
"7. Prediction analysis").

Every number comes from the training images' out-of-fold maps (each image
predicted by the fold model that did not train on it) against their labels,
rasterised from the label files in the image's own frame; the test set plays
no part, and images excluded by the outlier rules are left out, as in the
fit. Masks are the maps above 0.5 before any post-processing, so the models
are compared as they are, not as the fitted thresholds left them.

The second team of the competition chose its ensemble members this way:
Dice against bone area per class (small bones fail first), the Dice between
two models' masks (models that agree add little to each other) and what
each member adds to the ensemble when added last.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import probmaps
from .arguments import progress
from .atomic import atomic_path, write_table
from .classes import CLASSES, NUM_CLASSES
from .data import mask_for_row, read_folds, read_image, read_index
from .ensemble import combine, union_box
from .errors import DataError, MissingInput
from .fitting import UNIFORM_STEP, oof_inputs, score_table
from .metrics import dice_per_class
from .overlays import masks_of
from .postprocess import PostprocessParams, threshold_cut

log = logging.getLogger("handbone")

THRESHOLD = 0.5
WORST_IMAGES = 4  # pictures per model
# BGR colours of the error pictures.
FALSE_POSITIVE = (0, 0, 255)  # red: predicted where the label has no bone
FALSE_NEGATIVE = (255, 128, 0)  # blue (light enough to read as text): bone of the label that was missed
TRUE_POSITIVE = (0, 200, 0)  # green, faint: right, and so not what the eye should look at
ERROR_ALPHA, TRUE_ALPHA = 0.6, 0.25


@dataclass
class ImageResult:
    """The analysis of one image; ``models`` in the order of its maps."""

    area: np.ndarray  # (29,) labelled pixels per class
    predicted: np.ndarray  # (models, 29) predicted pixels
    dice: np.ndarray  # (models, 29) each model against the label
    similarity: np.ndarray  # (models, models, 29) Dice between two models' masks
    ensemble: np.ndarray  # (29,) the uniform ensemble of every model against the label
    without: np.ndarray  # (models, 29) the uniform ensemble of the other models (NaN with one model)


def _mask_in(region, box, crop) -> np.ndarray:
    """A class's mask (its map crop at ``box`` above 0.5) inside ``region``."""
    top, bottom, left, right = region
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    if crop.size:
        y0, y1, x0, x1 = (int(value) for value in box)
        mask[y0 - top : y1 - top, x0 - left : x1 - left] = crop > threshold_cut(THRESHOLD)
    return mask


def analyse_image(maps: list, truth: np.ndarray) -> ImageResult:
    """Dice of each model, of the models' uniform ensemble and of each
    ensemble without one model against ``truth`` ((29, H, W) label masks),
    and the Dice between every two models' masks, per class. ``maps``: one
    per model, each ``(shape, boxes, crops)`` as from ``probmaps.load_crops``.

    Each class is compared inside the box around its label and every
    prediction only: outside it all masks are empty, and a 2048 x 2048
    image costs what its bones cover.
    """
    count = len(maps)
    ensembles = [combine(maps)]
    if count > 1:
        ensembles += [combine(maps[:model] + maps[model + 1 :]) for model in range(count)]
    area = np.zeros(NUM_CLASSES, dtype=np.int64)
    predicted = np.zeros((count, NUM_CLASSES), dtype=np.int64)
    dice = np.zeros((count, NUM_CLASSES))
    similarity = np.zeros((count, count, NUM_CLASSES))
    combined = np.zeros((len(ensembles), NUM_CLASSES))
    for number in range(NUM_CLASSES):
        truth_box = probmaps.bounding_box(truth[number], 1)
        region = top, bottom, left, right = union_box([truth_box] + [boxes[number] for _, boxes, _ in maps + ensembles])
        label = truth[number, top:bottom, left:right].astype(bool)
        masks = np.stack([_mask_in(region, boxes[number], crops[number]) for _, boxes, crops in maps])
        area[number] = np.count_nonzero(label)
        predicted[:, number] = masks.reshape(count, -1).sum(axis=1)
        dice[:, number] = dice_per_class(masks, np.broadcast_to(label, masks.shape))
        for model in range(count):
            similarity[model, :, number] = dice_per_class(masks, np.broadcast_to(masks[model], masks.shape))
        voted = np.stack([_mask_in(region, boxes[number], crops[number]) for _, boxes, crops in ensembles])
        combined[:, number] = dice_per_class(voted, np.broadcast_to(label, voted.shape))
    without = combined[1:] if count > 1 else np.full((1, NUM_CLASSES), np.nan)
    return ImageResult(area, predicted, dice, similarity, combined[0], without)


def per_class_table(models: list[str], dice: np.ndarray, ensemble: np.ndarray) -> pd.DataFrame:
    """OOF Dice per class (mean over images) and its mean over classes, one
    row per model and one for their uniform ensemble. ``dice``: (images,
    models, 29); ``ensemble``: (images, 29)."""
    rows = {model: dice[:, number].mean(axis=0) for number, model in enumerate(models)}
    rows[UNIFORM_STEP] = ensemble.mean(axis=0)
    return score_table(rows).rename(columns={"step": "model"})


def similarity_table(models: list[str], similarity: np.ndarray) -> pd.DataFrame:
    """The mean Dice between two models' masks (over images; per class and
    the mean over classes), one row per ordered pair, so it reads as a
    matrix. ``similarity``: (images, models, models, 29)."""
    means = similarity.mean(axis=0)
    rows = [
        {
            "model_a": first,
            "model_b": second,
            "mean_dice": float(means[a, b].mean()),
            **dict(zip(CLASSES, means[a, b])),
        }
        for a, first in enumerate(models)
        for b, second in enumerate(models)
    ]
    return pd.DataFrame(rows)


def added_last_table(models: list[str], ensemble: np.ndarray, without: np.ndarray) -> pd.DataFrame:
    """What each model adds to the uniform ensemble when added last: the
    OOF Dice of the ensemble of all models minus that of the ensemble of the
    others, overall and per class, best first. ``ensemble``: (images, 29);
    ``without``: (images, models, 29). With one model there are no others:
    its gain is unknown (empty), not the whole score."""
    everything = ensemble.mean(axis=0)
    rows = []
    for number, model in enumerate(models):
        others = without[:, number].mean(axis=0)
        gain = everything - others
        rows.append(
            {
                "model": model,
                "dice_all": float(everything.mean()),
                "dice_without": float(others.mean()),
                "gain": float(gain.mean()),
                **dict(zip(CLASSES, gain)),
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values("gain", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def worst_images(per_image: pd.DataFrame, count: int = WORST_IMAGES) -> dict[str, pd.DataFrame]:
    """Per model, its ``count`` images of lowest mean Dice over classes
    (ties by name), worst first: columns image_name, fold, dice."""
    means = per_image.groupby(["model", "image_name", "fold"], sort=False)["dice"].mean().reset_index()
    return {
        model: group.sort_values(["dice", "image_name"], kind="stable").head(count).reset_index(drop=True)
        for model, group in means.groupby("model", sort=False)
    }


def error_overlay(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """BGR picture of a grayscale uint8 image with, over all classes, the
    pixels predicted for a bone the label does not have there (false
    positives) in red, the label's pixels that were missed (false
    negatives) in blue and the right ones faintly green. A pixel where one
    bone was missed and another wrongly predicted there (a bone taken for
    its neighbour) shows both tints: purple.
    ``predicted``, ``truth``: (classes, H, W) masks."""
    if predicted.shape != truth.shape or truth.shape[1:] != image.shape:
        raise ValueError(f"masks {predicted.shape} and {truth.shape} do not fit an image of {image.shape}")
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR).astype(np.float32)
    layers = (
        ((predicted & truth).any(axis=0), TRUE_POSITIVE, TRUE_ALPHA),
        ((predicted & ~truth).any(axis=0), FALSE_POSITIVE, ERROR_ALPHA),
        ((truth & ~predicted).any(axis=0), FALSE_NEGATIVE, ERROR_ALPHA),
    )
    for where, colour, alpha in layers:
        picture[where] = (1 - alpha) * picture[where] + alpha * np.array(colour, dtype=np.float32)
    return np.round(picture).astype(np.uint8)


def _header(width: int, lines: list[str]) -> np.ndarray:
    """A dark strip with ``lines`` of text and the colours' legend."""
    scale = float(np.clip(width / 1000, 0.4, 0.8))
    step = int(32 * scale) + 6
    strip = np.full((step * (len(lines) + 1) + 6, width, 3), 24, np.uint8)
    for number, line in enumerate(lines):
        cv2.putText(strip, line, (8, step * (number + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1)
    x = 8
    for label, colour in (
        ("false positive", FALSE_POSITIVE),
        ("false negative", FALSE_NEGATIVE),
        ("true positive", TRUE_POSITIVE),
    ):
        cv2.putText(strip, label, (x, step * (len(lines) + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1)
        x += cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] + 20
    return strip


def error_picture(row, map_path: Path, title: str, class_dice: pd.Series, max_side: int = 1024) -> np.ndarray:
    """The error overlay of one image (an index row) and one model's map,
    scaled to ``max_side`` pixels (small images up to twice their size,
    pixel for pixel, so the header's text fits), under a header naming the
    image, its mean Dice and its three worst classes."""
    predicted = masks_of(probmaps.load_quantized(map_path), PostprocessParams.plain(THRESHOLD))
    picture = error_overlay(read_image(row["image_path"]), predicted, mask_for_row(row))
    factor = min(max_side / max(picture.shape[:2]), 2)
    size = (round(picture.shape[1] * factor), round(picture.shape[0] * factor))
    picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_NEAREST)
    worst = class_dice.sort_values(kind="stable").head(3)
    lines = [title, "worst classes: " + ", ".join(f"{name} {value:.2f}" for name, value in worst.items())]
    return np.concatenate([_header(picture.shape[1], lines), picture], axis=0)


@dataclass
class Analysis:
    """The analysis of every usable training image."""

    models: list[str]
    per_image: pd.DataFrame  # Dice per (model, image, class), with the label's and the prediction's area
    arrays: dict[str, np.ndarray]  # each ImageResult field stacked over images
    maps: dict[str, dict[str, Path]]  # image name -> model -> its out-of-fold map
    rows: dict[str, pd.Series]  # image name -> its index row


def analyse_predictions(oof_dirs, folds_path, index_path, progress: bool = True) -> Analysis:
    """Every usable training image's ``analyse_image``, one image at a
    time; each model's maps are in its folder of fold*/ subfolders
    (``.../{model}/oof``)."""
    models, images = oof_inputs(oof_dirs, folds_path)
    if not Path(index_path).is_file():
        raise MissingInput(f"{index_path}: index does not exist (written by `handbone index`)")
    by_stem = {Path(row["image_name"]).stem: row for _, row in read_index(index_path, "train").iterrows()}
    folds = read_folds(folds_path)
    fold_of = {Path(name).stem: fold for name, fold in zip(folds["image_name"], folds["fold"])}
    analysis = Analysis(models, pd.DataFrame(), {}, {}, {})
    records, results = [], []
    for stem, paths in tqdm(images, desc="prediction analysis", disable=not progress):
        row = by_stem.get(stem)
        if row is None:
            raise DataError(f"{index_path} has no training image {stem}, which {folds_path} lists")
        height, width = int(row["height"]), int(row["width"])
        maps = [probmaps.load_crops(paths[model]) for model in models]
        for model, (shape, _, _) in zip(models, maps):
            if tuple(shape) != (NUM_CLASSES, height, width):
                raise DataError(
                    f"{paths[model]}: map of shape {tuple(shape)}, but {row['image_name']} is {height} x {width} "
                    f"({index_path}): maps must be in the image's own frame"
                )
        result = analyse_image(maps, mask_for_row(row))
        results.append(result)
        analysis.maps[row["image_name"]], analysis.rows[row["image_name"]] = paths, row
        for number, model in enumerate(models):
            records.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "fold": fold_of[stem],
                        "image_name": row["image_name"],
                        "class": CLASSES,
                        "area": result.area,
                        "area_share": result.area / (height * width),
                        "predicted_area": result.predicted[number],
                        "dice": result.dice[number],
                    }
                )
            )
    analysis.per_image = pd.concat(records, ignore_index=True)
    analysis.arrays = {
        field.name: np.stack([getattr(result, field.name) for result in results]) for field in fields(ImageResult)
    }
    return analysis


def write_prediction_analysis(oof_dirs, folds_path, index_path, out_dir, progress: bool = True) -> dict:
    """``handbone prediction-analysis``: into ``out_dir``

    - ``per_image.csv``: Dice per model, image and class, with the areas;
    - ``per_class.csv``: OOF Dice per class of each model and of their
      uniform ensemble;
    - ``similarity.csv``, ``similarity.png``: the mean Dice between two
      models' masks, per class and overall;
    - ``added_last.csv``: each model's gain to the uniform ensemble when
      added last, best first;
    - ``dice_vs_area/{model}.png``: Dice against bone area, per class group;
    - ``worst/{model}/{rank}_{image}.png``: false positives and negatives
      on each model's worst images.

    Returns the tables by name."""
    from .figures import dice_against_area, similarity_heatmaps

    out = Path(out_dir)
    analysis = analyse_predictions(oof_dirs, folds_path, index_path, progress)
    models, per_image, arrays = analysis.models, analysis.per_image, analysis.arrays
    tables = {
        "per_image": per_image,
        "per_class": per_class_table(models, arrays["dice"], arrays["ensemble"]),
        "similarity": similarity_table(models, arrays["similarity"]),
        "added_last": added_last_table(models, arrays["ensemble"], arrays["without"]),
    }
    for name, table in tables.items():
        write_table(table, out / f"{name}.csv")
    similarity_heatmaps(tables["similarity"], models, out / "similarity.png")
    for model in models:
        dice_against_area(per_image[per_image["model"] == model], out / "dice_vs_area" / f"{model}.png", model)
    with atomic_path(out / "worst") as staging:
        for model, chosen in tqdm(worst_images(per_image).items(), desc="worst images", disable=not progress):
            (staging / model).mkdir(parents=True)
            for rank, (name, fold, dice) in enumerate(chosen[["image_name", "fold", "dice"]].itertuples(index=False)):
                per_class = per_image[(per_image["model"] == model) & (per_image["image_name"] == name)]
                title = f"{model}: {name} (fold {fold}), mean Dice {dice:.3f}"
                picture = error_picture(
                    analysis.rows[name], analysis.maps[name][model], title, per_class.set_index("class")["dice"]
                )
                target = staging / model / f"{rank + 1}_{Path(probmaps.map_filename(name)).stem}.png"
                if not cv2.imwrite(str(target), picture):
                    raise OSError(f"{target}: could not write the picture")
    for _, row in tables["per_class"].iterrows():
        log.info("OOF Dice at threshold 0.5, %-24s %.4f", row["model"], row["mean_dice"])
    return tables


# -- the command line: `handbone prediction-analysis` (cli.py dispatches) --


def prediction_analysis_command(args) -> None:
    write_prediction_analysis(args.oof, args.folds, args.index, args.out_dir, progress(args))
    log.info("prediction analysis written to %s", args.out_dir)


def prediction_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=prediction_analysis_command)
    parser.add_argument(
        "--oof", nargs="+", required=True, help="per model, its folder of fold*/ out-of-fold maps (.../{model}/oof)"
    )
    parser.add_argument("--folds", required=True, help="folds CSV (excluded images are left out)")
    parser.add_argument("--index", required=True, help="index CSV (the labels, rasterised in the image's own frame)")
    parser.add_argument("--out-dir", required=True)
