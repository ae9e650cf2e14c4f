"""The competition metric: Dice per image and class, averaged per class."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import rle
from .atomic import write_json, write_table
from .classes import CLASSES
from .data import rasterize, read_annotations, read_index

log = logging.getLogger("handbone")

SMOOTH = 1e-4
# The fold label of a model's row that averages its folds in cv tables.
MEAN_FOLD = "mean"


def dice_per_class(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each channel of two (C, H, W) binary masks, shape (C,).

    An empty prediction of an empty truth scores 1, as in the competition.
    """
    prediction = prediction.reshape(prediction.shape[0], -1).astype(bool)
    truth = truth.reshape(truth.shape[0], -1).astype(bool)
    intersection = np.count_nonzero(prediction & truth, axis=1)
    total = np.count_nonzero(prediction, axis=1) + np.count_nonzero(truth, axis=1)
    return _dice(intersection, total)


def _dice(intersection: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Dice from integer pixel counts: |A∩B| and |A| + |B| per channel."""
    return (2 * intersection + SMOOTH) / (total + SMOOTH)


def dice_per_class_tensor(prediction, truth) -> np.ndarray:
    """``dice_per_class`` of two (C, H, W) torch masks (boolean, or nonzero
    meaning in), counted on their device (a GPU's maps need not come to the
    CPU); the same numbers as ``dice_per_class``: the pixel counts are
    exact integers and the division is the same float64 one."""
    import torch

    prediction, truth = prediction.bool().view(torch.uint8), truth.bool().view(torch.uint8)
    dims = tuple(range(1, prediction.dim()))

    def count(values):
        # 0/1/2 bytes summed into int32 (exact up to 2^30 pixels a channel):
        # on the CPU 6 times faster than torch's int64 sum of booleans.
        return values.sum(dim=dims, dtype=torch.int32).cpu().numpy().astype(np.int64)

    return _dice(count(prediction & truth), count(prediction + truth))


def class_confidence(probabilities: np.ndarray) -> np.ndarray:
    """Per class of a (29, H, W) map, the Dice the map expects of its own
    mask at 0.5: the soft Dice between the probabilities and that mask. 1
    for a sharp map, lower the wider the unsure fringe of a bone or the
    weaker a detection; 1 for a class no pixel has any probability of."""
    flat = probabilities.reshape(probabilities.shape[0], -1)
    mask = flat >= 0.5
    overlap = np.where(mask, flat, 0).sum(axis=1, dtype=np.float64)
    return (2 * overlap + SMOOTH) / (flat.sum(axis=1, dtype=np.float64) + np.count_nonzero(mask, axis=1) + SMOOTH)


def orientation_confidence(probabilities: np.ndarray) -> float:
    """How sure a (29, H, W) map is of a whole hand: the mean over classes of
    ``class_confidence``, a class without a pixel at 0.5 or above counting
    0 (every hand has its bones; a map that loses some, as one of a hand
    shown mirrored to networks that learnt the other hand, is less sure)."""
    found = (probabilities.reshape(probabilities.shape[0], -1) >= 0.5).any(axis=1)
    return float(np.where(found, class_confidence(probabilities), 0.0).mean())


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
    means["fold"] = MEAN_FOLD
    table = pd.concat([table, means], ignore_index=True)
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    return table[["model", "fold", "val_dice", "best_epoch", *CLASSES]]


def write_cv_summary(metrics_paths, out, history_paths=(), history_out=None, figure=None) -> pd.DataFrame:
    """``handbone cv-summary``: the cross-validation table of one model's
    folds, and optionally its folds' training histories in one CSV (with a
    fold column) and their learning curves."""
    table = cv_table(metrics_paths)
    write_table(table, out)
    for model, group in table[table["fold"] != MEAN_FOLD].groupby("model"):
        log.info("%s: cross-validation Dice %.4f over %d fold(s)", model, group["val_dice"].mean(), len(group))
    if history_paths:
        history = pd.concat(
            [pd.read_csv(path).assign(fold=Path(path).parent.name.removeprefix("fold")) for path in history_paths],
            ignore_index=True,
        )[["fold", "epoch", "train_loss", "lr", "val_dice"]]
        if history_out:
            write_table(history, history_out)
        if figure:
            from .figures import learning_curves

            learning_curves(history, Path(figure), f"Learning curves of {', '.join(table['model'].unique())}")
    return table


def write_cv_combined(tables, out, metrics_out, figure=None) -> dict:
    """``handbone cv-combine``: the models' cross-validation tables in one,
    the mean and per-fold Dice per model as JSON (DVC metrics) and,
    optionally, a figure of the Dice per class and model."""
    table = pd.concat([pd.read_csv(path, dtype={"fold": str}) for path in tables], ignore_index=True)
    write_table(table, out)
    means = table[table["fold"] == MEAN_FOLD].set_index("model")
    metrics = {
        model: {
            "mean_dice": float(means.loc[model, "val_dice"]),
            "folds": {row["fold"]: float(row["val_dice"]) for _, row in group[group["fold"] != MEAN_FOLD].iterrows()},
        }
        for model, group in table.groupby("model", sort=False)
    }
    write_json({"cv_dice": metrics}, metrics_out)
    if figure:
        from .figures import per_class_dice

        rows = {model: means.loc[model, CLASSES].to_numpy(dtype=float) for model in means.index}
        per_class_dice(rows, Path(figure), "Cross-validation Dice per class (mean over folds)")
    return metrics


def write_holdout_scores(submission, index_path, ground_truth, out_dir) -> dict:
    """``handbone score``: Dice per image and per class of a submission
    against the test labels, and their mean, into ``out_dir``. Without
    labels (real data: the competition keeps them) the same files say so
    instead of holding a number, so DVC tracks them either way."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ground_truth:
        per_image = score_submission(submission, ground_truth, read_index(index_path, "test"))
        per_class, mean = summarize(per_image)
        summary = {"mean_dice": mean, "images": len(per_image)}
        log.info("held-out mean Dice %.4f over %d images", mean, len(per_image))
    else:
        per_image = pd.DataFrame(columns=["image_name", *CLASSES]).set_index("image_name")
        per_class = pd.DataFrame({"class": CLASSES, "dice": [float("nan")] * len(CLASSES)})
        summary = {"mean_dice": None, "images": 0, "note": "no test labels (not the synthetic demo): no held-out score"}
        log.info("no test labels: no held-out score")
    write_table(per_image, out / "holdout_per_image.csv", index=True)
    write_table(per_class, out / "holdout_per_class.csv")
    write_json(summary, out / "holdout.json")
    return summary


