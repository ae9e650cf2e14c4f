"""Preprocessing and the training cache.

Every training image is decoded and contrast-enhanced once; training then
reads it many times. Per image the cache holds two ``.npy`` files that are
memory-mapped on reading, so a crop touches only its own rows:

- ``<stem>.image.npy``: uint8 (H, W), the preprocessed image;
- ``<stem>.mask.npy``: uint8 (H, W, 4), the 29 class bits of each pixel
  packed with ``np.packbits(..., bitorder="little")`` along the last axis.

``cache.csv`` lists the entries with their sizes. The same ``preprocess``
function is applied to test images at prediction time.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from .atomic import atomic_path
from .classes import NUM_CLASSES
from .data import mask_for_row, read_image, read_index


def preprocess(image: np.ndarray, options: dict) -> np.ndarray:
    """Apply the configured preprocessing (CLAHE) to a uint8 grayscale image."""
    clahe = options.get("clahe", {})
    if clahe.get("enabled", True):
        tile = int(clahe.get("tile_grid_size", 8))
        image = cv2.createCLAHE(clipLimit=float(clahe.get("clip_limit", 2.0)), tileGridSize=(tile, tile)).apply(image)
    return image


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """(29, H, W) binary -> (H, W, 4) uint8 bits."""
    return np.packbits(np.moveaxis(mask.astype(bool), 0, -1), axis=-1, bitorder="little")


def unpack_mask(packed: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 bits (or a crop of it) -> (29, H, W) uint8."""
    bits = np.unpackbits(packed, axis=-1, count=NUM_CLASSES, bitorder="little")
    return np.ascontiguousarray(np.moveaxis(bits, -1, 0))


def unpack_mask_batch(packed):
    """torch uint8 (B, 4, H, W) bits -> float32 (B, 29, H, W), on the
    tensor's device: training moves the packed masks (4 bytes a pixel) to
    the GPU and unpacks them there instead of on the data-loading CPUs."""
    import torch

    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)[None, None, :, None, None]
    bits = (packed[:, :, None] >> shifts) & 1  # (B, 4, 8, H, W), bit k of byte b = class 8b + k
    return bits.flatten(1, 2)[:, :NUM_CLASSES].float()


def build_cache(index_path: str | Path, out: str | Path, options: dict, progress: bool = True) -> Path:
    """Write the cache of every training image listed in the index."""
    index = read_index(index_path, "train")
    out = Path(out)
    with atomic_path(out) as staging:
        staging.mkdir(parents=True)
        rows = []
        for _, row in tqdm(index.iterrows(), total=len(index), desc="preprocess", disable=not progress):
            stem = Path(row["image_name"]).stem
            image = preprocess(read_image(row["image_path"]), options)
            np.save(staging / f"{stem}.image.npy", image)
            np.save(staging / f"{stem}.mask.npy", pack_mask(mask_for_row(row)))
            rows.append({"image_name": row["image_name"], "stem": stem, "height": image.shape[0], "width": image.shape[1]})
        pd.DataFrame(rows).to_csv(staging / "cache.csv", index=False)
    return out


class CacheEntry:
    """Lazy access to one cached image and its mask."""

    def __init__(self, cache_dir: str | Path, stem: str):
        self.image = np.load(Path(cache_dir) / f"{stem}.image.npy", mmap_mode="r")
        self.packed_mask = np.load(Path(cache_dir) / f"{stem}.mask.npy", mmap_mode="r")

    def mask(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """(29, h, w) uint8 mask of a window."""
        return unpack_mask(np.asarray(self.packed_mask[rows, cols]))
