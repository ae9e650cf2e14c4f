"""Inference benchmarks, side by side in one run:

1. our Gaussian sliding window against MONAI's ``sliding_window_inference``
   (mode="gaussian", sigma_scale=0.125, same window and overlap, same model,
   one 2048 x 2048 input): largest absolute difference and time ratio;
2. probability-map storage: ours against float32 ``savez_compressed``
   (nnU-Net's way) and float16 ``savez_compressed``, on maps a trained model
   predicts for 2048 x 2048 synthetic test images: MB per image, write and
   read time, Dice of masks thresholded at 0.5 against the float32 map;
3. peak memory (VmHWM of a fresh process) of predicting one 2048 x 2048
   image on the CPU with TTA (hflip and scales 0.8, 1.0, 1.5), for a
   resize-mode model and for 1024 px sliding windows.

MONAI is installed with handbone (its DynUNet is the nnU-Net-style member).

Usage (after the demo run, which trains the default checkpoint):
  python benchmarks/inference.py [--checkpoint results/models/unet_mobilenetv3/fold0/model.pt]
      [--images 3] [--size 2048] [--window 1024] [--repeats 5] [--parts 1 2 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from handbone import config, probmaps
from handbone.data import index_data_root, read_image
from handbone.inference import _sliding_window, predict_probabilities
from handbone.metrics import dice_per_class
from handbone.model import load_checkpoint, to_network_input
from handbone.preprocess import preprocess
from handbone.synthetic import SyntheticConfig, generate

TTA_SCALES = (0.8, 1.0, 1.5)


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def synthetic_test_images(folder: Path, count: int, size: int = 2048) -> list[np.ndarray]:
    synthetic = SyntheticConfig(train_people=1, test_people=max(1, (count + 1) // 2), image_size=size, seed=77)
    index = index_data_root(generate(folder / "set", synthetic, progress=False) / "data")
    paths = index.loc[index["split"] == "test", "image_path"].head(count)
    return [preprocess(read_image(path), config.default("preprocess")) for path in paths]


def compare_with_monai(model, image: np.ndarray, window: int, overlap: float, repeats: int) -> None:
    from monai.inferers import sliding_window_inference

    tensor = to_network_input(torch.from_numpy(image)[None, None])
    batch_size = 4

    def ours():
        return _sliding_window([model], tensor, window, hflip=False, overlap=overlap, batch_size=batch_size)

    def monai():
        return sliding_window_inference(
            tensor,
            (window, window),
            batch_size,
            lambda batch: torch.sigmoid(model(batch)),
            overlap=overlap,
            mode="gaussian",
            sigma_scale=0.125,
        )

    with torch.no_grad():
        ours(), monai()  # warm-up: first calls allocate and pick kernels
        times = {"ours": [], "monai": []}
        for _ in range(repeats):  # alternate, so drifts in machine load hit both
            ours_map, seconds = timed(ours)
            times["ours"].append(seconds)
            monai_map, seconds = timed(monai)
            times["monai"].append(seconds)
    difference = (ours_map - torch.as_tensor(monai_map)).abs().max().item()
    # The best of several alternated runs: the forward passes dominate and
    # the machine's load only ever adds time.
    ours_time, monai_time = min(times["ours"]), min(times["monai"])
    print(
        f"\n1. Sliding window, {window} px windows, overlap {overlap}, batch {batch_size}, one {image.shape[0]} x {image.shape[1]} image, "
        f"best of {repeats} alternated runs (medians: ours {statistics.median(times['ours']):.2f} s, "
        f"MONAI {statistics.median(times['monai']):.2f} s)"
    )
    print(f"   {'':28s} {'seconds':>8s}")
    print(f"   {'handbone _sliding_window':28s} {ours_time:8.2f}")
    print(f"   {'MONAI sliding_window_inference':28s} {monai_time:8.2f}")
    print(f"   largest |ours - MONAI| = {difference:.2e}; time ratio ours/MONAI = {ours_time / monai_time:.2f}x")


def compare_storage(model, checkpoint, images: list[np.ndarray], folder: Path) -> None:
    formats = {
        "float32 savez_compressed (nnU-Net)": (
            lambda path, maps: np.savez_compressed(path, probabilities=maps),
            lambda path: np.load(path)["probabilities"],
        ),
        "float16 savez_compressed": (
            lambda path, maps: np.savez_compressed(path, probabilities=maps.astype(np.float16)),
            lambda path: np.load(path)["probabilities"].astype(np.float32),
        ),
        "handbone .npz (uint8 boxes)": (
            lambda path, maps: probmaps.save(path, maps, "image.png"),
            probmaps.load,
        ),
    }
    rows = {name: [] for name in formats}
    for image in images:
        maps = predict_probabilities(
            [model], image, checkpoint["input_size"], torch.device("cpu"), mode=checkpoint.get("input_mode", "resize")
        ).astype(np.float32)
        reference = maps > 0.5
        for name, (write, read) in formats.items():
            path = folder / "map.npz"
            _, write_seconds = timed(lambda: write(path, maps))  # noqa: B023 (called at once)
            stored, read_seconds = timed(lambda: read(path))  # noqa: B023 (called at once)
            dice = dice_per_class(stored > 0.5, reference).min()
            rows[name].append((path.stat().st_size, write_seconds, read_seconds, dice))
            path.unlink()
    print(
        f"\n2. Map storage, {len(images)} synthetic test images, maps of 29 x {images[0].shape[0]} x {images[0].shape[1]} (trained model)"
    )
    print(f"   {'format':36s} {'MB/image':>9s} {'write s':>8s} {'read s':>7s} {'min class Dice vs float32':>26s}")
    summary = {}
    for name, values in rows.items():
        values = np.array(values)
        size, write_seconds, read_seconds = values[:, 0].mean(), values[:, 1].mean(), values[:, 2].mean()
        summary[name] = (size, write_seconds)
        print(f"   {name:36s} {size / 1e6:9.2f} {write_seconds:8.2f} {read_seconds:7.2f} {values[:, 3].min():26.6f}")
    ours, half = summary["handbone .npz (uint8 boxes)"], summary["float16 savez_compressed"]
    print(f"   ours vs float16: {half[0] / ours[0]:.0f}x smaller, {half[1] / ours[1]:.1f}x faster to write")


def high_water_mark_gb() -> float:
    """Peak resident memory of this process (VmHWM). Unlike ru_maxrss, it is
    not inherited from the parent across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(checkpoint_path: str, mode: str, window: int, image_path: str, batch_size: int) -> None:
    """Run in a fresh process: predict one image with TTA, print max RSS."""
    torch.set_num_threads(2)
    model, checkpoint = load_checkpoint(checkpoint_path, torch.device("cpu"))
    size = checkpoint["input_size"] if mode == "resize" else window
    image = np.load(image_path)
    before = high_water_mark_gb()
    _, seconds = timed(
        lambda: predict_probabilities(
            [model], image, size, torch.device("cpu"), hflip=True, mode=mode, scales=TTA_SCALES, batch_size=batch_size
        )
    )
    print(f"{high_water_mark_gb():.2f} {before:.2f} {seconds:.1f}")


