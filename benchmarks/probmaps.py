"""Probability-map storage: ours against float32 and float16 savez_compressed.

Predicts realistic maps (a trained checkpoint, synthetic 2048 x 2048 test
images, probabilities at full resolution) and prints, per format: bytes per
image, write and read time, and the Dice between masks thresholded at 0.5
from the stored map and from the float32 map.

Usage (after the demo run, which trains the default checkpoint):
  python benchmarks/probmaps.py [--checkpoint results/models/unet_mobilenetv3/fold0/model.pt] [--images 3]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from handbone import probmaps
from handbone.data import index_data_root, read_image
from handbone.metrics import dice_per_class
from handbone.model import load_checkpoint
from handbone.inference import predict_probabilities
from handbone.preprocess import preprocess
from handbone.synthetic import SyntheticConfig, generate


def timed(function, repeats=1):
    started = time.perf_counter()
    for _ in range(repeats):
        result = function()
    return result, (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="results/models/unet_mobilenetv3/fold0/model.pt")
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, checkpoint = load_checkpoint(args.checkpoint, torch.device("cpu"))
    rows = {"float32 savez_compressed (nnU-Net)": [], "float16 savez_compressed": [], "handbone .npz (uint8 boxes)": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = SyntheticConfig(train_people=1, test_people=max(1, args.images // 2 + args.images % 2), image_size=2048, seed=77)
        index = index_data_root(generate(folder / "set", config, progress=False) / "data")
        test = index[index["split"] == "test"].head(args.images)
        for _, row in test.iterrows():
            image = preprocess(read_image(row["image_path"]), {})
            probabilities = predict_probabilities(
                [model], image, checkpoint["input_size"], torch.device("cpu"), mode=checkpoint.get("input_mode", "resize")
            ).astype(np.float32)
            reference = probabilities > 0.5
            for name, write, read in (
                ("float32 savez_compressed (nnU-Net)",
                 lambda path: np.savez_compressed(path, probabilities=probabilities),
                 lambda path: np.load(path)["probabilities"]),
                ("float16 savez_compressed",
                 lambda path: np.savez_compressed(path, probabilities=probabilities.astype(np.float16)),
                 lambda path: np.load(path)["probabilities"].astype(np.float32)),
                ("handbone .npz (uint8 boxes)",
                 lambda path: probmaps.save(path, probabilities, row["image_name"]),
                 lambda path: probmaps.load(path)),
            ):
                path = folder / "map.npz"
                _, write_seconds = timed(lambda: write(path))
                stored, read_seconds = timed(lambda: read(path))
                dice = dice_per_class(stored > 0.5, reference).min()
                rows[name].append((path.stat().st_size, write_seconds, read_seconds, dice))
                path.unlink()
    print(f"{len(test)} synthetic test images of 2048 x 2048, maps of 29 x 2048 x 2048 from {args.checkpoint}")
    print(f"{'format':36s} {'MB/image':>9s} {'write s':>8s} {'read s':>7s} {'min Dice vs float32':>20s}")
    summary = {}
    for name, values in rows.items():
        values = np.array(values)
        size, write_seconds, read_seconds, dice = values[:, 0].mean(), values[:, 1].mean(), values[:, 2].mean(), values[:, 3].min()
        summary[name] = (size, write_seconds)
        print(f"{name:36s} {size / 1e6:9.2f} {write_seconds:8.2f} {read_seconds:7.2f} {dice:20.6f}")
    ours, half = summary["handbone .npz (uint8 boxes)"], summary["float16 savez_compressed"]
    print(f"ours vs float16: {half[0] / ours[0]:.0f}x smaller, {half[1] / ours[1]:.1f}x faster to write")


if __name__ == "__main__":
    main()
