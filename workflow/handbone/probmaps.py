"""Probability maps on disk: one compact ``.npz`` per image.

A float32 map of 29 x 2048 x 2048 is 486 MB; almost all of it is near zero,
since each bone covers a small part of the image. The file therefore holds,
per class, only the bounding box of its non-negligible probabilities
(at least ``FLOOR``/255), quantised to uint8 (probability x 255, rounded:
at most 0.002 off; smaller values read as 0):

- ``shape``: int64 (3,), the full map's (29, H, W);
- ``boxes``: int64 (29, 4), per class (top, bottom, left, right), empty
  when top == bottom;
- ``class_00`` ... ``class_28``: uint8 crops, one per class box, delta
  coded along x and then along y (modulo 256, like PNG's filters: smooth
  probabilities become runs of small numbers that compress about twice as
  well); two cumulative sums in uint8 restore them exactly;
- ``image_name``: the image's file name.

Outside a class's box, and below the floor inside it, the probability
reads as 0. ``load`` returns the full
map or a window of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path

FLOOR = 2  # quantised probabilities below this (p < 0.006) are dropped


def quantize(probabilities: np.ndarray) -> np.ndarray:
    """float probabilities -> uint8, probability x 255 rounded (half up)."""
    scaled = np.multiply(probabilities, 255, dtype=np.float32)
    np.clip(scaled, 0, 254.5, out=scaled)
    scaled += 0.5
    return scaled.astype(np.uint8)


def bounding_box(channel: np.ndarray, minimum: int = FLOOR) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the values of at least ``minimum``;
    all zeros when there are none."""
    if channel.size == 0:
        return 0, 0, 0, 0
    rows = np.flatnonzero(channel.max(axis=1) >= minimum)
    if rows.size == 0:
        return 0, 0, 0, 0
    cols = np.flatnonzero(channel[rows[0] : rows[-1] + 1].max(axis=0) >= minimum)
    return int(rows[0]), int(rows[-1] + 1), int(cols[0]), int(cols[-1] + 1)


def _delta_encode(crop: np.ndarray) -> np.ndarray:
    along_x = np.diff(crop, axis=1, prepend=np.uint8(0))
    return np.diff(along_x, axis=0, prepend=np.uint8(0))


def _delta_decode(coded: np.ndarray) -> np.ndarray:
    # The sum down the rows runs row by row: numpy's cumsum along axis 0 of
    # a C-ordered array is about 10x slower than adding whole rows.
    decoded = np.array(coded, dtype=np.uint8)
    for row in range(1, decoded.shape[0]):
        np.add(decoded[row], decoded[row - 1], out=decoded[row])
    return np.cumsum(decoded, axis=1, dtype=np.uint8)


def save(path: str | Path, probabilities: np.ndarray, image_name: str) -> None:
    """Save float probabilities (or already quantised uint8), atomically."""
    data = probabilities if probabilities.dtype == np.uint8 else quantize(probabilities)
    height, width = data.shape[1:]
    save_crops(path, data.shape, [(0, height, 0, width)] * len(data), list(data), image_name)


def save_crops(path: str | Path, shape, boxes, crops, image_name: str) -> None:
    """Save a map given per class as a uint8 crop and its (top, bottom,
    left, right) box; each crop is trimmed to its values of at least FLOOR."""
    stored_boxes = np.zeros((len(crops), 4), dtype=np.int64)
    arrays = {}
    for number, ((top, _, left, _), crop) in enumerate(zip(boxes, crops)):
        inner_top, inner_bottom, inner_left, inner_right = bounding_box(crop)
        trimmed = crop[inner_top:inner_bottom, inner_left:inner_right].copy()
        trimmed[trimmed < FLOOR] = 0  # negligible values inside a box, too: zeros compress best
        if trimmed.size:
            stored_boxes[number] = (top + inner_top, top + inner_bottom, left + inner_left, left + inner_right)
        arrays[f"class_{number:02d}"] = _delta_encode(trimmed)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez_compressed(
                handle,
                shape=np.array(shape, dtype=np.int64),
                boxes=stored_boxes,
                image_name=np.array(image_name),
                **arrays,
            )


def load_crops(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray, list[np.ndarray]]:
    """The map as stored: (29, H, W), the (29, 4) boxes and the uint8 crops.
    Working on crops skips the empty rest of the image."""
    with np.load(path) as archive:
        shape = tuple(int(value) for value in archive["shape"])
        boxes = archive["boxes"]
        crops = [_delta_decode(archive[f"class_{number:02d}"]) for number in range(shape[0])]
    return shape, boxes, crops


def load_quantized(path: str | Path, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 (29, h, w) map: the whole image, or ``window`` = (top, bottom,
    left, right) of it."""
    (classes, height, width), boxes, crops = load_crops(path)
    top, bottom, left, right = window if window is not None else (0, height, 0, width)
    result = np.zeros((classes, bottom - top, right - left), dtype=np.uint8)
    for number, ((box_top, box_bottom, box_left, box_right), crop) in enumerate(zip(boxes, crops)):
        y0, y1 = max(top, box_top), min(bottom, box_bottom)
        x0, x1 = max(left, box_left), min(right, box_right)
        if y0 >= y1 or x0 >= x1:
            continue
        result[number, y0 - top : y1 - top, x0 - left : x1 - left] = crop[
            y0 - box_top : y1 - box_top, x0 - box_left : x1 - box_left
        ]
    return result


def load(path: str | Path, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The map as float32 probabilities in [0, 1]."""
    return load_quantized(path, window).astype(np.float32) / 255.0


def map_filename(image_name: str) -> str:
    """The map's file name for an image: its stem, with the folders of a
    relative path joined by '__' (test images are bare, unique file names)."""
    path = Path(image_name)
    return "__".join(path.parent.parts + (path.stem,)) + ".npz"


def image_name(path: str | Path) -> str:
    with np.load(path) as archive:
        return str(archive["image_name"])
