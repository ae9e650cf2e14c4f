"""Writing and validating the submission CSV (``image_name,class,rle``):
post-processing every test image's map into run-length encoded masks."""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import pandas as pd

from . import probmaps, rle
from .arguments import postprocess_source, progress
from .atomic import atomic_path
from .classes import CLASSES
from .data import read_index
from .ensemble import in_parallel
from .errors import MissingInput, SubmissionError
from .postprocess import PostprocessParams, class_mask, postprocess_params, smoothed

log = logging.getLogger("handbone")

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


def image_rles(path: str | Path, params: PostprocessParams) -> list[str]:
    """The 29 RLE strings of one image's map after post-processing."""
    (_, height, width), boxes, crops = probmaps.load_crops(path)
    rles = []
    for number, (box, crop) in enumerate(zip(boxes, crops)):
        (top, _, left, _), crop = smoothed(box, crop, params.sigma[number], (height, width))
        rles.append(rle.encode_box(class_mask(crop, number, params), top, left, width) if crop.size else "")
    return rles


def write_submission(
    prob_dir: str | Path,
    index_path: str | Path,
    out: str | Path,
    params: PostprocessParams,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Post-process every test image's map and write ``image_name,class,rle``.

    Images come in the index's order; a test image without a map is an error.
    """
    prob_dir = Path(prob_dir)
    names = list(read_index(index_path, "test")["image_name"])
    paths = [prob_dir / probmaps.map_filename(name) for name in names]
    missing = [f"{name} ({path})" for name, path in zip(names, paths) if not path.is_file()]
    if missing:
        raise MissingInput(f"no probability map for {len(missing)} test image(s), e.g. {missing[:3]}")
    with atomic_path(out) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = SubmissionWriter(handle)
            rles = in_parallel(lambda path: image_rles(path, params), paths, workers, "submission", progress)
            for name, image_rle in zip(names, rles):
                writer.write_rles(name, image_rle)
    return Path(out)


def validate_for_index(path: str | Path, index_path: str | Path | None = None) -> int:
    """``validate``, with the test images' sizes from the index CSV when given;
    logs and returns the number of images."""
    sizes = None
    if index_path:
        test = read_index(index_path, "test")
        sizes = {name: (int(h), int(w)) for name, h, w in zip(test["image_name"], test["height"], test["width"])}
    images = validate(path, sizes)
    log.info("%s is a valid submission (%d images, %d rows)", path, images, images * len(CLASSES))
    return images


# -- the command line: `handbone submit, validate-submission` (cli.py dispatches) --


def submit_command(args) -> None:
    write_submission(
        args.probabilities,
        args.index,
        args.out,
        postprocess_params(args),
        progress=progress(args),
        workers=args.threads,
    )
    validate_for_index(args.out, args.index)


def submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=submit_command)
    parser.add_argument("--probabilities", required=True, help="folder of .npz maps")
    parser.add_argument("--index", required=True)
    postprocess_source(parser, "params.json written by fit-postprocess")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1, help="images processed at once")


def validate_submission_command(args) -> None:
    validate_for_index(args.submission, args.index)


def validate_submission_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=validate_submission_command)
    parser.add_argument("submission")
    parser.add_argument("--index", help="index CSV: also check every test image is present and runs fit its size")
