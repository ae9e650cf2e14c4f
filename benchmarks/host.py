"""The CPU work around the networks, for ``handbone estimate``'s host table.

Measured on a finished run's results folder (the demo's, by default):

- ``job_start_s``: a network job's Python start with the package and torch
  imported (the fastest of 3 fresh processes); ``rule_start_s``: another job's;
- ``model_build_s``: building the config's models with random weights;
- ``sample_s_per_mpix``: reading and augmenting one training sample from
  the cache, as the training loader does, per megapixel of the sample;
- ``maps_s_per_mpix``: writing one image's probability maps (``.npz``) and
  reading the image, per megapixel;
- ``dice_s_per_mpix``: validation's Dice of one image on the CPU;
- ``rules``: each network-free rule's seconds per image and per megapixel
  of the images it reads, from the runs' benchmark records (Snakemake's
  per-job seconds) above ``rule_start_s`` (``estimate.measure_host``): with
  ``--also`` a second run at another image size separates the two.

Usage:
  python benchmarks/host.py [--results results] [--configfile config.yaml] [--samples 40]
      [--also RESULTS CONFIGFILE ...] [--out workflow/handbone/costs/host.yaml]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))


def start_seconds(code: str) -> float:
    """A fresh Python running ``code``: a job's start before its work (the
    fastest of 3: other load only adds to it, and a start measured slow
    would leave the rules' own work, fitted as what a job takes above it,
    at 0 on small images)."""
    command = [sys.executable, "-c", code]
    env = {"PYTHONPATH": str(REPO / "workflow"), "PATH": ""}
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times)


def cache_folder(results: Path) -> Path:
    images = sorted((results / "cache").rglob("*.image.npy"))
    if not images:
        sys.exit(f"{results / 'cache'}: no cached images (run the workflow first)")
    return images[0].parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="a finished run's results folder")
    parser.add_argument("--configfile", nargs="+", default=["config.yaml"], help="the run's config files")
    parser.add_argument(
        "--also",
        nargs="+",
        action="append",
        default=[],
        metavar=("RESULTS", "CONFIGFILE"),
        help="another finished run, at another image size, and its config files: the rules' times are then "
        "fitted per image and per megapixel (repeatable)",
    )
    parser.add_argument("--samples", type=int, default=40, help="training samples and images timed")
    parser.add_argument("--out", default="results/benchmarks/host.yaml")
    args = parser.parse_args()

    import torch

    from handbone import config, estimate, probmaps
    from handbone.cache import CacheEntry
    from handbone.model import build_model
    from handbone.train import CachedImages, augmentations, validation_dice

    torch.set_num_threads(1)  # a loader worker's share; prediction's host work is one thread too
    results = Path(args.results)
    values = config.load_config(estimate.workflow_configs(args.configfile))
    folder = cache_folder(results)
    stems = sorted(path.name.removesuffix(".image.npy") for path in folder.glob("*.image.npy"))[: args.samples]
    host = yaml.safe_load(estimate.HOST_TABLE.read_text())
    # Every job runs `python -m handbone <command>`, which imports cli.py and the command's module.
    host["job_start_s"] = round(start_seconds("from handbone.cli import build_parser; build_parser(['train'])"), 2)
    host["rule_start_s"] = round(start_seconds("from handbone.cli import build_parser; build_parser(['index'])"), 2)

    builds = []
    for name, spec in config.model_specs(values).items():
        started = time.perf_counter()
        build_model({**spec, "encoder_weights": None}, config.train_options(values, name)["input_size"])
        builds.append(time.perf_counter() - started)
    host["model_build_s"] = round(statistics.median(builds), 2)

    name = next(iter(config.model_specs(values)))
    options = config.train_options(values, name)
    size, mode = int(options["input_size"]), options["input_mode"]
    transform = augmentations(size, mode, options["augment"], 0)
    dataset = CachedImages({stem: folder for stem in stems}, stems, transform, mode, size)
    megapixels, started = 0.0, time.perf_counter()
    for number in range(len(stems)):
        dataset[number]
        height, width = CacheEntry(folder, stems[number]).image.shape[:2]
        megapixels += (height * width if mode == "resize" else size * size) / 1e6
    host["sample_s_per_mpix"] = round((time.perf_counter() - started) / megapixels, 4)

    maps = sorted((results / "predictions").rglob("*.npz"))[: args.samples]
    if not maps:
        sys.exit(f"{results / 'predictions'}: no probability maps")
    seconds = megapixels = 0.0
    scratch = results / "benchmarks" / "host_scratch.npz"
    for path in maps:
        probabilities = probmaps.load(path)
        started = time.perf_counter()
        probmaps.save(scratch, probabilities, path.stem)
        seconds += time.perf_counter() - started
        megapixels += probabilities.shape[1] * probabilities.shape[2] / 1e6
    scratch.unlink(missing_ok=True)
    host["maps_s_per_mpix"] = round(seconds / megapixels, 4)

    seconds = megapixels = 0.0
    for stem in stems:
        entry = CacheEntry(folder, stem)
        height, width = entry.image.shape[:2]
        probabilities = torch.rand((29, height, width))
        started = time.perf_counter()
        validation_dice(probabilities, np.array(entry.packed_mask))
        seconds += time.perf_counter() - started
        megapixels += height * width / 1e6
    host["dice_s_per_mpix"] = round(seconds / megapixels, 4)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(yaml.safe_dump(host, sort_keys=False))
    runs = [(results, args.configfile)] + [(also[0], also[1:]) for also in args.also]
    host = estimate.measure_host(runs, args.out, host_path=args.out)
    print(yaml.safe_dump(host, sort_keys=False))
    print(f"(host table: {args.out})")


if __name__ == "__main__":
    main()
