"""The figures of the Snakemake report (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter, PercentFormatter  # noqa: E402

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


def dice_against_area(per_image, path: Path, model: str) -> None:
    """Dice of every image and class against the labelled bone's share of
    the image, one panel per class group (``per_image``: one model's rows of
    the analysis table). Bones absent from a label have no area to place."""
    from .classes import CLASS_GROUPS

    figure, panels = plt.subplots(2, 2, figsize=(11, 8), sharey=True)
    present = per_image[per_image["area"] > 0]
    for axes, (group, names) in zip(panels.flat, CLASS_GROUPS.items()):
        colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
        for number, name in enumerate(names):
            rows = present[present["class"] == name]
            if len(rows):
                axes.scatter(
                    rows["area_share"],
                    rows["dice"],
                    s=12,
                    alpha=0.7,
                    color=colours(number),
                    label=f"{name} ({rows['dice'].mean():.2f})",
                )
        absent = int((per_image["class"].isin(names) & (per_image["area"] == 0)).sum())
        axes.set_title(group + (f" ({absent} absent from their labels)" if absent else ""), fontsize=10)
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("bone area (share of the image)")
        axes.set_ylim(-0.03, 1.03)
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=6, ncol=2 if len(names) > 8 else 1, loc="lower right", title="class (mean Dice)")
    for axes in panels[:, 0]:
        axes.set_ylabel("Dice (threshold 0.5)")
    figure.suptitle(f"{model}: out-of-fold Dice of every image against bone area")
    _save(figure, path)


def similarity_heatmaps(table, models: list[str], path: Path) -> None:
    """The mean Dice between two models' out-of-fold masks: the matrix of
    the mean over classes, and per class for every pair of models
    (``table``: the analysis's similarity table, one row per ordered pair)."""
    figure, (matrix_axes, class_axes) = plt.subplots(
        1, 2, figsize=(13, 1.8 + 0.45 * max(len(models), 4)), gridspec_kw={"width_ratios": [1, 2.6]}
    )
    by_pair = table.set_index(["model_a", "model_b"])
    matrix = np.array([[by_pair.loc[(a, b), "mean_dice"] for b in models] for a in models])
    image = matrix_axes.imshow(matrix, cmap="viridis", vmin=min(0.5, float(matrix.min())), vmax=1)
    for (row, column), value in np.ndenumerate(matrix):
        # Dark text on viridis's light (high) end, light text on its dark end.
        colour = "black" if image.norm(value) > 0.6 else "white"
        matrix_axes.text(column, row, f"{value:.3f}", ha="center", va="center", fontsize=8, color=colour)
    matrix_axes.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
    matrix_axes.set_yticks(range(len(models)), models, fontsize=8)
    matrix_axes.set_title("mean over classes", fontsize=10)
    figure.colorbar(image, ax=matrix_axes, fraction=0.046)
    pairs = [(a, b) for number, a in enumerate(models) for b in models[number + 1 :]]
    if pairs:
        values = np.array([by_pair.loc[pair, CLASSES].to_numpy(dtype=float) for pair in pairs])
        image = class_axes.imshow(values, cmap="viridis", vmin=min(0.5, float(values.min())), vmax=1, aspect="auto")
        class_axes.set_yticks(range(len(pairs)), [f"{a} / {b}" for a, b in pairs], fontsize=7)
        class_axes.set_xticks(range(len(CLASSES)), CLASSES, rotation=70, fontsize=7)
        figure.colorbar(image, ax=class_axes, fraction=0.03, label="Dice between the two models' masks")
    else:
        class_axes.text(0.5, 0.5, "one model: no pair to compare", ha="center", va="center")
        class_axes.set_axis_off()
    class_axes.set_title("per class, every pair of models", fontsize=10)
    figure.suptitle("Agreement of the models' out-of-fold masks (mean Dice between two models, threshold 0.5)")
    _save(figure, path)
