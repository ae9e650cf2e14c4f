"""Combining the models' probability maps (submission.py writes the CSV).

Everything streams image by image and works on each class's crop (see
``probmaps``), so memory does not grow with the number of images and a
2048 x 2048 image costs what its bones cover, not 29 full planes.
"""

from __future__ import annotations

import argparse
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import probmaps
from .arguments import progress
from .atomic import atomic_path
from .classes import NUM_CLASSES
from .errors import DataError

log = logging.getLogger("handbone")


def uniform_weights(models: int) -> np.ndarray:
    return np.full((NUM_CLASSES, models), 1.0 / models)


def union_box(boxes) -> tuple[int, int, int, int]:
    boxes = [box for box in boxes if box[1] > box[0] and box[3] > box[2]]
    if not boxes:
        return 0, 0, 0, 0
    boxes = np.array(boxes)
    return int(boxes[:, 0].min()), int(boxes[:, 1].max()), int(boxes[:, 2].min()), int(boxes[:, 3].max())


def combine(maps, weights: np.ndarray | None = None, hard: bool = False):
    """One image's maps of several models, each ``(shape, boxes, crops)`` as
    from ``probmaps.load_crops``, combined per class into (shape, boxes, crops):

    - soft vote: sum of ``weights[class, model]`` x probability (weights of a
      class sum to 1; None: uniform), rounded to uint8;
    - hard vote (``hard``): 255 x (models whose probability > 0.5) // models,
      so the 0.5 threshold keeps pixels a strict majority voted for.
    """
    shapes = {tuple(shape) for shape, _, _ in maps}
    if len(shapes) != 1:
        raise DataError(f"maps of one image have different shapes {sorted(shapes)}")
    count = len(maps)
    weights = uniform_weights(count) if weights is None else np.asarray(weights, dtype=np.float64)
    boxes, crops = [], []
    for number in range(NUM_CLASSES):
        box = top, bottom, left, right = union_box([model_boxes[number] for _, model_boxes, _ in maps])
        total = np.zeros((bottom - top, right - left), dtype=np.float32 if not hard else np.uint16)
        for model, (_, model_boxes, model_crops) in enumerate(maps):
            crop = model_crops[number]
            if crop.size == 0:
                continue
            y0, y1, x0, x1 = model_boxes[number]
            window = total[y0 - top : y1 - top, x0 - left : x1 - left]
            if hard:
                window += crop > 127.5
            elif weights[number, model]:
                window += np.float32(weights[number, model]) * crop
        if hard:
            combined = (255 * total // count).astype(np.uint8)
        else:
            combined = np.minimum(total + 0.5, 255).astype(np.uint8)
        boxes.append(box)
        crops.append(combined)
    return shapes.pop(), boxes, crops


def read_weights(path: str | Path, models: list[str]) -> tuple[np.ndarray, bool]:
    """(29, models) weights and whether it is a hard vote, from weights.json,
    in the order of ``models`` (the folders' model names)."""
    document = json.loads(Path(path).read_text())
    if sorted(document["models"]) != sorted(models):
        raise DataError(f"{path} has weights for models {document['models']}, but the maps are of {models}")
    order = [document["models"].index(model) for model in models]
    weights = np.asarray(document["weights"], dtype=np.float64)[:, order]
    return weights, document["mode"] == "hard"


def _model_name(directory: Path) -> str:
    """results/predictions/{model}/test -> model."""
    return directory.parent.name


def in_parallel(function, items, workers: int, description: str, progress: bool):
    """``function`` over ``items`` in ``workers`` threads, results in order.
    Decompression, OpenCV and most numpy work release the GIL, so threads
    use several cores without copying maps between processes."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        yield from tqdm(pool.map(function, items), total=len(items), desc=description, disable=not progress)


def ensemble_maps(
    model_dirs: list[str | Path],
    out_dir: str | Path,
    weights_path: str | Path | None = None,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Combine the models' maps of every image (uniform soft vote, or the
    fitted weights / hard vote of ``weights_path``) into ``out_dir``."""
    model_dirs = [Path(directory) for directory in model_dirs]
    names = sorted(path.name for path in model_dirs[0].glob("*.npz"))
    for directory in model_dirs[1:]:
        if sorted(path.name for path in directory.glob("*.npz")) != names:
            raise DataError(f"{directory} and {model_dirs[0]} hold maps of different images")
    weights, hard = (None, False)
    if weights_path:
        weights, hard = read_weights(weights_path, [_model_name(directory) for directory in model_dirs])
    with atomic_path(out_dir) as staging:
        staging.mkdir(parents=True)

        def one_image(name):
            maps = [probmaps.load_crops(directory / name) for directory in model_dirs]
            shape, boxes, crops = combine(maps, weights, hard)
            probmaps.save_crops(staging / name, shape, boxes, crops, probmaps.image_name(model_dirs[0] / name))

        for _ in in_parallel(one_image, names, workers, "ensemble", progress):
            pass
    return Path(out_dir)


def mean_quantized(paths: list[str | Path]) -> np.ndarray:
    """The uint8 uniform mean of several maps of one image, as a full array."""
    (classes, height, width), boxes, crops = combine([probmaps.load_crops(path) for path in paths])
    result = np.zeros((classes, height, width), dtype=np.uint8)
    for number, ((top, bottom, left, right), crop) in enumerate(zip(boxes, crops)):
        result[number, top:bottom, left:right] = crop
    return result


# -- the command line: `handbone ensemble` (cli.py dispatches) --


def ensemble_command(args) -> None:
    ensemble_maps(args.inputs, args.out_dir, args.weights, progress=progress(args), workers=args.threads)
    log.info("ensemble of %d model(s) written to %s", len(args.inputs), args.out_dir)


def ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=ensemble_command)
    parser.add_argument(
        "--inputs", nargs="+", required=True, help="folders of .npz maps, one per model (.../{model}/test)"
    )
    parser.add_argument("--weights", help="weights.json written by fit-ensemble; without it, the uniform mean")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--threads", type=int, default=1, help="images processed at once")
