"""Writing and validating the submission CSV (``image_name,class,rle``)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from . import rle
from .classes import CLASSES
from .errors import SubmissionError

COLUMNS = ["image_name", "class", "rle"]


def validate(path: str | Path, sizes: dict[str, tuple[int, int]] | None = None) -> int:
    """Check a submission file; return the number of images it covers.

    ``sizes`` maps image names to (height, width); when given, every image
    must be present and every run must fit inside its image. Raises
    SubmissionError listing the problems (at most 20 are spelled out).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as error:  # pandas raises several parser error types
        raise SubmissionError(f"{path}: not a readable CSV ({error})") from None
    if list(table.columns) != COLUMNS:
        raise SubmissionError(f"{path}: columns are {list(table.columns)}, expected {COLUMNS}")
    problems = []
    for name, group in table.groupby("image_name", sort=False):
        if "/" in name or "\\" in name:
            problems.append(f"{name}: image_name must be the bare file name, without folders")
        classes = group["class"].tolist()
        if sorted(classes) != sorted(CLASSES):
            missing = sorted(set(CLASSES) - set(classes))
            extra = sorted(set(classes) - set(CLASSES))
            duplicated = sorted({c for c in classes if classes.count(c) > 1})
            problems.append(
                f"{name}: needs one row per class (29); missing {missing}, unknown {extra}, repeated {duplicated}"
            )
        size = None
        if sizes is not None:
            if name not in sizes:
                problems.append(f"{name}: not an image of the test set")
            else:
                height, width = sizes[name]
                size = height * width
        for row_class, encoded in zip(group["class"], group["rle"]):
            try:
                rle.parse(encoded, size)
            except ValueError as error:
                problems.append(f"{name} / {row_class}: {error}")
    if sizes is not None:
        missing_images = sorted(set(sizes) - set(table["image_name"]))
        if missing_images:
            problems.append(f"{len(missing_images)} test image(s) have no rows, e.g. {missing_images[:3]}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SubmissionError(f"{path}: {len(problems)} problem(s):\n  {shown}{more}")
    return table["image_name"].nunique()


class SubmissionWriter:
    """Streams rows into a submission CSV, one image (29 rows) at a time."""

    def __init__(self, handle):
        self._writer = csv.writer(handle, lineterminator="\n")
        self._writer.writerow(COLUMNS)

    def write_image(self, image_name: str, masks) -> None:
        """Write the 29 rows of one image from a (29, H, W) binary mask."""
        self.write_rles(image_name, [rle.encode(mask) for mask in masks])

    def write_rles(self, image_name: str, rles: list[str]) -> None:
        """Write the 29 rows of one image from its RLE strings, in class order."""
        if len(rles) != len(CLASSES):
            raise ValueError(f"{image_name}: {len(rles)} RLE strings, expected {len(CLASSES)}")
        self._writer.writerows([image_name, class_name, text] for class_name, text in zip(CLASSES, rles))
