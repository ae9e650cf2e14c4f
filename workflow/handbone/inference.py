"""Whole-image prediction: resized input or Gaussian-blended sliding windows,
with optional horizontal-flip TTA."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import to_network_input


def gaussian_weights(window: int, sigma_fraction: float = 0.125) -> torch.Tensor:
    """(window, window) importance map, largest at the centre, never zero."""
    coordinates = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    profile = torch.exp(-(coordinates**2) / (2 * (sigma_fraction * window) ** 2))
    weights = profile[:, None] * profile[None, :]
    return (weights / weights.max()).clamp_min(1e-3)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window positions covering [0, length) with the last one flush at the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _forward(models, batch: torch.Tensor, hflip: bool) -> torch.Tensor:
    """Mean sigmoid probabilities of the models (and of the flipped view)."""
    views = [batch, batch.flip(-1)] if hflip else [batch]
    total = None
    for model in models:
        for number, view in enumerate(views):
            probabilities = torch.sigmoid(model(view).float())
            if number == 1:
                probabilities = probabilities.flip(-1)
            total = probabilities if total is None else total + probabilities
    return total / (len(models) * len(views))


@torch.no_grad()
def predict_probabilities(
    models, image: np.ndarray, input_size: int, device, hflip: bool = False, mode: str = "resize", overlap: float = 0.5
) -> np.ndarray:
    """Mean sigmoid probabilities of ``models`` on a preprocessed uint8 image,
    as (29, H, W) at the image's original resolution.

    ``mode="resize"`` resizes the image to ``input_size`` and the
    probabilities back; ``mode="patch"`` predicts windows of ``input_size``
    at full resolution, ``overlap`` apart, blended with Gaussian weights
    (images smaller than a window are padded).
    """
    height, width = image.shape
    tensor = to_network_input(torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device))
    if mode == "resize":
        batch = F.interpolate(tensor, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
        probabilities = _forward(models, batch, hflip)
        return F.interpolate(probabilities, size=(height, width), mode="bilinear", align_corners=False)[0].cpu().numpy()
    if mode != "patch":
        raise ValueError(f"unknown input mode {mode!r} (resize or patch)")
    padded_height, padded_width = max(height, input_size), max(width, input_size)
    tensor = F.pad(tensor, (0, padded_width - width, 0, padded_height - height))
    stride = max(1, int(input_size * (1 - overlap)))
    weights = gaussian_weights(input_size).to(device)
    total = torch.zeros((1, 0, padded_height, padded_width), device=device)
    norm = torch.zeros((padded_height, padded_width), device=device)
    for top in window_starts(padded_height, input_size, stride):
        for left in window_starts(padded_width, input_size, stride):
            window = tensor[:, :, top : top + input_size, left : left + input_size]
            probabilities = _forward(models, window, hflip)
            if total.shape[1] == 0:
                total = torch.zeros((1, probabilities.shape[1], padded_height, padded_width), device=device)
            total[:, :, top : top + input_size, left : left + input_size] += probabilities * weights
            norm[top : top + input_size, left : left + input_size] += weights
    return (total / norm)[0, :, :height, :width].cpu().numpy()
