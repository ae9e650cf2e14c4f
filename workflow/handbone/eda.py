"""Exploratory data analysis: statistics, overlaps, hand pose and outliers.

``run_eda`` writes under its output folder:

- ``class_stats.csv``: per class, presence rate, area in pixels and as a
  fraction of the image, centroid (fraction of width/height) mean and spread;
- ``image_stats.csv``: per image, size, bit depth, intensity statistics,
  hand side and rotation from the labels (train) and from the pixels (all);
- ``overlap.csv``: per class pair, how often they overlap and their IoU;
- ``outliers.csv``: one row per finding (image_name, reason, score, detail);
- ``findings.json``: data-set level warnings, e.g. a train/test rotation shift;
- ``figures/*.png``: centroids, areas, intensities, rotations, overlaps.
"""

from __future__ import annotations

import argparse
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import ks_2samp
from tqdm import tqdm

from . import figures
from .arguments import progress
from .atomic import write_json, write_table
from .classes import CLASSES
from .data import fill_polygon, read_annotations, read_image
from .errors import HandboneError
from .outliers import detect, image_features
from .pose import pixel_pose

log = logging.getLogger("handbone")

BIT_DEPTHS = {"1": 1, "L": 8, "P": 8, "LA": 16, "I;16": 16, "I;16B": 16, "I": 32, "RGB": 24, "RGBA": 32}


def _bit_depth(path) -> int:
    with Image.open(path) as image:
        return BIT_DEPTHS.get(image.mode, 0)


def _bone_union(item, shape) -> np.ndarray:
    """Pixels inside any polygon, filled into one channel (not 29)."""
    union = np.zeros(shape, np.uint8)
    for annotation in item.annotations:
        if len(annotation.points) >= 3:
            # One call per polygon: a single call with several polygons
            # leaves their overlaps unfilled.
            fill_polygon(union, annotation.points)
    return union.astype(bool)


def _class_stats(features) -> pd.DataFrame:
    rows = []
    for item in features:
        present = item.first_by_label()
        pixels = item.height * item.width
        for name in CLASSES:
            annotation = present.get(name)
            area = annotation.area if annotation is not None else 0.0
            centroid = annotation.centroid if annotation is not None and annotation.centroid is not None else None
            rows.append(
                {
                    "class": name,
                    "present": annotation is not None,
                    "area": area if annotation is not None else np.nan,
                    "area_fraction": area / pixels if annotation is not None else np.nan,
                    "centroid_x": centroid[0] / item.width if centroid is not None else np.nan,
                    "centroid_y": centroid[1] / item.height if centroid is not None else np.nan,
                }
            )
    table = pd.DataFrame(rows)
    grouped = table.groupby("class", sort=False)
    stats = pd.DataFrame(
        {
            "presence_rate": grouped["present"].mean(),
            "area_mean": grouped["area"].mean(),
            "area_std": grouped["area"].std(ddof=0),
            "area_min": grouped["area"].min(),
            "area_q05": grouped["area"].quantile(0.05),
            "area_median": grouped["area"].median(),
            "area_q95": grouped["area"].quantile(0.95),
            "area_max": grouped["area"].max(),
            "area_fraction_mean": grouped["area_fraction"].mean(),
            "area_fraction_std": grouped["area_fraction"].std(ddof=0),
            "centroid_x_mean": grouped["centroid_x"].mean(),
            "centroid_x_std": grouped["centroid_x"].std(ddof=0),
            "centroid_y_mean": grouped["centroid_y"].mean(),
            "centroid_y_std": grouped["centroid_y"].std(ddof=0),
        }
    ).reindex(CLASSES)
    return stats.rename_axis("class").reset_index()


def _overlap_table(features) -> tuple[pd.DataFrame, np.ndarray]:
    """Per class pair: share of images (with both) where they overlap, mean
    IoU over those images, mean IoU when they overlap; plus the IoU matrix."""
    position = {name: k for k, name in enumerate(CLASSES)}
    both = np.zeros((29, 29))
    touching = np.zeros((29, 29))
    iou_sum = np.zeros((29, 29))
    for item in features:
        present = [position[label] for label in item.first_by_label() if label in position]
        for a in present:
            both[a, present] += 1
        seen = set()
        for (i, j), iou in item.overlaps.items():
            a, b = item.annotations[i].label, item.annotations[j].label
            if a == b or a not in position or b not in position or (a, b) in seen:
                continue
            seen.update({(a, b), (b, a)})
            touching[position[a], position[b]] += 1
            touching[position[b], position[a]] += 1
            iou_sum[position[a], position[b]] += iou
            iou_sum[position[b], position[a]] += iou
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_iou = np.where(both > 0, iou_sum / both, 0.0)
        rows = []
        for a in range(29):
            for b in range(a + 1, 29):
                rows.append(
                    {
                        "class_a": CLASSES[a],
                        "class_b": CLASSES[b],
                        "images_with_both": int(both[a, b]),
                        "overlap_rate": touching[a, b] / both[a, b] if both[a, b] else 0.0,
                        "mean_iou": mean_iou[a, b],
                        "mean_iou_when_overlapping": iou_sum[a, b] / touching[a, b] if touching[a, b] else 0.0,
                    }
                )
    return pd.DataFrame(rows), mean_iou


