"""Models named in config and built by segmentation-models-pytorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .classes import NUM_CLASSES

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def build_model(spec: dict) -> torch.nn.Module:
    """A model from a config entry: {arch, encoder, encoder_weights, kwargs}.

    ``encoder_weights`` is null (random initialisation, nothing downloaded)
    or a path to a local state dict for the encoder.
    """
    import segmentation_models_pytorch as smp

    weights = spec.get("encoder_weights")
    try:
        model = smp.create_model(
            arch=spec["arch"],
            encoder_name=spec["encoder"],
            encoder_weights=None,
            in_channels=3,
            classes=NUM_CLASSES,
            **spec.get("kwargs", {}),
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ValueError(f"cannot build model {spec.get('arch')!r} with encoder {spec.get('encoder')!r}: {error}") from None
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"encoder_weights {path} does not exist (only local weight files are used)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        expected = model.encoder.state_dict()
        matching = [key for key, value in state.items() if key in expected and expected[key].shape == value.shape]
        if not matching:
            raise ValueError(f"encoder_weights {path} match none of the encoder's parameters")
        # Some smp encoders drop their classifier keys themselves; extra keys
        # (e.g. an ImageNet head) are ignored.
        model.encoder.load_state_dict({key: state[key] for key in matching}, strict=False)
    return model


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) grayscale -> float32 (B, 3, H, W), ImageNet-normalised.

    Done on the model's device: data loading then moves uint8 (a quarter of
    the bytes) and spends no CPU time on it.
    """
    mean = torch.as_tensor(IMAGENET_MEAN, device=images.device)[None, :, None, None]
    std = torch.as_tensor(IMAGENET_STD, device=images.device)[None, :, None, None]
    return (images.float() / 255.0 - mean) / std


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict) -> None:
    with atomic_path(path) as temporary:
        torch.save({"state_dict": model.state_dict(), **meta}, temporary)


def load_checkpoint(path: str | Path, device) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from a checkpoint (loaded with weights_only=True)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # The state dict holds every weight; the encoder's initial weights file
    # is not needed again.
    model = build_model({**checkpoint["model"], "encoder_weights": None})
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: checkpoint does not fit model {checkpoint['model']}: {error}") from None
    return model.to(device).eval(), checkpoint