# -- the command line: `handbone cv-summary, cv-combine, score` (cli.py dispatches) --


def cv_summary_command(args) -> None:
    write_cv_summary(args.metrics, args.out, args.history, args.history_out, args.figure)


def cv_summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=cv_summary_command)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json files written by train")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--history", nargs="*", default=[], help="history.csv files written by train (fold{k}/history.csv)"
    )
    parser.add_argument("--history-out", help="the histories in one CSV with a fold column")
    parser.add_argument("--figure", help="PNG of the learning curves")


def cv_combine_command(args) -> None:
    write_cv_combined(args.tables, args.out, args.metrics_out, args.figure)


def cv_combine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=cv_combine_command)
    parser.add_argument("--tables", nargs="+", required=True, help="per-model tables written by cv-summary")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--metrics-out", required=True, help="JSON of the mean and per-fold Dice per model (DVC metrics)"
    )
    parser.add_argument("--figure", help="PNG of the Dice per class and model")


def score_command(args) -> None:
    write_holdout_scores(args.submission, args.index, args.ground_truth, args.out_dir)


def score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=score_command)
    parser.add_argument("--submission", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument(
        "--ground-truth", help="folder with outputs_json/ID###/<stem>.json; without it, record that there is no score"
    )
    parser.add_argument("--out-dir", required=True)
