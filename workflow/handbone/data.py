"""The data layer: reading images and labels, indexing a data root, masks.

A data root has the competition layout::

    train/DCM/ID###/<stem>.png
    train/outputs_json/ID###/<stem>.json
    test/DCM/ID###/<stem>.png
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from .classes import CLASS_TO_INDEX, NUM_CLASSES
from .errors import DataError, MissingInput

log = logging.getLogger("handbone")

INDEX_COLUMNS = ["split", "person_id", "image_name", "image_path", "label_path", "height", "width"]


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG as a 2-D uint8 grayscale array.

    16-bit images are scaled to 8 bits; RGB(A) and palette images are turned
    into luminance, so every PNG mode the competition could hold is accepted.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        raise DataError(f"{path}: image file is missing or empty")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt or truncated?)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header, after checking the whole
    file's structure and checksums (PIL's verify: no decoding, ~30 ms for a
    2048 x 2048 PNG), so a truncated or corrupt file is named at indexing
    rather than half-way through training."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.verify()
    except Exception as error:  # PIL raises many types for bad files
        raise DataError(f"{path}: not a readable image, corrupt or truncated ({error})") from None
    return height, width


def read_annotations(path: str | Path) -> list[dict]:
    """Read a label file: a list of {"label", "points"} dicts, checked for schema."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read label file ({error})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: label file is not valid JSON ({error})") from None
    annotations = document.get("annotations") if isinstance(document, dict) else None
    if not isinstance(annotations, list):
        raise DataError(f"{path}: label file has no 'annotations' list")
    for number, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "label" not in annotation or "points" not in annotation:
            raise DataError(f"{path}: annotation {number} lacks 'label' or 'points'")
    return annotations


def check_annotations(
    path: str | Path, annotations: list[dict], height: int, width: int
) -> tuple[list[str], list[str]]:
    """(errors, warnings) about one image's annotations, each naming the file
    and the annotation.

    Errors make the file unusable (unknown class, points that are not finite
    numbers: there is no polygon to draw). Geometric faults (fewer than 3
    points, zero area, points farther outside the image than the tolerance)
    are warnings: the EDA reports them as ``polygon_invalid`` outliers, which
    are left out of training, so one bad polygon does not stop a run over
    hundreds of images; every computation on them clips them to the image.
    """
    errors, warnings = [], []
    for number, annotation in enumerate(annotations):
        label = annotation["label"]
        where = f"{path}: annotation {number} ({label!r})"
        if not isinstance(label, str) or label not in CLASS_TO_INDEX:
            errors.append(f"{where}: unknown class name")
            continue
        points, problem = parse_points(annotation["points"])
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        warning = polygon_warning(points, height, width)
        if warning:
            warnings.append(f"{where}: {warning}")
    return errors, warnings


def parse_points(raw) -> tuple[np.ndarray | None, str | None]:
    """A polygon's points as an (n, 2) float array, or None and why not."""
    try:
        points = np.asarray(raw, dtype=np.float64)
    except OverflowError:  # an integer literal too large for a float
        return None, "points are not finite numbers (too large for a float)"
    except (TypeError, ValueError):
        return None, "points are not numbers"
    if points.size == 0:
        return np.zeros((0, 2)), None
    if points.ndim != 2 or points.shape[1] != 2:
        return None, "points are not a list of [x, y] numbers"
    if not np.isfinite(points).all():
        return None, "points are not finite numbers (NaN or infinity)"
    return points, None


def polygon_warning(points: np.ndarray, height: int, width: int) -> str | None:
    """What is geometrically wrong with a polygon of finite points, if anything."""
    if len(points) == 0:
        return "polygon has no points"
    if len(points) < 3:
        return f"polygon has {len(points)} points, at least 3 are needed"
    if polygon_area(points) == 0:
        return "polygon has zero area"
    if polygon_area(clip_polygon(points, height, width)) == 0:
        return f"polygon lies entirely outside the {width}x{height} image"
    far = far_outside(points, height, width)
    if far.any():
        k = int(np.argmax(far))
        return (
            f"polygon lies partly outside the {width}x{height} image "
            f"(point {k} at [{points[k, 0]:.6g}, {points[k, 1]:.6g}])"
        )
    return None


