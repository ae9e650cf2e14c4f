"""How sure trained networks are of a hand's side, on images whose side is
known: the margin that prediction's orientation check
(``predict.surer_orientation``) must see before it overrules the pixels.

For each image, predicted in its true orientation and mirrored, as
prediction predicts an image whose side is unsure (the mean map of the
checkpoints, then ``metrics.orientation_confidence``):

    margin = confidence(true orientation) - confidence(mirrored)

An unsure side is turned when the networks' evidence outweighs the side's
own confidence, both as log-odds (frames.networks_overrule):
NETWORK_SIDE_SCALE x margin of the other orientation > logit(confidence).
The script fits that scale by maximum likelihood on the generated images
(P(true orientation) = logistic(scale x margin)), on seeds the checkpoints
never saw, and gives the sides that prediction ends with for an image it
has no frames row for (the pixels' side, then the check) at the fitted
scale, the shipped one and others: on the generated images and, where
shared/ is there, on the real radiographs and their mirrors (all left
hands mirrored to right ones), which play no part in the fit. The spread
of the margin between checkpoints measures its noise.

Usage:
  python benchmarks/side_margins.py --checkpoints results/models/*/fold*/model.pt
      [--config config.yaml] [--people 8] [--size 384] [--seeds 31 32] [--no-real] [--table margins.csv]
"""

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from sides import REAL, generated_images, real_images  # benchmarks/sides.py, beside this script
from tqdm import tqdm

from handbone import config
from handbone.cache import network_input
from handbone.frames import LOW_SIDE_CONFIDENCE, NETWORK_SIDE_SCALE, frame_of, networks_overrule, side_confidence
from handbone.metrics import orientation_confidence
from handbone.pose import pixel_pose
from handbone.predict import inference_options, load_model_groups, mean_probabilities

SCALES = [5.0, 10.0, 20.0, 40.0, 80.0, 1e6]  # 1e6: any margin turns (the rule before)


def images_with_sides(people: int, size: int, seeds: list[int], folder: Path, real: bool):
    """(set, name, image, true side) of generated images and real radiographs."""
    for seed in seeds:
        for name, image, truth, _ in generated_images(people, size, seed, folder):
            yield f"generated (seed {seed})", name, image, truth
    if real and REAL.is_dir():
        for name, image, truth in real_images():
            yield "real", name, image, truth


def margins(groups, image, frame, truth, device, options, preprocess) -> tuple[float, list[float]]:
    """(margin of the checkpoints' mean map, margin of each checkpoint)."""
    maps = {}
    for label, flip in (("true", truth == "left"), ("mirrored", truth != "left")):
        shown = network_input(image, dataclasses.replace(frame, flip=flip), preprocess)
        # Each model's map, as prediction computes their mean.
        maps[label] = [
            mean_probabilities([([model], size, mode)], shown, device, **options)
            for models, size, mode in groups
            for model in models
        ]
    mean = orientation_confidence(np.mean(maps["true"], axis=0)) - orientation_confidence(
        np.mean(maps["mirrored"], axis=0)
    )
    each = [orientation_confidence(a) - orientation_confidence(b) for a, b in zip(maps["true"], maps["mirrored"])]
    return mean, each


def decided_sides(table: pd.DataFrame, scale: float) -> pd.Series:
    """The side prediction ends with for an image it has no frames row for
    (an extra image): the pixels' side, turned when it is unsure and the
    networks' margin for the other orientation, times ``scale``, outweighs
    the pixels' log-odds (frames.networks_overrule)."""
    pixels_right = table["pixels"] == table["truth"]
    other_margin = -table["margin"].where(pixels_right, -table["margin"])  # other minus framed
    turned = (table["pixel confidence"] < LOW_SIDE_CONFIDENCE) & networks_overrule(
        other_margin, table["pixel confidence"], scale
    )
    other = table["pixels"].map({"left": "right", "right": "left"})
    return table["pixels"].where(~turned, other)


