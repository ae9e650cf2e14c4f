"""Predicting probability maps: test images, out-of-fold validation images
and extra image folders (e.g. real radiographs without labels)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config, probmaps
from .arguments import image_source, prediction_arguments, progress
from .atomic import atomic_path
from .cache import network_input
from .data import read_folds, read_image, read_index
from .errors import ConfigError, DataError
from .frames import (
    SIDE_CHECKS,
    frame_for,
    networks_overrule,
    read_frames,
    read_unsure_sides,
    to_original,
    unsure_side_confidence,
)
from .inference import predict_probabilities
from .metrics import orientation_confidence
from .model import check_checkpoint, load_checkpoint

log = logging.getLogger("handbone")


def split_images(index_path: str | Path, split: str) -> list[tuple[str, Path]]:
    """(image name, path) of every image of ``split`` in the index."""
    index = read_index(index_path, split)
    return [(name, Path(path)) for name, path in zip(index["image_name"], index["image_path"])]


def validation_images(index_path: str | Path, folds_path: str | Path, fold: int) -> list[tuple[str, Path]]:
    """The training images of ``fold``: what that fold's model never saw.

    Excluded images are predicted too, so the out-of-fold maps cover every
    training image once; whoever scores them decides whether to skip them.
    """
    folds = read_folds(folds_path, fold)
    names = set(folds.loc[folds["fold"] == fold, "image_name"])
    return [(name, path) for name, path in split_images(index_path, "train") if name in names]


def folder_images(folder: str | Path) -> list[tuple[str, Path]]:
    """Every PNG under ``folder`` (recursively), named by its relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder does not exist")
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() == ".png" and path.is_file())
    if not paths:
        raise DataError(f"{folder}: no PNG images in this folder")
    return [(path.relative_to(folder).as_posix(), path) for path in paths]


def load_model_groups(checkpoints: list[str | Path], device, preprocess_options: dict) -> list[tuple[list, int, str]]:
    """The checkpoints' models, grouped by the input they were trained on:
    [(models, input_size, input_mode)]. Models of one group share each
    forward pass's input; groups are predicted one after the other. Each
    checkpoint must have been trained on images preprocessed with
    ``preprocess_options`` (the complete section), for the classes of
    classes.py (``model.check_checkpoint``)."""
    groups: dict[tuple[int, str], list] = {}
    for path in checkpoints:
        model, checkpoint = load_checkpoint(path, device)
        check_checkpoint(path, checkpoint, preprocess_options)
        groups.setdefault((checkpoint["input_size"], checkpoint.get("input_mode", "resize")), []).append(model)
    return [(models, input_size, mode) for (input_size, mode), models in groups.items()]


def mean_probabilities(groups: list[tuple[list, int, str]], image: np.ndarray, device, **options) -> np.ndarray:
    """The mean over every model of ``groups`` (``load_model_groups``) of its
    probabilities on a preprocessed image; ``options`` go to
    ``inference.predict_probabilities`` (hflip, scales, overlap, batch_size,
    precision)."""
    if len(groups) == 1:
        models, input_size, mode = groups[0]
        return predict_probabilities(models, image, input_size, device, mode=mode, **options)
    total, count = None, 0
    for models, input_size, mode in groups:
        probabilities = predict_probabilities(models, image, input_size, device, mode=mode, **options)
        probabilities *= len(models)
        total = probabilities if total is None else np.add(total, probabilities, out=total)
        count += len(models)
    return total / count


def inference_options(preprocess_options: dict, **given) -> dict:
    """The options of ``inference.predict_probabilities`` (hflip, scales,
    overlap, batch_size, precision): those given, the rest config.yaml's
    predict values, checked; hflip resolved under the (complete) preprocess
    section (``config.tta_hflip``)."""
    chosen = {key: (list(value) if key == "scales" else value) for key, value in given.items() if value is not None}
    predict_options = config.section("predict", chosen, "predict options")
    options = {key: predict_options[key] for key in ("hflip", "scales", "overlap", "batch_size", "precision")}
    options["hflip"] = config.tta_hflip(options["hflip"], preprocess_options)
    return options


