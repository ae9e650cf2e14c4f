"""The packed form of a 29-class mask: one bit per class and pixel, as the
training cache stores it and training moves it to the device."""

from __future__ import annotations

import numpy as np

from .classes import NUM_CLASSES


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """(29, H, W) binary -> (H, W, 4) uint8 bits."""
    return np.packbits(np.moveaxis(mask.astype(bool), 0, -1), axis=-1, bitorder="little")


def unpack_mask(packed: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 bits (or a crop of it) -> (29, H, W) uint8."""
    bits = np.unpackbits(packed, axis=-1, count=NUM_CLASSES, bitorder="little")
    return np.ascontiguousarray(np.moveaxis(bits, -1, 0))


def unpack_mask_tensor(packed):
    """torch uint8 (H, W, bytes) bits -> bool (29, H, W), on the tensor's
    device: ``unpack_mask`` there (bytes after the first 4, pseudo-labels'
    ignore bits, are not read)."""
    import torch

    packed = packed.permute(2, 0, 1)[:4].contiguous()  # (4, H, W): byte-wise shifts run dense
    bits = torch.empty((32, *packed.shape[1:]), dtype=torch.uint8, device=packed.device)
    for bit in range(8):  # bit k of byte b is class 8b + k
        torch.bitwise_and(packed >> bit, 1, out=bits[bit::8])
    return bits[:NUM_CLASSES].view(torch.bool)


# The training target of a pixel left out of the loss (segmentation-models-
# pytorch's ignore_index), e.g. an uncertain pixel of a pseudo-label.
IGNORE = -1


def unpack_mask_batch(packed):
    """torch uint8 (B, 4, H, W) bits -> float32 (B, 29, H, W), on the
    tensor's device: training moves the packed masks (4 bytes a pixel) to
    the GPU and unpacks them there instead of on the data-loading CPUs.

    With 8 bytes (pseudo-labels, see pseudo.py) bytes 4-7 are ignore bits:
    those targets become IGNORE."""
    import torch

    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)[None, None, :, None, None]
    bits = (packed[:, :, None] >> shifts) & 1  # (B, bytes, 8, H, W), bit k of byte b = class 8b + k
    target = bits[:, :4].flatten(1, 2)[:, :NUM_CLASSES].float()
    if packed.shape[1] == 8:
        target[bits[:, 4:].flatten(1, 2)[:, :NUM_CLASSES].bool()] = IGNORE
    return target
