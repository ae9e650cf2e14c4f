"""The competition metric: Dice per image and class, averaged per class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import rle
from .classes import CLASSES
from .data import rasterize, read_annotations

SMOOTH = 1e-4


def dice_per_class(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each channel of two (C, H, W) binary masks, shape (C,).

    An empty prediction of an empty truth scores 1, as in the competition.
    """
    prediction = prediction.reshape(prediction.shape[0], -1).astype(bool)
    truth = truth.reshape(truth.shape[0], -1).astype(bool)
    intersection = np.count_nonzero(prediction & truth, axis=1)
    total = np.count_nonzero(prediction, axis=1) + np.count_nonzero(truth, axis=1)
    return (2 * intersection + SMOOTH) / (total + SMOOTH)


def summarize(per_image: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Per-class mean Dice and the overall score from a table of per-image Dice.

    ``per_image`` has one column per class (named as in CLASSES); the score is
    the mean over images per class, then the mean over the 29 classes.
    """
    per_class = per_image[CLASSES].mean(axis=0)
    table = pd.DataFrame({"class": CLASSES, "dice": per_class.to_numpy()})
    return table, float(per_class.mean())


def score_submission(submission_path, truth_root, index: pd.DataFrame) -> pd.DataFrame:
    """Per-image, per-class Dice of a submission against polygon labels.

    ``truth_root`` holds ``outputs_json/ID###/<stem>.json`` for the images of
    ``index`` (the test rows); masks are compared at original resolution.
    """
    table = pd.read_csv(submission_path, dtype=str, keep_default_na=False)
    by_image = {name: dict(zip(group["class"], group["rle"])) for name, group in table.groupby("image_name")}
    rows = {}
    for _, row in index.iterrows():
        name, shape = row["image_name"], (int(row["height"]), int(row["width"]))
        label_path = Path(truth_root) / "outputs_json" / row["person_id"] / f"{Path(name).stem}.json"
        truth = rasterize(read_annotations(label_path), *shape)
        encoded = by_image.get(name, {})
        prediction = np.stack([rle.decode(encoded.get(class_name, ""), shape) for class_name in CLASSES])
        rows[name] = dice_per_class(prediction, truth)
    return pd.DataFrame.from_dict(rows, orient="index", columns=CLASSES).rename_axis("image_name")


def cv_table(metrics_paths) -> pd.DataFrame:
    """One row per (model, fold) from training's metrics.json files, with the
    Dice per class, plus a 'mean' row per model averaging its folds."""
    rows = []
    for path in metrics_paths:
        metrics = json.loads(Path(path).read_text())
        rows.append(
            {
                "model": Path(path).parent.parent.name,
                "fold": str(metrics["fold"]),
                "val_dice": metrics["val_dice"],
                "best_epoch": metrics["best_epoch"],
                **metrics["val_dice_per_class"],
            }
        )
    table = pd.DataFrame(rows)
    means = table.groupby("model", sort=False)[["val_dice", *CLASSES]].mean().reset_index()
    means["fold"] = "mean"
    table = pd.concat([table, means], ignore_index=True)
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    return table[["model", "fold", "val_dice", "best_epoch", *CLASSES]]