def run_eda(index: pd.DataFrame, out_dir: str | Path, progress: bool = True) -> dict:
    """``handbone eda``: per-image, per-class and overlap statistics, the
    outlier findings, figures and a summary (findings.json) of the indexed
    images in ``out_dir``; returns the summary."""
    out_dir = Path(out_dir)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    image_rows, features = [], []
    bone_histogram = np.zeros(256)
    background_histogram = np.zeros(256)
    for _, row in tqdm(index.iterrows(), total=len(index), desc="eda", disable=not progress):
        with _naming(row):
            image = read_image(row["image_path"])
            record = _image_record(row, image)
            if row["split"] == "train":
                annotations = read_annotations(row["label_path"])
                item = image_features(row["image_name"], annotations, image.shape[0], image.shape[1], image)
                features.append(item)
                if item.frame is not None:
                    record["side_from_labels"] = item.frame["side"]
                    record["rotation_from_labels"] = item.frame["rotation"]
                    record["wrist_bend_from_labels"] = item.frame["wrist_bend"]
                bone = _bone_union(item, image.shape)
                bone_histogram += np.bincount(image[bone], minlength=256)
                background_histogram += np.bincount(image[~bone], minlength=256)
        image_rows.append(record)
    image_stats = pd.DataFrame(image_rows)
    outliers = pd.DataFrame(detect(features), columns=["image_name", "reason", "score", "detail"])
    class_stats = _class_stats(features) if features else pd.DataFrame({"class": CLASSES})
    overlap, iou_matrix = _overlap_table(features)
    summary = _summary(image_stats, outliers, len(features))

    for name, table in (
        ("class_stats.csv", class_stats),
        ("image_stats.csv", image_stats),
        ("overlap.csv", overlap),
        ("outliers.csv", outliers),
    ):
        write_table(table, out_dir / name, float_format="%.6g")
    figures.centroid_scatter(features, figure_dir / "centroids.png")
    figures.area_distributions(features, figure_dir / "areas.png")
    figures.intensity_histograms(bone_histogram, background_histogram, figure_dir / "intensity.png")
    figures.rotation_distributions(image_stats, figure_dir / "rotation.png")
    figures.overlap_heatmap(iou_matrix, figure_dir / "overlap.png")
    write_json(summary, out_dir / "findings.json")
    return summary


@contextmanager
def _naming(row):
    """Add the image's and label's paths to an unexpected error (a bug keeps
    its traceback, but the user learns which file triggered it)."""
    try:
        yield
    except HandboneError:
        raise  # names its file already
    except Exception as error:
        files = " and ".join(path for path in (row["image_path"], row.get("label_path", "")) if path)
        error.add_note(f"while reading {files}")
        raise


def _image_record(row, image: np.ndarray) -> dict:
    """image_stats.csv's row of one image; the label columns are filled for
    training images by the caller."""
    pose = pixel_pose(image)
    return {
        "image_name": row["image_name"],
        "split": row["split"],
        "person_id": row["person_id"],
        "height": image.shape[0],
        "width": image.shape[1],
        "bit_depth": _bit_depth(row["image_path"]),
        "intensity_mean": float(image.mean()),
        "intensity_std": float(image.std()),
        "intensity_p01": float(np.percentile(image, 1)),
        "intensity_p99": float(np.percentile(image, 99)),
        "side_from_pixels": pose["side"],
        "side_score_from_pixels": pose["side_score"],
        "finger_gap_from_pixels": pose["finger_gap"],
        "skew_from_pixels": pose["skew"],
        "rotation_from_pixels": pose["rotation"],
        "side_from_labels": "",
        "rotation_from_labels": np.nan,
        "wrist_bend_from_labels": np.nan,
    }


def _summary(image_stats: pd.DataFrame, outliers: pd.DataFrame, train_images: int) -> dict:
    """findings.json: counts, side agreement, the train/test rotation shift
    (with a warning when significant) and the outlier findings per reason."""
    summary = {"train_images": train_images, "test_images": int((image_stats["split"] == "test").sum())}
    warnings = []
    labelled = image_stats[image_stats["side_from_labels"] != ""]
    if len(labelled):
        summary["side_agreement"] = float((labelled["side_from_labels"] == labelled["side_from_pixels"]).mean())
    train_rotation = image_stats.loc[image_stats["split"] == "train", "rotation_from_pixels"].dropna()
    test_rotation = image_stats.loc[image_stats["split"] == "test", "rotation_from_pixels"].dropna()
    if len(train_rotation) >= 5 and len(test_rotation) >= 5:
        test = ks_2samp(train_rotation.abs(), test_rotation.abs())
        summary["rotation_shift_pvalue"] = float(test.pvalue)
        summary["abs_rotation_mean"] = {
            "train": float(train_rotation.abs().mean()),
            "test": float(test_rotation.abs().mean()),
        }
        if test.pvalue < 0.05:
            warnings.append(
                f"hand rotation differs between train and test (Kolmogorov-Smirnov p={test.pvalue:.3g}; "
                f"mean |rotation| {train_rotation.abs().mean():.1f} vs {test_rotation.abs().mean():.1f} degrees): "
                "consider stronger rotation augmentation"
            )
    summary["outlier_findings"] = outliers["reason"].value_counts().to_dict()
    summary["warnings"] = warnings
    for warning in warnings:
        log.warning("%s", warning)
    return summary


# -- the command line: `handbone eda` (cli.py dispatches) --


def eda_command(args) -> None:
    from .data import read_index

    summary = run_eda(read_index(args.index), args.out_dir, progress=progress(args))
    log.info("EDA written to %s; outlier findings: %s", args.out_dir, summary["outlier_findings"] or "none")


def eda_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=eda_command)
    parser.add_argument("--index", required=True)
    parser.add_argument("--out-dir", required=True)
