"""Overlay pictures: every predicted bone in its own colour on the image,
for a person to judge predictions where no labels exist."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .arguments import image_source, postprocess_source, progress
from .atomic import atomic_path
from .classes import CLASSES, NUM_CLASSES
from .data import read_image
from .errors import MissingInput
from .postprocess import PostprocessParams, class_mask, postprocess_params, smoothed

log = logging.getLogger("handbone")


def class_colours() -> np.ndarray:
    """(29, 3) uint8 BGR colours, hues spread by the golden ratio so that
    neighbouring bones (consecutive classes) differ clearly."""
    hues = (np.arange(NUM_CLASSES) * 0.618034 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(NUM_CLASSES, 220, np.uint8), np.full(NUM_CLASSES, 255, np.uint8)], axis=1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


def masks_of(quantized: np.ndarray, params: PostprocessParams | None = None) -> np.ndarray:
    """(29, H, W) bool masks of a uint8 map, post-processed by ``params``
    (default: probability above 0.5)."""
    params = params or PostprocessParams.plain()
    whole = (0, quantized.shape[1], 0, quantized.shape[2])
    return np.stack(
        [
            class_mask(smoothed(whole, channel, params.sigma[number], channel.shape)[1], number, params)
            for number, channel in enumerate(quantized)
        ]
    )


def overlay_image(image: np.ndarray, masks: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """BGR picture of a grayscale uint8 image with each class's mask filled
    half-transparent and outlined, so overlapping bones stay visible."""
    if masks.shape[1:] != image.shape:
        raise ValueError(f"masks of shape {masks.shape[1:]} do not match the image's {image.shape}")
    picture = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR).astype(np.float32)
    colours = class_colours()
    thickness = max(1, round(max(image.shape) / 700))
    for number in range(NUM_CLASSES):
        mask = masks[number]
        if not mask.any():
            continue
        picture[mask] = (1 - alpha) * picture[mask] + alpha * colours[number]
    picture = picture.astype(np.uint8)
    for number in range(NUM_CLASSES):
        if masks[number].any():
            contours, _ = cv2.findContours(masks[number].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(picture, contours, -1, tuple(int(value) for value in colours[number]), thickness)
    return picture


def _legend(height: int, present: np.ndarray) -> np.ndarray:
    """A column naming each class in its colour; absent classes in grey."""
    width, colours = 150, class_colours()
    legend = np.full((height, width, 3), 24, np.uint8)
    step = height / (NUM_CLASSES + 1)
    scale = max(0.3, min(0.55, step / 30))
    for number, name in enumerate(CLASSES):
        y = int((number + 1) * step)
        colour = tuple(int(value) for value in colours[number]) if present[number] else (110, 110, 110)
        cv2.rectangle(legend, (6, y - int(step * 0.35)), (20, y + int(step * 0.25)), colour, -1)
        cv2.putText(legend, name, (26, y + int(step * 0.2)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return legend


def overlay_items(images: list[tuple[str, Path]], map_dirs: list) -> list[tuple[str, Path, list[Path]]]:
    """(image name, image path, its map in each of ``map_dirs``) for
    ``write_overlays``; an image without a map in every folder is an error."""
    from .probmaps import map_filename

    items = []
    for name, path in images:
        map_paths = [Path(directory) / map_filename(name) for directory in map_dirs]
        missing = [str(map_path) for map_path in map_paths if not map_path.is_file()]
        if missing:
            raise MissingInput(f"no probability map for {name}: {', '.join(missing)}")
        items.append((name, path, map_paths))
    return items


def write_overlays(
    items: list[tuple[str, Path, list[Path]]],
    out_dir: str | Path,
    params: PostprocessParams | None = None,
    max_side: int = 1024,
    progress: bool = True,
) -> Path:
    """One PNG per (image name, image path, map files): the overlay of the
    maps' mean, scaled to at most ``max_side`` pixels, with a legend. Maps
    are read one image at a time. The folder appears only when every
    picture is written."""
    from .ensemble import mean_quantized
    from .probmaps import map_filename

    with atomic_path(out_dir) as staging:
        staging.mkdir(parents=True)
        for name, image_path, map_paths in tqdm(items, desc="overlays", disable=not progress):
            masks = masks_of(mean_quantized(map_paths), params)
            picture = overlay_image(read_image(image_path), masks)
            factor = max_side / max(picture.shape[:2])
            if factor < 1:
                size = (round(picture.shape[1] * factor), round(picture.shape[0] * factor))
                picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
            present = masks.reshape(NUM_CLASSES, -1).any(axis=1)
            picture = np.concatenate([picture, _legend(picture.shape[0], present)], axis=1)
            target = staging / map_filename(name).replace(".npz", ".png")
            if not cv2.imwrite(str(target), picture):
                raise OSError(f"{target}: could not write the overlay")
    return Path(out_dir)


# -- the command line: `handbone overlays` (cli.py dispatches) --


def overlays_command(args) -> None:
    # predict.py imports PyTorch: not at the top, where analysis.py, importing masks_of, would pay for it.
    from .predict import images_of

    images = images_of(args)
    items = overlay_items(images[: args.limit] if args.limit else images, args.maps)
    write_overlays(items, args.out_dir, postprocess_params(args), args.max_side, progress(args))
    log.info("%d overlay pictures written to %s", len(items), args.out_dir)


def overlays_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=overlays_command)
    image_source(parser)
    parser.add_argument(
        "--maps", nargs="+", required=True, help="folders of .npz maps (one per model; their mean is drawn)"
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    postprocess_source(parser, "params.json written by fit-postprocess (the submission's masks)")
    parser.add_argument("--max-side", type=int, default=1024, help="longest side of a picture in pixels")
    parser.add_argument("--out-dir", required=True)