def predict_images(
    images: list[tuple[str, Path]],
    checkpoints: list[str | Path],
    out_dir: str | Path,
    preprocess_options: dict,
    device,
    hflip: bool | None = None,
    progress: bool = True,
    scales=None,
    overlap: float | None = None,
    batch_size: int | None = None,
    description: str = "predict",
    frames_path=None,
    precision: str | None = None,
) -> Path:
    """Write one map per image (``probmaps.map_filename``): the mean of the
    checkpoints' probabilities, with horizontal-flip TTA when ``hflip`` and
    multi-scale TTA over ``scales`` (see inference.predict_probabilities).
    Each image is predicted in its frame (from ``frames_path``, else
    estimated from it; frames.py) and its map brought back to the image.
    With one-hand frames (unify_side right), an image whose side is unsure
    (``frames.unsure_side_confidence``) is predicted in both orientations and
    the other orientation is kept when the models are surer of it by enough
    to outweigh the side's confidence (``frames.networks_overrule``);
    ``side_checks.csv`` beside the maps records each such image. Options
    left out (``precision``: the forward passes' autocast precision, see
    ``devices.autocast_dtype``) take config.yaml's predict values. The
    folder appears only when every map is written."""
    preprocess_options = config.section("preprocess", preprocess_options, "preprocess options")
    known = read_frames(frames_path) if frames_path else None
    unsure = read_unsure_sides(frames_path) if frames_path else {}
    check_sides = preprocess_options["unify_side"] == "right"
    side_checks = []
    groups = load_model_groups(checkpoints, device, preprocess_options)
    filenames = [probmaps.map_filename(name) for name, _ in images]
    shared = sorted({filename for filename in filenames if filenames.count(filename) > 1})
    if shared:
        names = [name for (name, _), filename in zip(images, filenames) if filename in shared]
        raise DataError(f"images {names[:6]} would share map file names {shared[:3]} in {out_dir}")
    options = inference_options(
        preprocess_options, hflip=hflip, scales=scales, overlap=overlap, batch_size=batch_size, precision=precision
    )
    with atomic_path(out_dir) as staging:
        staging.mkdir(parents=True)
        for (name, path), filename in tqdm(
            zip(images, filenames), total=len(images), desc=description, disable=not progress
        ):
            raw = read_image(path)
            frame = frame_for(name, raw, preprocess_options, known)
            image = network_input(raw, frame, preprocess_options)
            probabilities = mean_probabilities(groups, image, device, **options)
            confidence = unsure_side_confidence(name, raw, known, unsure) if check_sides else None
            if confidence is not None:
                frame, _, probabilities, check = surer_orientation(
                    name, raw, frame, image, probabilities, groups, device, options, preprocess_options, confidence
                )
                side_checks.append(check)
            probmaps.save(staging / filename, to_original(probabilities, frame), name)
        if side_checks:
            pd.DataFrame(side_checks).to_csv(staging / SIDE_CHECKS, index=False)
    return Path(out_dir)


def surer_orientation(name, raw, frame, image, probabilities, groups, device, options, preprocess_options, confidence):
    """(frame, network input, maps, record) of the orientation of a raw
    image whose side was decided with ``confidence``: ``frame`` as given
    (with its ``image`` and ``probabilities``), or mirrored when the models
    are surer of that by enough to outweigh the confidence."""
    mirrored = dataclasses.replace(frame, flip=not frame.flip)
    mirrored_image = network_input(raw, mirrored, preprocess_options)
    mirrored_maps = mean_probabilities(groups, mirrored_image, device, **options)
    as_framed, as_mirrored = orientation_confidence(probabilities), orientation_confidence(mirrored_maps)
    changed = bool(networks_overrule(as_mirrored - as_framed, confidence))
    record = {
        "image_name": name,
        "side_from_frame": "left" if frame.flip else "right",
        "side_confidence": round(confidence, 4),
        "confidence_as_framed": round(as_framed, 4),
        "confidence_mirrored": round(as_mirrored, 4),
        "side": "left" if frame.flip != changed else "right",
        "changed": changed,
    }
    framed_side = record["side_from_frame"]
    other_side = "right" if framed_side == "left" else "left"
    log.info(
        "%s: side unsure (%s, confidence %.2f); the models' confidence as a %s hand %.3f, as a %s hand %.3f: %s",
        name,
        framed_side,
        confidence,
        framed_side,
        as_framed,
        other_side,
        as_mirrored,
        f"side changed to {other_side}" if changed else f"{framed_side} kept",
    )
    return (mirrored, mirrored_image, mirrored_maps, record) if changed else (frame, image, probabilities, record)


def images_of(args):
    """The images a predict or overlays command works on."""
    if args.images_dir:
        return folder_images(args.images_dir)
    if not args.index:
        raise ConfigError("give --index (with --split) or --images-dir")
    if args.fold is not None:
        if not args.folds:
            raise ConfigError("--fold needs --folds (the folds CSV)")
        return validation_images(args.index, args.folds, args.fold)
    return split_images(args.index, args.split)


def prediction_options(args) -> tuple[dict, dict]:
    """The preprocess section of --preprocess and the prediction options
    of --options (the predict section), each completed with config.yaml's
    values and checked, the options' auto values resolved as the workflow
    resolves them (``config.predict_options``). What the flip TTA does, and
    why, is logged."""
    preprocess = config.section("preprocess", args.preprocess, "--preprocess")
    given = config.section("predict", args.options, "--options")
    options = config.predict_options(given, preprocess)
    flip = "on" if options["hflip"] else "off"
    if given["hflip"] == "auto":
        log.info(
            "horizontal-flip TTA %s: predict.hflip auto with preprocess.unify_side %s", flip, preprocess["unify_side"]
        )
    else:
        log.info("horizontal-flip TTA %s: predict.hflip %s", flip, json.dumps(given["hflip"]))
    if options["hflip"] and preprocess["unify_side"] == "right":
        log.warning(
            "flip TTA with one-hand frames (preprocess.unify_side right) shows networks that learnt right hands "
            "left ones; the workflow refuses it unless checks.allow names %s (docs/training.md)",
            config.HFLIP_TTA,
        )
    log.info("prediction options: %s", json.dumps(options, sort_keys=True))
    return preprocess, options


# -- the command line: `handbone predict` (cli.py dispatches) --


def predict_command(args) -> None:
    from .devices import torch_device

    preprocess, options = prediction_options(args)
    device = torch_device(args.threads)
    images = images_of(args)
    predict_images(
        images,
        args.checkpoints,
        args.out_dir,
        preprocess,
        device,
        options["hflip"],
        progress(args),
        options["scales"],
        options["overlap"],
        options["batch_size"],
        description=f"predict {len(images)} images",
        frames_path=args.frames,
        precision=options["precision"],
    )
    log.info("probability maps of %d images written to %s", len(images), args.out_dir)


def predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=predict_command)
    image_source(parser)
    parser.add_argument("--checkpoints", nargs="+", required=True)
    prediction_arguments(parser)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
