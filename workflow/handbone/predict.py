"""Predicting probability maps for the test images with the folds of a model."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from . import probmaps
from .atomic import atomic_path
from .data import read_image, read_index
from .inference import predict_probabilities
from .model import load_checkpoint
from .preprocess import preprocess


def predict_split(
    index_path: str | Path,
    checkpoints: list[str | Path],
    out_dir: str | Path,
    preprocess_options: dict,
    device,
    split: str = "test",
    hflip: bool = True,
    progress: bool = True,
    scales=(1.0,),
    overlap: float = 0.5,
    batch_size: int = 4,
) -> Path:
    """Write ``<stem>.npz`` per image of ``split``: the mean of the given
    checkpoints' probabilities, with horizontal-flip TTA when ``hflip`` and
    multi-scale TTA over ``scales`` (see inference.predict_probabilities)."""
    loaded = [load_checkpoint(path, device) for path in checkpoints]
    inputs = {(checkpoint["input_size"], checkpoint.get("input_mode", "resize")) for _, checkpoint in loaded}
    if len(inputs) != 1:
        raise ValueError(f"checkpoints {checkpoints} were trained with different inputs {sorted(inputs)}")
    models = [model for model, _ in loaded]
    input_size, mode = inputs.pop()
    index = read_index(index_path, split)
    with atomic_path(out_dir) as staging:
        staging.mkdir(parents=True)
        for _, row in tqdm(index.iterrows(), total=len(index), desc=f"predict {split}", disable=not progress):
            image = preprocess(read_image(row["image_path"]), preprocess_options)
            probabilities = predict_probabilities(
                models, image, input_size, device, hflip, mode, overlap=overlap, scales=scales, batch_size=batch_size
            )
            probmaps.save(staging / f"{Path(row['image_name']).stem}.npz", probabilities, row["image_name"])
    return Path(out_dir)
