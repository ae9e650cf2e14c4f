"""What the ``handbone`` subcommands share: JSON arguments, the progress
switch and the weights cache. Each subcommand's own arguments are defined
beside the code it runs (``<command>_arguments`` in its module; cli.py's
``COMMANDS`` says which module). Light on purpose: every command imports it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


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
