"""Ensemble, post-processing and submission benchmarks, side by side in one run:

1. RLE of 29 masks of 2048 x 2048 (the synthetic generator's labels):
   ours against the competition baseline's approach (flatten, pad, np.where
   on changes, join the numbers); identical strings and the time of each;
2. the ensemble + post-processing + CSV stage (``handbone ensemble`` then
   ``handbone submit``, each in a fresh process under /usr/bin/time) on
   synthetic test maps of 2048 x 2048 from 3 models: images per second and
   peak memory, at two numbers of images to show memory does not grow;
3. on the demo (after ``snakemake --cores 2 --configfile
   configs/demo_ensemble.yaml``): OOF and held-out Dice of the best single
   model, the uniform ensemble, the fitted ensembles and after
   post-processing.

Usage:
  python benchmarks/submission.py [--images 300 100] [--unique 8] [--size 2048] [--skip-demo]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from handbone import config, probmaps, rle
from handbone.data import index_data_root, mask_for_row, read_index
from handbone.ensemble import ensemble_maps
from handbone.fitting import fit_ensemble, fit_postprocess, oof_maps
from handbone.metrics import score_submission, summarize
from handbone.postprocess import PostprocessParams
from handbone.submission import write_submission
from handbone.synthetic import SyntheticConfig, generate

MODELS = 3


def baseline_rle(mask: np.ndarray) -> str:
    """The competition baseline's encoder, for comparison."""
    pixels = mask.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def best_of(function, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def compare_rle(masks: np.ndarray) -> None:
    ours = [rle.encode(mask) for mask in masks]
    reference = [baseline_rle(mask) for mask in masks]
    identical = ours == reference
    ours_time = best_of(lambda: [rle.encode(mask) for mask in masks])
    reference_time = best_of(lambda: [baseline_rle(mask) for mask in masks])
    print(f"\n1. RLE of 29 masks of {masks.shape[1]} x {masks.shape[2]} (one synthetic hand), best of 3")
    print(f"   {'encoder':34s} {'ms / 29 masks':>14s}")
    print(f"   {'competition baseline (np.where)':34s} {reference_time * 1000:14.1f}")
    print(f"   {'handbone rle.encode':34s} {ours_time * 1000:14.1f}")
    print(f"   identical strings: {identical}; ours {reference_time / ours_time:.1f}x faster")


def fake_model_maps(truth: np.ndarray, model: int, rng) -> np.ndarray:
    """Smooth, imperfect probabilities around each bone, like a trained
    model's: a blurred, shifted label plus a faint stray blob."""
    maps = np.zeros(truth.shape, np.float32)
    for number, channel in enumerate(truth):
        shifted = np.roll(channel.astype(np.float32), (model * 3, -model * 2), axis=(0, 1))
        blurred = cv2.GaussianBlur(shifted, (0, 0), 4 + 2 * model)
        maps[number] = np.clip(blurred * rng.uniform(0.9, 1.1), 0, 1)
        y, x = rng.integers(0, truth.shape[1] - 30, 2)
        maps[number, y : y + 12, x : x + 12] = np.maximum(maps[number, y : y + 12, x : x + 12], 0.55)
    return maps


def run_timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS GB) of a command in a fresh process."""
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return time.perf_counter() - started, peak_kb / 1e6


def stage_benchmark(folder: Path, truth_masks: list[np.ndarray], counts: list[int], args_threads: int) -> None:
    rng = np.random.default_rng(0)
    unique = []  # per unique image, per model, a saved map
    for number, truth in enumerate(truth_masks):
        paths = []
        for model in range(MODELS):
            path = folder / "unique" / f"m{model}_{number}.npz"
            probmaps.save(path, fake_model_maps(truth, model, rng), f"u{number}.png")
            paths.append(path)
        unique.append(paths)
    params = PostprocessParams.plain()
    params.min_area = [256] * 29
    params.largest = [True] * 29
    (folder / "params.json").write_text(json.dumps(params.to_dict()))
    print(f"\n2. Ensemble ({MODELS} models, uniform) + post-processing (threshold, min area, largest component) + CSV,")
    print(
        f"   maps of 29 x {truth_masks[0].shape[1]} x {truth_masks[0].shape[2]}, one process per stage, {args_threads} threads, 2-core machine"
    )
    print(f"   {'images':>6s} {'ensemble s':>10s} {'peak GB':>8s} {'submit s':>9s} {'peak GB':>8s} {'images/s':>9s}")
    for count in counts:
        run = folder / f"run{count}"
        rows = []
        for image in range(count):
            name = f"image{image:04d}.png"
            for model in range(MODELS):
                target = run / f"model{model}" / "test" / probmaps.map_filename(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(unique[image % len(unique)][model], target)  # the same bytes under another name
            rows.append(
                {
                    "split": "test",
                    "person_id": "ID000",
                    "image_name": name,
                    "image_path": "",
                    "label_path": "",
                    "height": truth_masks[0].shape[1],
                    "width": truth_masks[0].shape[2],
                }
            )
        pd.DataFrame(rows).to_csv(run / "index.csv", index=False)
        handbone = [sys.executable, "-m", "handbone", "--quiet"]
        ensemble_seconds, ensemble_peak = run_timed(
            handbone
            + [
                "ensemble",
                "--inputs",
                *[str(run / f"model{model}" / "test") for model in range(MODELS)],
                "--out-dir",
                str(run / "ensemble"),
                "--threads",
                str(args_threads),
            ]
        )
        submit_seconds, submit_peak = run_timed(
            handbone
            + [
                "submit",
                "--probabilities",
                str(run / "ensemble"),
                "--index",
                str(run / "index.csv"),
                "--params",
                str(folder / "params.json"),
                "--out",
                str(run / "submission.csv"),
                "--threads",
                str(args_threads),
            ]
        )
        rate = count / (ensemble_seconds + submit_seconds)
        print(
            f"   {count:6d} {ensemble_seconds:10.1f} {ensemble_peak:8.2f} {submit_seconds:9.1f} {submit_peak:8.2f} {rate:9.2f}"
        )


def demo_comparison(results: Path) -> None:
    """OOF and held-out Dice of the demo's models and ensembles."""
    models = sorted(path.parent.name for path in results.glob("predictions/*/oof"))
    if len(models) < 2:
        print("\n3. skipped: the demo has fewer than 2 models (run it with configs/demo_ensemble.yaml)")
        return
    cache = next(path for path in (results / "cache").iterdir() if (path / "cache.csv").is_file())
    images = oof_maps(
        results / "splits" / "folds.csv", {model: results / "predictions" / model / "oof" for model in models}
    )
    index = read_index(results / "index" / "index.csv", "test")
    truth = results / "demo" / "ground_truth" / "test"

    def held_out(model_dirs, weights, params, folder: Path) -> float:
        weights_path = None
        if weights is not None:
            weights_path = folder / "weights.json"
            weights_path.write_text(json.dumps(weights))
        maps = ensemble_maps(model_dirs, folder / "maps", weights_path, progress=False)
        submission = write_submission(
            maps, results / "index" / "index.csv", folder / "submission.csv", params, progress=False
        )
        return summarize(score_submission(submission, truth, index))[1]

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        chosen = {}
        for mode in ("uniform", "weighted", "classwise"):
            chosen[mode], table = fit_ensemble(images, models, cache, mode, 0.1, progress=False)
        oof = table.set_index("step")["mean_dice"]
        best_model = max(models, key=lambda model: oof[f"model {model}"])
        test_dirs = [results / "predictions" / model / "test" for model in models]
        plain = PostprocessParams.plain()
        variants = [
            (
                f"best single model ({best_model})",
                oof[f"model {best_model}"],
                [results / "predictions" / best_model / "test"],
                None,
                plain,
            ),
            ("uniform ensemble", oof["uniform ensemble"], test_dirs, chosen["uniform"], plain),
            ("weighted ensemble (fitted)", oof["weighted ensemble"], test_dirs, chosen["weighted"], plain),
            ("class-wise ensemble (fitted)", oof["class-wise ensemble"], test_dirs, chosen["classwise"], plain),
        ]
        options = config.default("postprocess")  # the checkout's config.yaml, wherever this runs from
        for mode in ("uniform", "classwise"):
            params, steps, _ = fit_postprocess(images, models, cache, chosen[mode], options, progress=False)
            variants.append(
                (
                    f"{mode} ensemble + post-processing (fitted on OOF)",
                    steps["mean_dice"].iloc[-1],
                    test_dirs,
                    chosen[mode],
                    params,
                )
            )
        for number, (label, oof_dice, dirs, weights, params) in enumerate(variants):
            folder = scratch / str(number)
            folder.mkdir()
            rows.append((label, oof_dice, held_out(dirs, weights, params, folder)))
    print(
        f"\n3. Demo ({len(models)} models: {', '.join(models)}; {len(images)} OOF images, {len(index)} held-out test images)"
    )
    print(f"   {'variant':58s} {'OOF Dice':>9s} {'held-out':>9s}")
    for label, oof_dice, held in rows:
        print(f"   {label:58s} {oof_dice:9.4f} {held:9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--images", type=int, nargs="+", default=[300, 100], help="test-set sizes for the stage benchmark"
    )
    parser.add_argument("--unique", type=int, default=8, help="distinct synthetic images behind the maps")
    parser.add_argument("--size", type=int, default=2048, help="side of the synthetic images and maps")
    parser.add_argument("--results", default="results")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="--threads of ensemble and submit (the rules use 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        # Labelled synthetic hands (training images, without annotation faults).
        synthetic = SyntheticConfig(
            train_people=(args.unique + 1) // 2, test_people=1, image_size=args.size, seed=11, fault_rate=0.0
        )
        index = index_data_root(generate(folder / "set", synthetic, progress=False) / "data")
        truth = [mask_for_row(row) for _, row in index[index["split"] == "train"].head(args.unique).iterrows()]
        compare_rle(truth[0])
        stage_benchmark(folder, truth, args.images, args.threads)
    if not args.skip_demo:
        demo_comparison(Path(args.results))


if __name__ == "__main__":
    main()
