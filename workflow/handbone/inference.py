"""Whole-image prediction with optional horizontal-flip TTA."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import to_input


@torch.no_grad()
def predict_probabilities(models, image: np.ndarray, input_size: int, device, hflip: bool = False) -> np.ndarray:
    """Mean sigmoid probabilities of ``models`` on a preprocessed uint8 image.

    The image is resized to ``input_size`` for the network and the
    probabilities are resized back, so the result is (29, H, W) at the
    image's original resolution.
    """
    height, width = image.shape
    batch = torch.from_numpy(to_input(image))[None].to(device)
    batch = F.interpolate(batch, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    views = [batch, batch.flip(-1)] if hflip else [batch]
    total = None
    for model in models:
        for number, view in enumerate(views):
            probabilities = torch.sigmoid(model(view).float())
            if number == 1:
                probabilities = probabilities.flip(-1)
            total = probabilities if total is None else total + probabilities
    mean = total / (len(models) * len(views))
    mean = F.interpolate(mean, size=(height, width), mode="bilinear", align_corners=False)
    return mean[0].cpu().numpy()
