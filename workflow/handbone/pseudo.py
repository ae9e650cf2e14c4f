"""Pseudo-labels: test images labelled by the previous round's models.

Round r's fold-k models train on fold k's training images plus test images
labelled by round r-1's fold-k models (the mean of every model of that
round). Those models never saw fold k's validation images, so nothing
learnt from the labels that fold k is validated on reaches its round-r
model through the pseudo-labels, and the out-of-fold scores of the rounds
stay comparable.

A test image becomes a training image only if the models are confident
about it: the mean over classes of ``class_confidence``, the Dice they
expect of their own mask (averaged like the competition's score);
its uncertain pixels (probability between 1 - c and c) can be left out of
the loss. The labels are written as a cache in the layout of the preprocessing
cache (``preprocess``), so training reads them like real ones:

- ``<stem>.image.npy``: the preprocessed image, in its frame (frames.py)
  like the training cache's;
- ``<stem>.mask.npy``: uint8 (H, W, 4) packed class bits, or (H, W, 8)
  when uncertain pixels are ignored: bytes 4-7 hold one "ignore" bit per
  class, packed the same way;
- ``cache.csv``: the kept images (with their person IDs and CRC-32s);
- ``confidence.csv``: every test image with its confidence and whether it
  was kept.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config
from .arguments import prediction_arguments, progress
from .atomic import atomic_path
from .cache import network_input, write_entry
from .classes import CLASSES
from .data import read_image, read_index
from .errors import ConfigError, DataError
from .frames import FRAME_FIELDS, frame_for, read_frames, read_unsure_sides, unsure_side_confidence
from .masks import pack_mask
from .metrics import class_confidence
from .predict import inference_options, load_model_groups, mean_probabilities, prediction_options, surer_orientation

log = logging.getLogger("handbone")


def _check_pixel_confidence(pixel_confidence: float) -> None:
    if not 0.5 < pixel_confidence <= 1.0:
        raise ConfigError(f"pixel confidence must be in (0.5, 1], got {pixel_confidence}")


def pseudo_label(probabilities: np.ndarray, pixel_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(mask, uncertain) of a (29, H, W) map: the mask at 0.5, and the pixels
    whose probability lies strictly between 1 - c and c."""
    _check_pixel_confidence(pixel_confidence)
    mask = probabilities >= 0.5
    uncertain = (probabilities > 1 - pixel_confidence) & (probabilities < pixel_confidence)
    return mask, uncertain


def pack_pseudo_mask(mask: np.ndarray, uncertain: np.ndarray | None) -> np.ndarray:
    """(H, W, 4) packed mask bits, followed by 4 bytes of packed ignore bits
    when ``uncertain`` is given."""
    packed = pack_mask(mask)
    return packed if uncertain is None else np.concatenate([packed, pack_mask(uncertain)], axis=-1)


