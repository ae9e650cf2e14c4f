"""Run-length encoding in the competition's convention.

The mask is flattened row-major; runs are written as space-separated
``start length`` pairs with 1-based starts; an empty mask is "".
"""

from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D binary mask (any dtype, non-zero is foreground)."""
    mask = np.asarray(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return ""
    # Only the rows between the first and last foreground row are scanned:
    # a bone covers a small band of a 2048 x 2048 image.
    return encode_box(mask[rows[0] : rows[-1] + 1], rows[0], 0, mask.shape[1])


def encode_box(crop: np.ndarray, top: int, left: int, width: int) -> str:
    """Encode a mask given as the crop at (``top``, ``left``) of an image
    ``width`` pixels wide (everything outside the crop is background)."""
    height, crop_width = crop.shape
    if crop.size == 0:
        return ""
    # One background column on each side gives every run of a crop row
    # exactly one rising and one falling edge, within that row.
    padded = np.zeros((height, crop_width + 2), dtype=bool)
    padded[:, 1:-1] = crop
    flat = padded.reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if edges.size == 0:
        return ""
    row, column = np.divmod(edges, crop_width + 2)
    positions = (row + top) * width + (column - 1 + left)  # 0-based, in the full image
    starts, ends = positions[0::2], positions[1::2]
    if left == 0 and crop_width == width:
        # A run reaching the right border continues on the next row's left
        # border in the flattened image: join such runs.
        joined = np.flatnonzero(starts[1:] == ends[:-1])
        if joined.size:
            keep = np.ones(starts.size, dtype=bool)
            keep[joined + 1] = False
            ends = np.delete(ends, joined)
            starts = starts[keep]
    pairs = np.empty(starts.size * 2, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def parse(rle: str, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse an RLE string into 0-based starts and lengths, checking syntax.

    Raises ValueError when the string is not pairs of positive integers, when
    runs overlap or are out of order, or when a run ends past ``size``.
    """
    text = rle.strip() if isinstance(rle, str) else ""
    if not text:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    tokens = text.split()
    if len(tokens) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(tokens)})")
    try:
        numbers = np.array([int(token) for token in tokens], dtype=np.int64)
    except ValueError as error:
        raise ValueError(f"RLE holds a value that is not an integer: {error}") from None
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if (starts < 0).any():
        raise ValueError("RLE start below 1")
    if (lengths < 1).any():
        raise ValueError("RLE run length below 1")
    ends = starts + lengths
    if (starts[1:] < ends[:-1]).any():
        raise ValueError("RLE runs overlap or are not in increasing order")
    if size is not None and ends[-1] > size:
        raise ValueError(f"RLE run ends at pixel {int(ends[-1])}, past the image's {size} pixels")
    return starts, lengths


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode an RLE string into a uint8 mask of ``shape`` (height, width)."""
    height, width = shape
    starts, lengths = parse(rle, height * width)
    # A +1/-1 difference array turned into a mask by a cumulative sum avoids a
    # Python loop over runs.
    delta = np.zeros(height * width + 1, dtype=np.int8)
    delta[starts] += 1
    delta[starts + lengths] -= 1
    return np.cumsum(delta[:-1], dtype=np.int8).astype(np.uint8).reshape(height, width)
