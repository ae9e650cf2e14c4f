"""Preprocessing of an image before training and prediction: the same
function is applied to the training images (once, into the cache, see
cache.py) and to every image predicted."""

from __future__ import annotations

import cv2
import numpy as np


def preprocess(image: np.ndarray, options: dict) -> np.ndarray:
    """Apply the preprocessing ``options`` (the config's whole preprocess
    section, see config.section) to a uint8 grayscale image."""
    clahe = options["clahe"]
    if clahe["enabled"]:
        tile = int(clahe["tile_grid_size"])
        image = cv2.createCLAHE(clipLimit=float(clahe["clip_limit"]), tileGridSize=(tile, tile)).apply(image)
    return image
