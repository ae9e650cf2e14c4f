"""Post-processing of ensemble maps into masks: per-class Gaussian smoothing
of the maps, per-class thresholds, removal of small connected components,
keeping only the largest component.

The parameters are fitted on out-of-fold maps (``handbone.fitting``), frozen
in ``results/postprocess/params.json`` and applied unchanged to test maps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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
    # per class: the Gaussian's sigma (pixels of the image) the map is smoothed with before the threshold; 0: none
    sigma: list[float] = field(default_factory=lambda: [0.0] * NUM_CLASSES)

    @classmethod
    def plain(cls, threshold: float | None = None) -> PostprocessParams:
        """One threshold for every class (default: postprocess.threshold of
        config.yaml), nothing smoothed or removed."""
        if threshold is None:
            from . import config

            threshold = config.default("postprocess.threshold")
        return cls([float(threshold)] * NUM_CLASSES, [0] * NUM_CLASSES, [False] * NUM_CLASSES)

    @classmethod
    def load(cls, path: str | Path) -> PostprocessParams:
        """The frozen post-processing written by ``handbone fit-postprocess``
        (one written before the smoothing step smooths nothing)."""
        document = json.loads(Path(path).read_text())
        sigma = document.get("sigma", [0.0] * NUM_CLASSES)
        params = cls(document["thresholds"], document["min_area"], document["largest"], sigma)
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


def smoothed(box, crop: np.ndarray, sigma: float, shape) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The uint8 map ``crop`` of one class, at ``box`` (top, bottom, left,
    right) in an image of ``shape`` (rows, columns), smoothed by a Gaussian
    of ``sigma`` pixels: (its box, its crop). The box grows by 3 sigma on
    each side (within the image) so that nothing the smoothing spreads
    beyond it is cut off; at the image's border the map is taken to go on
    as it ends. The result is rounded to uint8 again, so that thresholds
    compare it as they compare a stored map. sigma 0 or an empty crop:
    unchanged."""
    top, bottom, left, right = (int(value) for value in box)
    if sigma <= 0 or crop.size == 0:
        return (top, bottom, left, right), crop
    reach = int(np.ceil(3 * sigma))
    height, width = (int(value) for value in shape)
    grown = max(top - reach, 0), min(bottom + reach, height), max(left - reach, 0), min(right + reach, width)
    padded = np.zeros((grown[1] - grown[0], grown[3] - grown[2]), dtype=np.float32)
    padded[top - grown[0] : bottom - grown[0], left - grown[2] : right - grown[2]] = crop
    blurred = cv2.GaussianBlur(padded, (2 * reach + 1, 2 * reach + 1), sigma, borderType=cv2.BORDER_REPLICATE)
    return grown, np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def class_mask(crop: np.ndarray, number: int, params: PostprocessParams) -> np.ndarray:
    """Boolean mask of one class from its uint8 map crop (already smoothed
    by ``smoothed`` where ``params.sigma`` says so)."""
    mask = crop > threshold_cut(params.thresholds[number])
    if (params.min_area[number] > 0 or params.largest[number]) and mask.any():
        labels, areas = component_areas(mask)
        mask = kept_components(areas, params.min_area[number], params.largest[number])[labels]
    return mask


def postprocess_params(args):
    """The frozen post-processing of --params, or one --threshold."""
    return PostprocessParams.load(args.params) if args.params else PostprocessParams.plain(args.threshold)
