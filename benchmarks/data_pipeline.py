"""Training-sample throughput: from the preprocessing cache versus naively.

Both produce the same samples (a random full-resolution window, the same
albumentations pipeline on the packed mask, handbone.train.augment_sample);
the naive way decodes the PNG, applies CLAHE and rasterises the JSON
polygons into 29 channels for every sample, the cache way reads only the
window from memory-mapped arrays.

Usage: python benchmarks/data_pipeline.py [--size 2048] [--window 1024] [--images 4] [--samples 24]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from handbone import config
from handbone.cache import build_cache
from handbone.data import index_data_root, mask_for_row, read_image
from handbone.masks import pack_mask
from handbone.preprocess import preprocess
from handbone.synthetic import SyntheticConfig, generate
from handbone.train import CachedImages, augment_sample, augmentations

OPTIONS = config.default("preprocess")


def naive_sample(row, transform, window):
    image = preprocess(read_image(row["image_path"]), OPTIONS)
    mask = mask_for_row(row)
    top = np.random.randint(0, max(1, image.shape[0] - window + 1))
    left = np.random.randint(0, max(1, image.shape[1] - window + 1))
    rows, cols = slice(top, top + window), slice(left, left + window)
    return augment_sample(image[rows, cols], pack_mask(mask[:, rows, cols]), transform, window)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--samples", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        synthetic = SyntheticConfig(train_people=max(1, args.images // 2), test_people=1, image_size=args.size, seed=0)
        root = generate(folder / "set", synthetic, progress=False)
        index = index_data_root(root / "data")
        index.to_csv(folder / "index.csv", index=False)
        started = time.monotonic()
        cache = build_cache(folder / "index.csv", folder / "cache", OPTIONS, progress=False)
        build_seconds = time.monotonic() - started
        train = index[index["split"] == "train"].reset_index(drop=True)
        # As training resolves it: hflip auto under the default preprocessing.
        augment = config.default("train.augment")
        augment["hflip"] = config.augment_hflip(augment["hflip"], OPTIONS)
        transform = augmentations(args.window, "patch", augment, seed=0)
        stems = [name[:-4] for name in train["image_name"]]
        dataset = CachedImages({stem: cache for stem in stems}, stems, transform, "patch", args.window)

        timings = {}
        for name, draw in (
            (
                "naive (PNG + JSON per sample)",
                lambda k: naive_sample(train.iloc[k % len(train)], transform, args.window),
            ),
            ("cache (memory-mapped window)", lambda k: dataset[k % len(dataset)]),
        ):
            draw(0)  # warm-up: file cache, lazy imports
            started = time.monotonic()
            for k in range(args.samples):
                draw(k)
            timings[name] = args.samples / (time.monotonic() - started)
        size = sum(path.stat().st_size for path in cache.iterdir())
    print(
        f"{len(train)} train images of {args.size}x{args.size}, {args.window}x{args.window} windows, "
        f"{args.samples} samples each way, 1 process"
    )
    print(f"cache built in {build_seconds:.1f} s, {size / 2**20:.0f} MiB on disk")
    for name, rate in timings.items():
        print(f"  {name:32s} {rate:7.2f} samples/s")
    naive, cached = timings.values()
    print(f"  cache / naive: {cached / naive:.1f}x")


if __name__ == "__main__":
    main()