# Clamped to this before any arithmetic, so that the product of two
# coordinates (areas, cross products) cannot overflow into inf or NaN even
# for a typo such as 1e300; it is far beyond any image.
COORDINATE_LIMIT = 1e150
# Converted labels can run a little past the image's edge (some tools put the
# edge at x = width, not width - 0.5); within this share of the image's
# larger side (at least a pixel) the bone is just cut by the border, farther
# out a point is an annotation fault.
OUTSIDE_TOLERANCE = 0.02


def far_outside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which points lie farther outside the image than the tolerance."""
    margin = max(1.0, OUTSIDE_TOLERANCE * max(height, width))
    low = (points < -0.5 - margin).any(axis=1)
    return low | (points[:, 0] > width - 0.5 + margin) | (points[:, 1] > height - 0.5 + margin)


def clip_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """The part of a polygon inside the image, [-0.5, width - 0.5] x
    [-0.5, height - 0.5] with pixel centres at integers (Sutherland-Hodgman).

    A polygon inside the image comes back unchanged; any other is bounded
    by the image, however far out its points are, so that rasterising,
    boxes, areas and centroids cannot overflow.
    """
    polygon = np.clip(np.asarray(points, np.float64).reshape(-1, 2), -COORDINATE_LIMIT, COORDINATE_LIMIT)
    for axis, bound, keep_above in (
        (0, -0.5, True),
        (0, width - 0.5, False),
        (1, -0.5, True),
        (1, height - 0.5, False),
    ):
        polygon = _clip_half_plane(polygon, axis, bound, keep_above)
    return polygon


def _clip_half_plane(polygon: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    offset = polygon[:, axis] - bound
    inside = offset >= 0 if keep_above else offset <= 0
    if inside.all() or not inside.any():
        return polygon if inside.all() else np.zeros((0, 2))
    kept = []
    count = len(polygon)
    for k in range(count):
        following = (k + 1) % count
        if inside[k]:
            kept.append(polygon[k])
        if inside[k] != inside[following]:
            crossing = polygon[k] + offset[k] / (offset[k] - offset[following]) * (polygon[following] - polygon[k])
            crossing[axis] = bound  # exactly on the border, whatever the rounding
            kept.append(crossing)
    return np.array(kept)


def polygon_area(points: np.ndarray) -> float:
    points = np.clip(points, -COORDINATE_LIMIT, COORDINATE_LIMIT)
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def fill_polygon(mask: np.ndarray, points: np.ndarray) -> None:
    """Fill a polygon into a 2-D uint8 mask with 1, its vertices included (as
    cv2.fillPoly); the parts outside the mask are clipped off first, so any
    finite coordinates are safe."""
    visible = clip_polygon(points, *mask.shape)
    if len(visible):
        cv2.fillPoly(mask, [np.round(visible).astype(np.int32).reshape(-1, 1, 2)], 1)


def rasterize(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """A (29, height, width) uint8 multi-label mask from polygon annotations.

    Each class's polygons are filled into its own channel, so overlapping
    bones keep both labels. Unknown labels and points that are not finite
    numbers are skipped (the index rejects them); polygons are clipped to
    the image.
    """
    mask = np.zeros((NUM_CLASSES, height, width), dtype=np.uint8)
    for annotation in annotations:
        label = annotation["label"]
        index = CLASS_TO_INDEX.get(label) if isinstance(label, str) else None
        points, _ = parse_points(annotation["points"])
        if index is not None and points is not None and len(points) >= 3:  # the EDA reports shorter ones as invalid
            fill_polygon(mask[index], points)
    return mask


def _person_id(path: Path, split: str, root: Path) -> str:
    parts = path.relative_to(root / split).parts
    # train/DCM/ID001/x.png -> parts = ("DCM", "ID001", "x.png")
    return parts[1] if len(parts) == 3 else ""


def index_data_root(root: str | Path) -> pd.DataFrame:
    """Index a data root in the competition layout and validate it.

    Raises DataError listing every problem found (each naming its file), so a
    user can fix a data set in one pass instead of one error per run.
    """
    root = Path(root)
    if not (root / "train" / "DCM").is_dir():
        raise DataError(f"{root}: not a data root (no train/DCM folder; see docs/data.md, 'Use your own data')")
    problems: list[str] = []
    rows = []
    for split in ("train", "test"):
        image_dir = root / split / "DCM"
        images = sorted(image_dir.glob("*/*.png")) if image_dir.is_dir() else []
        if split == "test" and not images:
            problems.append(f"{image_dir}: no test images (expected test/DCM/ID###/*.png)")
        for image_path in images:
            label_path = root / split / "outputs_json" / image_path.parent.name / f"{image_path.stem}.json"
            height = width = 0
            try:
                height, width = image_size(image_path)
            except DataError as error:
                problems.append(str(error))
            if split == "train":
                if not label_path.is_file():
                    problems.append(f"{image_path}: no label file (expected {label_path})")
                elif height:
                    try:
                        annotations = read_annotations(label_path)
                        errors, warnings = check_annotations(label_path, annotations, height, width)
                        problems.extend(errors)
                        for warning in warnings:
                            log.warning("%s", warning)
                    except DataError as error:
                        problems.append(str(error))
            rows.append(
                {
                    "split": split,
                    "person_id": _person_id(image_path, split, root),
                    "image_name": image_path.name,
                    "image_path": str(image_path.resolve()),
                    "label_path": str(label_path.resolve()) if split == "train" else "",
                    "height": height,
                    "width": width,
                }
            )
        if split == "train":
            for label_path in sorted((root / "train" / "outputs_json").glob("*/*.json")):
                image_path = root / "train" / "DCM" / label_path.parent.name / f"{label_path.stem}.png"
                if not image_path.is_file():
                    problems.append(f"{label_path}: label file without an image (expected {image_path})")
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    duplicated = index[index.duplicated("image_name", keep=False)]
    for name, group in duplicated.groupby("image_name"):
        paths = ", ".join(group["image_path"])
        problems.append(f"{name}: image name used more than once ({paths}); the submission key is the bare file name")
    if problems:
        raise DataError(f"{len(problems)} problem(s) in data root {root}:\n  " + "\n  ".join(problems))
    return index


def write_index(root: str | Path, out: str | Path) -> pd.DataFrame:
    """``handbone index``: the index CSV (INDEX_COLUMNS) of a data root."""
    from .atomic import write_table

    index = index_data_root(root)
    write_table(index, out, float_format=None)
    counts = index["split"].value_counts().to_dict()
    log.info("indexed %s: %d train, %d test images -> %s", root, counts.get("train", 0), counts.get("test", 0), out)
    return index


def read_index(path: str | Path, split: str | None = None) -> pd.DataFrame:
    index = pd.read_csv(path, dtype={"person_id": str, "label_path": str}, keep_default_na=False)
    return index[index["split"] == split].reset_index(drop=True) if split else index


FOLD_COLUMNS = ["image_name", "person_id", "fold", "excluded", "exclusion_reason"]


def read_folds(path: str | Path, fold: int | None = None) -> pd.DataFrame:
    """The folds table written by ``handbone split`` (FOLD_COLUMNS); with
    ``fold``, also check that the table has that fold."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: folds table does not exist (written by `handbone split`)")
    folds = pd.read_csv(path, dtype={"person_id": str, "exclusion_reason": str}, keep_default_na=False)
    missing = [column for column in FOLD_COLUMNS[:3] if column not in folds]
    if missing:
        raise DataError(f"{path}: not a folds table, no column {', '.join(missing)}")
    if "excluded" not in folds:
        folds["excluded"] = False
    folds["excluded"] = folds["excluded"].astype(str).str.lower().isin(["true", "1"])
    if fold is not None and fold not in set(folds["fold"]):
        raise DataError(f"fold {fold} is not in {path} (folds: {sorted(set(folds['fold']))})")
    return folds


def usable_images(folds: pd.DataFrame) -> pd.DataFrame:
    """The rows of the images that are not excluded (wrong labels)."""
    return folds[~folds["excluded"]]


def mask_for_row(row) -> np.ndarray:
    return rasterize(read_annotations(row["label_path"]), int(row["height"]), int(row["width"]))


# -- the command line: `handbone index` (cli.py dispatches) --


def index_command(args) -> None:
    write_index(args.data_root, args.out)


def index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=index_command)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True, help="index CSV to write")