def write_pseudo_labels(
    index_path: str | Path,
    checkpoints: list[str | Path],
    out_dir: str | Path,
    preprocess_options: dict,
    device,
    confidence: float,
    pixel_confidence: float,
    ignore_uncertain: bool,
    progress: bool = True,
    frames_path=None,
    **predict_options,
) -> pd.DataFrame:
    """Predict every test image of the index with the mean of
    ``checkpoints`` and write the confident ones as a pseudo-label cache
    (module docstring); returns the table of every image's confidence.
    Each image is predicted and kept in its frame from ``frames_path`` (else
    estimated from it)."""
    preprocess_options = config.section("preprocess", preprocess_options, "preprocess options")
    _check_pixel_confidence(pixel_confidence)
    if not 0.0 <= confidence <= 1.0:
        raise ConfigError(f"confidence must be in [0, 1], got {confidence}")
    test = read_index(index_path, "test")
    if test.empty:
        raise DataError(f"{index_path} lists no test image to pseudo-label")
    groups = load_model_groups(checkpoints, device, preprocess_options)
    known = read_frames(frames_path) if frames_path else None
    unsure = read_unsure_sides(frames_path) if frames_path else {}
    check_sides = preprocess_options["unify_side"] == "right"
    predict_options = inference_options(preprocess_options, **predict_options)
    rows, kept = [], []
    with atomic_path(out_dir) as staging:
        staging.mkdir(parents=True)
        for _, row in tqdm(test.iterrows(), total=len(test), desc="pseudo-label", disable=not progress):
            raw = read_image(row["image_path"])
            frame = frame_for(row["image_name"], raw, preprocess_options, known)
            # Kept in the frame: the pseudo-labels train networks that see this frame.
            image = network_input(raw, frame, preprocess_options)
            probabilities = mean_probabilities(groups, image, device, **predict_options)
            side_confidence = unsure_side_confidence(row["image_name"], raw, known, unsure) if check_sides else None
            if side_confidence is not None:
                # As the test predictions: the orientation the models are surer of.
                frame, image, probabilities, _ = surer_orientation(
                    row["image_name"],
                    raw,
                    frame,
                    image,
                    probabilities,
                    groups,
                    device,
                    predict_options,
                    preprocess_options,
                    side_confidence,
                )
            per_class = class_confidence(probabilities)
            score = float(per_class.mean())
            mask, uncertain = pseudo_label(probabilities, pixel_confidence)
            rows.append(
                {
                    "image_name": row["image_name"],
                    "person_id": row["person_id"],
                    "confidence": score,
                    "kept": score >= confidence,
                    "weakest_class": CLASSES[int(np.argmin(per_class))],
                    "weakest_class_confidence": float(per_class.min()),
                    "uncertain_pixels": int(uncertain.any(axis=0).sum()),
                }
            )
            if score < confidence:
                continue
            packed = pack_pseudo_mask(mask, uncertain if ignore_uncertain else None)
            kept.append({**write_entry(staging, row, image, packed, frame), "person_id": row["person_id"]})
        table = pd.DataFrame(rows)
        table.to_csv(staging / "confidence.csv", index=False, float_format="%.6f")
        columns = [
            "image_name",
            "stem",
            "person_id",
            "height",
            "width",
            "image_height",
            "image_width",
            *FRAME_FIELDS,
            "image_path",
            "label_path",
            "image_crc",
            "mask_crc",
        ]
        pd.DataFrame(kept, columns=columns).to_csv(staging / "cache.csv", index=False)
    log.info(
        "%d of %d test images confident enough (>= %.3f) to train on -> %s", len(kept), len(test), confidence, out_dir
    )
    if not kept:
        log.warning(
            "no test image reached confidence %.3f (the best: %.3f); this fold of the next round trains on "
            "real images only: lower pseudo_label.confidence to use some",
            confidence,
            table["confidence"].max(),
        )
    return table


# -- the command line: `handbone pseudo-label` (cli.py dispatches) --


def pseudo_label_command(args) -> None:
    from .devices import torch_device

    preprocess, options = prediction_options(args)
    device = torch_device(args.threads)
    write_pseudo_labels(
        args.index,
        args.checkpoints,
        args.out_dir,
        preprocess,
        device,
        args.confidence,
        args.pixel_confidence,
        args.ignore_uncertain,
        progress(args),
        frames_path=args.frames,
        **options,
    )


def pseudo_label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=pseudo_label_command)
    parser.add_argument("--index", required=True, help="index CSV (its test images are labelled)")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="the previous round's models of one fold")
    parser.add_argument(
        "--confidence",
        type=float,
        default=config.default("pseudo_label.confidence"),
        help="keep an image if the Dice the models expect of their own mask (mean over classes) is at least this "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--pixel-confidence",
        type=float,
        default=config.default("pseudo_label.pixel_confidence"),
        help="a pixel is sure if its probability is >= this or <= 1 - this (default: %(default)s)",
    )
    parser.add_argument(
        "--ignore-uncertain",
        action=argparse.BooleanOptionalAction,
        default=config.default("pseudo_label.ignore_uncertain"),
        help="mark unsure pixels so that training leaves them out of the loss (default: %(default)s)",
    )
    prediction_arguments(parser)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
