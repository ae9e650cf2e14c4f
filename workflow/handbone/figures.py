"""The EDA figures (PNG, for the Snakemake report)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .classes import CLASSES  # noqa: E402


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def centroid_scatter(features, path: Path) -> None:
    """Class centroids in the hand's frame (every hand shown as a right hand)."""
    figure, axes = plt.subplots(figsize=(7, 8))
    colours = plt.get_cmap("tab20", len(CLASSES))
    for number, name in enumerate(CLASSES):
        points = np.array([item.canonical_centroids()[name] for item in features if name in item.canonical_centroids()])
        if len(points) == 0:
            continue
        axes.scatter(points[:, 0], points[:, 1], s=6, color=colours(number), alpha=0.6)
        median = np.median(points, axis=0)
        axes.annotate(name.replace("finger-", "f"), median, fontsize=7, ha="center", va="center", weight="bold")
    axes.invert_yaxis()
    axes.set_aspect("equal")
    axes.set_xlabel("x (hand units, thumb side negative)")
    axes.set_ylabel("y (hand units, wrist at 0, knuckles at -1)")
    axes.set_title("Class centroids in the hand's frame")
    _save(figure, path)


def area_distributions(features, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(11, 4.5))
    areas = [
        [
            item.first_by_label()[name].area / (item.height * item.width)
            for item in features
            if name in item.first_by_label()
        ]
        for name in CLASSES
    ]
    axes.boxplot([a if a else [np.nan] for a in areas], showfliers=True, flierprops={"markersize": 3})
    axes.set_xticks(range(1, len(CLASSES) + 1), CLASSES, rotation=70, fontsize=7)
    axes.set_yscale("log")
    axes.set_ylabel("area / image area")
    axes.set_title("Area of each class (training labels)")
    _save(figure, path)


def intensity_histograms(bone: np.ndarray, background: np.ndarray, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4))
    for counts, label in ((bone, "bone"), (background, "not bone")):
        if counts.sum():
            axes.plot(np.arange(256), counts / counts.sum(), label=label)
    axes.set_xlabel("pixel intensity")
    axes.set_ylabel("share of pixels")
    axes.legend()
    axes.set_title("Intensity of bone and other pixels (training images)")
    _save(figure, path)


def rotation_distributions(image_stats, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4))
    bins = np.arange(-60, 61, 5)
    for split in ("train", "test"):
        values = image_stats.loc[image_stats["split"] == split, "rotation_from_pixels"].dropna()
        if len(values):
            axes.hist(
                values.clip(-60, 60), bins=bins, alpha=0.5, density=True, label=f"{split} (pixels, n={len(values)})"
            )
    labelled = image_stats["rotation_from_labels"].dropna()
    if len(labelled):
        axes.hist(
            labelled.clip(-60, 60), bins=bins, histtype="step", density=True, color="black", label="train (labels)"
        )
    axes.set_xlabel("hand rotation (degrees, clockwise)")
    axes.set_ylabel("density")
    axes.legend()
    axes.set_title("Hand rotation, train versus test")
    _save(figure, path)


def overlap_heatmap(iou: np.ndarray, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(iou, cmap="magma", vmin=0, vmax=max(0.05, float(iou.max())))
    axes.set_xticks(range(len(CLASSES)), CLASSES, rotation=90, fontsize=6)
    axes.set_yticks(range(len(CLASSES)), CLASSES, fontsize=6)
    figure.colorbar(image, ax=axes, label="mean IoU")
    axes.set_title("Mean IoU of every class pair (training labels)")
    _save(figure, path)


def learning_curves(history, path: Path, title: str) -> None:
    """Training loss and validation Dice per epoch, one line per fold."""
    figure, (loss_axes, dice_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for fold, group in history.groupby("fold"):
        loss_axes.plot(group["epoch"], group["train_loss"], label=f"fold {fold}")
        validated = group.dropna(subset=["val_dice"])
        dice_axes.plot(validated["epoch"], validated["val_dice"], marker="o", markersize=3, label=f"fold {fold}")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("training loss")
    dice_axes.set_xlabel("epoch")
    dice_axes.set_ylabel("validation Dice")
    for axes in (loss_axes, dice_axes):
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    _save(figure, path)


def per_class_dice(rows: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Dice per class, one marker series per model or ensemble step."""
    figure, axes = plt.subplots(figsize=(12, 4.5))
    for label, values in rows.items():
        axes.plot(
            range(len(CLASSES)),
            values,
            marker="o",
            markersize=4,
            linewidth=1,
            label=f"{label} (mean {np.mean(values):.3f})",
        )
    axes.set_xticks(range(len(CLASSES)), CLASSES, rotation=70, fontsize=7)
    axes.set_ylabel("Dice")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    axes.set_title(title)
    _save(figure, path)
