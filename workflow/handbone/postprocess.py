"""Post-processing of ensemble maps into masks: per-class thresholds,
removal of small connected components, keeping only the largest component.

The parameters are fitted on out-of-fold maps (``handbone.fitting``), frozen
in ``results/postprocess/params.json`` and applied unchanged to test maps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .classes import NUM_CLASSES
from .errors import DataError


@dataclass
class PostprocessParams:
    thresholds: list[float]  # per class: mask = probability > threshold
    min_area: list[int]  # per class: components of fewer pixels are removed (0: none)
    largest: list[bool]  # per class: keep only the largest component

    @classmethod
    def plain(cls, threshold: float | None = None) -> PostprocessParams:
        """One threshold for every class (default: postprocess.threshold of
        config.yaml), nothing removed."""
        if threshold is None:
            from . import config

            threshold = config.default("postprocess.threshold")
        return cls([float(threshold)] * NUM_CLASSES, [0] * NUM_CLASSES, [False] * NUM_CLASSES)

    @classmethod
    def load(cls, path: str | Path) -> PostprocessParams:
        """The frozen post-processing written by ``handbone fit-postprocess``."""
        document = json.loads(Path(path).read_text())
        params = cls(document["thresholds"], document["min_area"], document["largest"])
        for name, values in asdict(params).items():
            if len(values) != NUM_CLASSES:
                raise DataError(f"{path}: '{name}' has {len(values)} values, expected {NUM_CLASSES}")
        return params

    def to_dict(self) -> dict:
        return asdict(self)


def threshold_cut(threshold: float) -> float:
    """Masks compare quantised maps: p > threshold  <=>  q > threshold x 255."""
    return threshold * 255


def component_areas(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a binary mask: (label image, area per
    label; label 0 is the background)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels, stats[:, cv2.CC_STAT_AREA]


def kept_components(areas: np.ndarray, min_area: int, largest: bool) -> np.ndarray:
    """Which labels (index into ``areas``, background excluded) survive."""
    keep = areas >= max(min_area, 0)
    keep[0] = False
    if largest and keep.any():
        best = np.argmax(np.where(keep, areas, -1))
        keep[:] = False
        keep[best] = True
    return keep


def class_mask(crop: np.ndarray, number: int, params: PostprocessParams) -> np.ndarray:
    """Boolean mask of one class from its uint8 map crop."""
    mask = crop > threshold_cut(params.thresholds[number])
    if (params.min_area[number] > 0 or params.largest[number]) and mask.any():
        labels, areas = component_areas(mask)
        mask = kept_components(areas, params.min_area[number], params.largest[number])[labels]
    return mask
