"""Whole-image prediction: resized input or Gaussian-blended sliding windows,
with test-time augmentation (horizontal flip, several scales).

The networks' forward passes run under ``torch.autocast`` in the precision
``devices.autocast_dtype`` gives (by default float16 on CUDA, float32 on
the CPU); everything after them (sigmoid, Gaussian-weighted sums, TTA
means, resizing) is float32."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from . import config
from .devices import autocast_dtype
from .errors import ConfigError
from .model import scaled_size, to_network_input

log = logging.getLogger("handbone")


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


def _forward(models, batch: torch.Tensor, hflip: bool, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean sigmoid probabilities of the models (and of the flipped view),
    float32; the models run under autocast in ``dtype`` (None: float32).

    Sums are taken in place: at 1024 px windows one batch of maps is
    hundreds of MB, and every avoided temporary counts.
    """
    views = [batch, batch.flip(-1)] if hflip else [batch]
    total = None
    for model in models:
        for number, view in enumerate(views):
            with torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(view)
            probabilities = torch.sigmoid_(logits.float())
            if number == 1:
                probabilities = probabilities.flip(-1)
            total = probabilities if total is None else total.add_(probabilities)
    return total.div_(len(models) * len(views))


def _sliding_window(
    models,
    tensor: torch.Tensor,
    window: int,
    hflip: bool,
    overlap: float,
    batch_size: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gaussian-blended windows over a (1, 3, H, W) tensor -> (1, C, H, W).

    Windows are run ``batch_size`` at a time (under autocast in ``dtype``).
    The weighted sums are float32, kept on the model's device; when that
    device runs out of memory for them they are kept on the CPU instead.
    """
    _, _, height, width = tensor.shape
    padded_height, padded_width = max(height, window), max(width, window)
    tensor = F.pad(tensor, (0, padded_width - width, 0, padded_height - height))
    stride = max(1, int(window * (1 - overlap)))
    positions = [
        (top, left)
        for top in window_starts(padded_height, window, stride)
        for left in window_starts(padded_width, window, stride)
    ]
    weights = gaussian_weights(window).to(tensor.device)
    total = norm = None
    for first in range(0, len(positions), batch_size):
        chunk = positions[first : first + batch_size]
        batch = torch.cat([tensor[:, :, top : top + window, left : left + window] for top, left in chunk])
        probabilities = _forward(models, batch, hflip, dtype).mul_(weights)
        if total is None:
            shape = (probabilities.shape[1], padded_height, padded_width)
            try:
                total = torch.zeros(shape, dtype=torch.float32, device=tensor.device)
            except torch.OutOfMemoryError:
                log.warning("out of device memory for stitching; stitching on the CPU")
                total = torch.zeros(shape, dtype=torch.float32)
            norm = torch.zeros((padded_height, padded_width), dtype=torch.float32, device=total.device)
        probabilities, window_weights = probabilities.to(total.device), weights.to(total.device)
        for (top, left), window_probabilities in zip(chunk, probabilities):
            total[:, top : top + window, left : left + window] += window_probabilities
            norm[top : top + window, left : left + window] += window_weights
    return total.div_(norm)[None, :, :height, :width]


def _resize_maps(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (1, C, h, w) maps where they are (maps stitched on
    the CPU stay there); on the CPU if the device runs out of memory."""
    try:
        return F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
    except torch.OutOfMemoryError:
        log.warning("out of device memory for resizing the maps; resizing on the CPU")
        return F.interpolate(probabilities.cpu(), size=size, mode="bilinear", align_corners=False)


def _to_host(probabilities: torch.Tensor) -> torch.Tensor:
    """Maps on the CPU. From a GPU through page-locked memory: a plain .cpu()
    of a 29 x 2048 x 2048 map into fresh pageable memory costs more than the
    whole sliding-window prediction."""
    if probabilities.device.type != "cuda":
        return probabilities
    try:
        host = torch.empty(probabilities.shape, dtype=probabilities.dtype, pin_memory=True)
    except RuntimeError:  # page-locked memory refused: the plain copy
        return probabilities.cpu()
    return host.copy_(probabilities)


def _predict(
    models, image, input_size, device, hflip, mode, overlap, scales, batch_size, precision, on_host
) -> torch.Tensor:
    """(29, H, W) float32 mean probabilities, each scale's maps brought to
    the CPU (``on_host``) or left where they were computed."""
    if mode not in ("resize", "patch"):
        raise ConfigError(f"unknown input mode {mode!r} (resize or patch)")
    overlap = config.default("predict.overlap") if overlap is None else overlap
    batch_size = config.default("predict.batch_size") if batch_size is None else batch_size
    dtype = autocast_dtype(device, precision)
    height, width = image.shape
    tensor = to_network_input(torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device))
    mean = None
    for scale in scales:
        if mode == "resize":
            side = scaled_size(input_size, scale)
            batch = F.interpolate(tensor, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            probabilities = _forward(models, batch, hflip, dtype)
        else:
            scaled = tensor
            if scale != 1.0:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                scaled = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
            probabilities = _sliding_window(models, scaled, input_size, hflip, overlap, batch_size, dtype)
        if probabilities.shape[-2:] != (height, width):
            probabilities = _resize_maps(probabilities, (height, width))
        if on_host:
            probabilities = _to_host(probabilities)
        mean = probabilities if mean is None else mean.add_(probabilities.to(mean.device))
    return mean.div_(len(scales))[0]


@torch.no_grad()
def predict_probabilities(
    models,
    image: np.ndarray,
    input_size: int,
    device,
    hflip: bool = False,
    mode: str = "resize",
    overlap: float | None = None,
    scales=(1.0,),
    batch_size: int | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Mean sigmoid probabilities of ``models`` on a preprocessed uint8 image,
    as float32 (29, H, W) at the image's original resolution.

    ``mode="resize"`` resizes the image to ``input_size`` (times each scale)
    and the probabilities back; ``mode="patch"`` rescales the image by each
    scale and predicts windows of ``input_size``, ``overlap`` apart, blended
    with Gaussian weights (images smaller than a window are padded).
    Test-time augmentation averages probabilities over ``scales`` and, with
    ``hflip``, over horizontally flipped views mapped back. ``overlap`` and
    ``batch_size`` left out: config.yaml's predict values. ``precision``:
    the forward passes' autocast precision (``devices.autocast_dtype``:
    auto is float16 on CUDA, float32 on the CPU); the sums and means of
    probabilities are float32 whatever it is.
    """
    maps = _predict(models, image, input_size, device, hflip, mode, overlap, scales, batch_size, precision, True)
    return maps.contiguous().numpy()


@torch.no_grad()
def device_probabilities(
    models,
    image: np.ndarray,
    input_size: int,
    device,
    hflip: bool = False,
    mode: str = "resize",
    overlap: float | None = None,
    scales=(1.0,),
    batch_size: int | None = None,
    precision: str = "auto",
) -> torch.Tensor:
    """``predict_probabilities``'s maps as a float32 (29, H, W) tensor left
    on the model's device (on the CPU where that device ran out of memory),
    for scoring them there (training's validation)."""
    return _predict(models, image, input_size, device, hflip, mode, overlap, scales, batch_size, precision, False)