def fitted_scale(margins: np.ndarray) -> float:
    """The scale of P(true orientation) = logistic(scale x margin) that is
    likeliest on these margins (no intercept: the two orientations are
    symmetric), by golden-section search on the log-likelihood."""
    low, high = 0.01, 1000.0
    loss = lambda scale: float(np.logaddexp(0.0, -scale * margins).sum())  # noqa: E731
    ratio = (5**0.5 - 1) / 2
    for _ in range(200):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loss(a) < loss(b):
            high = b
        else:
            low = a
    return (low + high) / 2


def side_table(table: pd.DataFrame, scales: list[float]) -> pd.DataFrame:
    rows = []
    for scale in scales:
        row = {"scale": round(scale, 1)}
        right = decided_sides(table, scale) == table["truth"]
        for name, part in table.groupby(table["set"].where(table["set"] == "real", "generated")):
            row[f"{name}: sides right after the check"] = f"{int(right[part.index].sum())} of {len(part)}"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, help="model.pt files, as predict_test gets them")
    parser.add_argument("--config", default="config.yaml", help="the run's config (its preprocess and predict options)")
    parser.add_argument("--people", type=int, default=8, help="people per generated set (two hands each)")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--seeds", type=int, nargs="+", default=[31, 32], help="generator seeds the models never saw")
    parser.add_argument("--no-real", action="store_true", help="leave out shared/'s real radiographs")
    parser.add_argument("--table", type=Path, help="write every image's margins here (CSV)")
    args = parser.parse_args()
    values = config.load_config([args.config])
    preprocess = values["preprocess"]
    device = torch.device("cpu")
    groups = load_model_groups(args.checkpoints, device, preprocess)
    predict = values["predict"]
    options = inference_options(preprocess, scales=predict["scales"], overlap=predict["overlap"])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        found = list(images_with_sides(args.people, args.size, args.seeds, Path(folder), not args.no_real))
        for set_name, name, image, truth in tqdm(found, desc="both orientations"):
            frame = frame_of(image, preprocess)
            pose = pixel_pose(image)
            mean, each = margins(groups, image, frame, truth, device, options, preprocess)
            rows.append(
                {
                    "set": set_name,
                    "image": name,
                    "truth": truth,
                    "pixels": pose["side"],
                    "pixel confidence": round(float(side_confidence(pose["side_score"])), 4),
                    "margin": round(mean, 4),
                    "smallest model margin": round(min(each), 4),
                    "largest model margin": round(max(each), 4),
                    "model margin spread (sd)": round(float(np.std(each)), 4),
                }
            )
    table = pd.DataFrame(rows)
    if args.table:
        table.to_csv(args.table, index=False)
    print(
        f"{len(args.checkpoints)} checkpoints; predict options {yaml.safe_dump(options, default_flow_style=True).strip()}"
    )
    for name, part in table.groupby(table["set"].where(table["set"] == "real", "generated")):
        print(
            f"{name}: {len(part)} images, margin min {part['margin'].min():.3f}, 5th percentile "
            f"{part['margin'].quantile(0.05):.3f}, median {part['margin'].median():.3f}; "
            f"spread between models (sd) median {part['model margin spread (sd)'].median():.3f}"
        )
    for name, part in table.groupby(table["set"].where(table["set"] == "real", "generated")):
        pixels = int((part["pixels"] == part["truth"]).sum())
        unsure = int((part["pixel confidence"] < LOW_SIDE_CONFIDENCE).sum())
        print(f"{name}: the pixels alone right on {pixels} of {len(part)}; {unsure} unsure (checked both ways)")
    generated = table[table["set"] != "real"]
    scale = fitted_scale(generated["margin"].to_numpy())
    print(f"scale fitted on the {len(generated)} generated images: {scale:.1f}")
    print(side_table(table, sorted({*SCALES, round(scale, 1), NETWORK_SIDE_SCALE})).to_markdown(index=False))
    low = table[table["margin"] < 0.1].sort_values("margin")
    if len(low):
        print("images with a margin below 0.1:")
        print(low.to_markdown(index=False))
    print(f"shipped: frames.NETWORK_SIDE_SCALE = {NETWORK_SIDE_SCALE}")


if __name__ == "__main__":
    main()
