"""Combining the models' probability maps and writing the submission."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import probmaps
from .atomic import atomic_path
from .data import read_index
from .submission import SubmissionWriter


def mean_quantized(paths: list[str | Path]) -> np.ndarray:
    """The uint8 mean (rounded) of several maps of one image."""
    total = None
    for path in paths:
        quantized = probmaps.load_quantized(path).astype(np.uint16)
        total = quantized if total is None else total + quantized
    return ((total + len(paths) // 2) // len(paths)).astype(np.uint8)


def mean_ensemble(model_dirs: list[str | Path], out_dir: str | Path, progress: bool = True) -> Path:
    """Uniform soft vote: the mean probability map over models, image by image."""
    model_dirs = [Path(directory) for directory in model_dirs]
    names = sorted(path.name for path in model_dirs[0].glob("*.npz"))
    for directory in model_dirs[1:]:
        other = sorted(path.name for path in directory.glob("*.npz"))
        if other != names:
            raise ValueError(f"{directory} and {model_dirs[0]} hold maps of different images")
    with atomic_path(out_dir) as staging:
        staging.mkdir(parents=True)
        for name in tqdm(names, desc="ensemble", disable=not progress):
            mean = mean_quantized([directory / name for directory in model_dirs])
            probmaps.save(staging / name, mean, probmaps.image_name(model_dirs[0] / name))
    return Path(out_dir)


def write_submission(
    prob_dir: str | Path, index_path: str | Path, out: str | Path, threshold: float = 0.5, progress: bool = True
) -> Path:
    """Threshold every test image's map and write ``image_name,class,rle``.

    Images come in the index's order; a test image without a map is an error.
    """
    prob_dir = Path(prob_dir)
    index = read_index(index_path, "test")
    # Compare in the quantised domain: p > threshold  <=>  q > threshold * 255.
    cut = threshold * 255
    with atomic_path(out) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = SubmissionWriter(handle)
            for name in tqdm(index["image_name"], desc="submission", disable=not progress):
                path = prob_dir / probmaps.map_filename(name)
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: no probability map for test image {name}")
                writer.write_image(name, probmaps.load_quantized(path) > cut)
    return Path(out)