def measure_memory(checkpoint_path: str, window: int, image: np.ndarray, folder: Path) -> None:
    print(
        f"\n3. Peak memory, one {image.shape[0]} x {image.shape[1]} image on the CPU, TTA hflip x scales {list(TTA_SCALES)}, fresh process"
    )
    print(f"   {'model input':42s} {'peak RSS GB':>11s} {'before predict GB':>18s} {'seconds':>8s}")
    image_path = folder / "image.npy"
    np.save(image_path, image)
    for mode, batch_size, label in (
        ("resize", 1, "whole image resized"),
        ("patch", 4, f"{window} px windows, overlap 0.5, batch 4"),
        ("patch", 1, f"{window} px windows, overlap 0.5, batch 1"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                mode,
                "--checkpoint",
                checkpoint_path,
                "--window",
                str(window),
                "--image",
                str(image_path),
                "--batch-size",
                str(batch_size),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        peak, before, seconds = result.stdout.split()
        print(f"   {label:42s} {float(peak):11.2f} {float(before):18.2f} {float(seconds):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="results/models/unet_mobilenetv3/fold0/model.pt")
    parser.add_argument("--images", type=int, default=3, help="test images for the storage comparison")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--size", type=int, default=2048, help="side of the synthetic test images")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], help="which comparisons to run")
    parser.add_argument("--memory-child", choices=["resize", "patch"], help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.checkpoint, args.memory_child, args.window, args.image, args.batch_size)
        return
    torch.set_num_threads(2)
    model, checkpoint = load_checkpoint(args.checkpoint, torch.device("cpu"))
    print(
        f"model: {args.checkpoint} ({checkpoint['model']['arch']}, {checkpoint['model']['encoder']}), "
        f"CPU, {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as folder:
        images = synthetic_test_images(Path(folder), args.images if 2 in args.parts else 1, args.size)
        if 1 in args.parts:
            compare_with_monai(model, images[0], args.window, args.overlap, args.repeats)
        if 2 in args.parts:
            compare_storage(model, checkpoint, images, Path(folder))
        if 3 in args.parts:
            measure_memory(args.checkpoint, args.window, images[0], Path(folder))


if __name__ == "__main__":
    main()
