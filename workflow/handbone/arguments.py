"""What the ``handbone`` subcommands share: JSON arguments, the progress
switch, the weights cache and the groups of arguments several commands
take (which images, the prediction options, the post-processing, the
out-of-fold maps). Each subcommand's own arguments are defined beside the
code it runs (``<command>_arguments`` in its module; cli.py's ``COMMANDS``
says which module). Light on purpose: every command imports it, so it
imports no stage; what reads a group back needs its stage's code and lives
there (``predict.images_of``, ``predict.prediction_options``,
``postprocess.postprocess_params``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import config


def json_argument(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None


def progress(args) -> bool:
    return not args.quiet


def use_weights_cache(folder: str | None, online: bool) -> None:
    """Point the Hugging Face Hub (through which segmentation-models-pytorch
    and timm load pretrained weights) at ``folder`` and take it offline
    unless ``online``: no job may hang on a network call. The hub reads
    these once, when first imported, so this runs before any model code;
    a caller that imported it already (main() called in-process) gets its
    read values updated too."""
    if folder:
        os.environ["HF_HUB_CACHE"] = str(Path(folder).resolve())
    os.environ["HF_HUB_OFFLINE"] = "0" if online else "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = online is False
        if folder:
            constants.HF_HUB_CACHE = os.environ["HF_HUB_CACHE"]


def section_argument(parser, section: str, example: str = "") -> None:
    """``--options``: one config section as JSON, which the command completes
    with config.yaml's values and checks (``config.section``)."""
    example = f", e.g. {example}" if example else ""
    parser.add_argument(
        "--options",
        type=json_argument,
        default={},
        help=f"{section} section as JSON{example} (what it leaves out: config.yaml's)",
    )


def image_source(sub):
    """The images of a predict or overlays command (``predict.images_of``)."""
    sub.add_argument("--index", help="index CSV; the images of --split (or of --fold's validation part)")
    sub.add_argument("--split", default="test", choices=["train", "test"])
    sub.add_argument("--folds", help="folds CSV (with --fold)")
    sub.add_argument("--fold", type=int, help="the training images of this fold (out-of-fold prediction)")
    sub.add_argument("--images-dir", help="instead of the index: every PNG under this folder (no labels needed)")


def prediction_arguments(sub):
    """The options of a prediction command: two config sections as JSON,
    as training takes its own (``predict.prediction_options``)."""
    sub.add_argument(
        "--preprocess",
        type=json_argument,
        default={},
        metavar="JSON",
        help="preprocess section as JSON, as for training (what it leaves out: config.yaml's)",
    )
    sub.add_argument(
        "--frames", help="frames CSV (rule frames); an image it does not list gets its frame estimated from its pixels"
    )
    sub.add_argument(
        "--options",
        type=json_argument,
        default={},
        metavar="JSON",
        help="predict section as JSON (what it leaves out: config.yaml's): "
        + ", ".join(config.PREDICT_COMMAND_OPTIONS)
        + ', e.g. \'{"scales": [0.8, 1.0, 1.2], "precision": "float32"}\'. hflip (flip TTA) auto: on unless '
        "--preprocess mirrors every hand into a right one; precision auto: float16 on CUDA, float32 on the CPU "
        "(docs/prediction.md, 'Running it by hand')",
    )


def postprocess_source(sub, params_help: str) -> None:
    """The masks' post-processing: fitted params, else one threshold
    (``postprocess.postprocess_params``)."""
    sub.add_argument("--params", help=params_help)
    sub.add_argument(
        "--threshold",
        type=float,
        default=config.default("postprocess.threshold"),
        help="without --params: one threshold, nothing removed (default: %(default)s)",
    )


def oof_source(sub):
    """The out-of-fold maps a fit-ensemble or fit-postprocess command fits on."""
    sub.add_argument(
        "--oof", nargs="+", required=True, help="per model, its folder of fold*/ out-of-fold maps (.../{model}/oof)"
    )
    sub.add_argument("--folds", required=True, help="folds CSV (excluded images are left out of the fit)")
    sub.add_argument("--cache", required=True, help="preprocessing cache (the labels)")
