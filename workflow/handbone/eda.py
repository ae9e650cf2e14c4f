"""Exploratory summary of the annotations and images."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from .classes import CLASSES
from .data import mask_for_row, read_image


def summarize(index: pd.DataFrame, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-class statistics over the training labels and per-image statistics.

    Returns (class_stats, image_stats). Centroids are given as fractions of
    the image width and height so images of different sizes compare.
    """
    image_rows, class_rows = [], []
    for _, row in tqdm(index.iterrows(), total=len(index), desc="eda", disable=not progress):
        image = read_image(row["image_path"])
        image_rows.append(
            {
                "image_name": row["image_name"],
                "split": row["split"],
                "person_id": row["person_id"],
                "height": image.shape[0],
                "width": image.shape[1],
                "intensity_mean": float(image.mean()),
                "intensity_std": float(image.std()),
                "intensity_p01": float(np.percentile(image, 1)),
                "intensity_p99": float(np.percentile(image, 99)),
            }
        )
        if row["split"] != "train":
            continue
        mask = mask_for_row(row)
        pixels = image.shape[0] * image.shape[1]
        for class_name, channel in zip(CLASSES, mask):
            ys, xs = np.nonzero(channel)
            class_rows.append(
                {
                    "class": class_name,
                    "present": ys.size > 0,
                    "area": ys.size,
                    "area_fraction": ys.size / pixels,
                    "centroid_x": xs.mean() / image.shape[1] if ys.size else np.nan,
                    "centroid_y": ys.mean() / image.shape[0] if ys.size else np.nan,
                }
            )
    per_label = pd.DataFrame(class_rows)
    if per_label.empty:
        class_stats = pd.DataFrame({"class": CLASSES})
    else:
        grouped = per_label.groupby("class", sort=False)
        class_stats = pd.DataFrame(
            {
                "presence_rate": grouped["present"].mean(),
                "area_mean": grouped["area"].mean(),
                "area_std": grouped["area"].std(ddof=0),
                "area_min": grouped["area"].min(),
                "area_max": grouped["area"].max(),
                "area_fraction_mean": grouped["area_fraction"].mean(),
                "centroid_x_mean": grouped["centroid_x"].mean(),
                "centroid_x_std": grouped["centroid_x"].std(ddof=0),
                "centroid_y_mean": grouped["centroid_y"].mean(),
                "centroid_y_std": grouped["centroid_y"].std(ddof=0),
            }
        ).reindex(CLASSES)
        class_stats = class_stats.rename_axis("class").reset_index()
    return class_stats, pd.DataFrame(image_rows)
