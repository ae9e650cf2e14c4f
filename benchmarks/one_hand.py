"""Re-decides the one-hand defaults (preprocess.unify_side, preprocess.crop)
on several seeds of the generator, with hands that fill the image and
hands that are small in it.

For every seed and hand size one data set is generated; each setting then
runs the workflow's own commands on it (`python -m handbone ...`, as the
Snakefile runs them): frames, cache, one model trained on all training
people but the validation fold's (split into --folds folds, fold 0
validates), the test images predicted with that model and the options'
own TTA (predict.hflip auto), thresholded at 0.5 with no fitted
post-processing, scored against the test labels. Fitted post-processing
and fold ensembles would lift every setting; leaving them out keeps what
the setting itself does and costs a quarter of a demo run.

Settings (each with the config's other defaults; training's flip
augmentation and flip TTA follow `auto`: on only when hands are not
unified):

- none: unify_side none, crop none
- right: unify_side right, crop none
- crop: unify_side none, crop hand
- both: unify_side right, crop hand (the shipped default)

Writes per-run held-out Dice per class to --table (one row per seed, size,
setting and class) and prints, per hand size, each setting's mean
held-out Dice over the seeds (and each seed's), with the classes that lose
more than --max-class-drop against `none` on the mean over seeds. Runs
already scored in --work are reused, so an interrupted run resumes.

Usage: python benchmarks/one_hand.py [--seeds 101 102 103] [--sizes large small]
    [--settings none right crop both] [--epochs 40] [--train-people 16]
    [--test-people 8] [--image-size 384] [--input-size 256] [--folds 8]
    [--work /tmp/one_hand] [--table one_hand.csv] [--threads 2]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from handbone.classes import CLASSES  # noqa: E402
from handbone.postprocess import PostprocessParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The share of the image side the hand's bones span (synthetic.min_fill and
# max_fill): the demo's default spans 0.4 to 0.9.
SIZES = {"large": (0.75, 0.95), "small": (0.3, 0.5)}
SETTINGS = {
    "none": {"unify_side": "none", "crop": "none"},
    "right": {"unify_side": "right", "crop": "none"},
    "crop": {"unify_side": "none", "crop": "hand"},
    "both": {"unify_side": "right", "crop": "hand"},
}


def handbone(*arguments: str, log: Path) -> None:
    command = [sys.executable, "-m", "handbone", "--quiet", *arguments]
    with open(log, "a") as stream:
        done = subprocess.run(command, stderr=stream, stdout=stream, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\nlog: {log}")


def defaults() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def make_data(folder: Path, seed: int, size: str, args, config: dict) -> Path:
    """The generated data set of one seed and hand size, indexed, with its
    EDA and folds (shared by the settings)."""
    if (folder / "folds.csv").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "data.log"
    synthetic = {
        **config["synthetic"],
        "seed": seed,
        "train_people": args.train_people,
        "test_people": args.test_people,
        "image_size": args.image_size,
    }
    synthetic["min_fill"], synthetic["max_fill"] = SIZES[size]
    options = [f"--{key.replace('_', '-')}={value}" for key, value in sorted(synthetic.items())]
    handbone("demo-data", "--out", str(folder / "demo"), *options, log=log)
    handbone("index", "--data-root", str(folder / "demo" / "data"), "--out", str(folder / "index.csv"), log=log)
    handbone("eda", "--index", str(folder / "index.csv"), "--out-dir", str(folder / "eda"), log=log)
    outliers = config["outliers"]
    handbone(
        "split",
        *("--index", str(folder / "index.csv"), "--folds", str(args.folds), "--stratify", "none"),
        *("--image-stats", str(folder / "eda" / "image_stats.csv"), "--outliers", str(folder / "eda" / "outliers.csv")),
        *("--exclude-reasons", json.dumps(outliers["exclude_reasons"]), "--exclude", "[]", "--include", "[]"),
        *("--out", str(folder / "folds.csv"), "--excluded-out", str(folder / "excluded.csv")),
        log=log,
    )
    return folder


def run_setting(data: Path, setting: str, args, config: dict) -> Path:
    """Frames, cache, training, test prediction and score of one setting;
    the folder with scores/holdout_per_class.csv."""
    run = data / setting
    scores = run / "scores" / "holdout_per_class.csv"
    if scores.exists():
        return run
    run.mkdir(parents=True, exist_ok=True)
    log = run / "run.log"
    preprocess = {**config["preprocess"], **SETTINGS[setting]}
    frame_options = {key: preprocess[key] for key in ("unify_side", "crop", "crop_margin")}
    index, frames = str(data / "index.csv"), str(run / "frames.csv")
    handbone(
        "frames",
        *("--index", index, "--image-stats", str(data / "eda" / "image_stats.csv")),
        *("--options", json.dumps(frame_options), "--out", frames),
        log=log,
    )
    cache = run / "cache"
    handbone(
        "preprocess",
        "--index",
        index,
        "--frames",
        frames,
        "--options",
        json.dumps(preprocess),
        "--out",
        str(cache),
        log=log,
    )
    train = {**config["train"], "epochs": args.epochs, "val_every": args.epochs, "input_size": args.input_size}
    # What `auto` resolves to (config.py): flips only while hands keep both sides.
    flip = preprocess["unify_side"] != "right"
    train["augment"] = {**train["augment"], "hflip": 0.5 if flip else 0.0}
    model = config["models"]["unet_mobilenetv3"]
    handbone(
        "train",
        *("--cache", str(cache), "--folds", str(data / "folds.csv"), "--fold", "0"),
        *("--model-spec", json.dumps(model), "--options", json.dumps(train)),
        *("--out-dir", str(run / "model"), "--threads", str(args.threads)),
        log=log,
    )
    predict = {key: config["predict"][key] for key in ("batch_size", "overlap", "precision", "scales")}
    predict["hflip"] = flip
    handbone(
        "predict",
        *("--index", index, "--split", "test", "--frames", frames, "--checkpoints", str(run / "model" / "model.pt")),
        *("--preprocess", json.dumps(preprocess), "--options", json.dumps(predict)),
        *("--out-dir", str(run / "test"), "--threads", str(args.threads)),
        log=log,
    )
    params = run / "params.json"
    params.write_text(json.dumps(PostprocessParams.plain(0.5).to_dict()))
    submission = str(run / "submission.csv")
    handbone(
        "submit",
        *("--probabilities", str(run / "test"), "--index", index, "--params", str(params)),
        *("--out", submission, "--threads", str(args.threads)),
        log=log,
    )
    handbone(
        "score",
        *("--submission", submission, "--index", index),
        *("--ground-truth", str(data / "demo" / "ground_truth" / "test"), "--out-dir", str(run / "scores")),
        log=log,
    )
    return run


def summary(table: pd.DataFrame, max_class_drop: float) -> str:
    lines = []
    for size, rows in table.groupby("size", sort=False):
        per_seed = rows.groupby(["setting", "seed"], sort=False)["dice"].mean().unstack("seed")
        per_class = rows.groupby(["setting", "class"], sort=False)["dice"].mean().unstack("class")
        lines.append(f"\n{size} hands ({len(per_seed.columns)} seeds), held-out Dice:")
        lines.append(f"{'setting':<8} {'mean':>7}  per seed ({', '.join(str(seed) for seed in per_seed.columns)})")
        reference = "none" if "none" in per_class.index else per_class.index[0]
        for setting in per_seed.index:
            mean = per_seed.loc[setting].mean()
            seeds = ", ".join(f"{value:.4f}" for value in per_seed.loc[setting])
            change = per_class.loc[setting] - per_class.loc[reference]
            losers = change[change < -max_class_drop].sort_values()
            lost = ", ".join(f"{name} {value:+.3f}" for name, value in losers.items())
            lines.append(
                f"{setting:<8} {mean:>7.4f}  ({seeds}); vs {reference}: {mean - per_seed.loc[reference].mean():+.4f}, "
                f"{len(losers)} classes lose > {max_class_drop}" + (f" ({lost})" if lost else "")
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--train-people", type=int, default=16)
    parser.add_argument("--test-people", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--folds", type=int, default=8, help="fold 0 validates, the rest trains")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-class-drop", type=float, default=0.01)
    parser.add_argument("--work", type=Path, default=Path("/tmp/one_hand"))
    parser.add_argument("--table", type=Path, default=None, help="CSV of every run's held-out Dice per class")
    args = parser.parse_args()
    config = defaults()
    rows = []
    for seed in args.seeds:
        for size in args.sizes:
            data = make_data(args.work / f"seed{seed}_{size}", seed, size, args, config)
            for setting in args.settings:
                start = time.perf_counter()
                run = run_setting(data, setting, args, config)
                scores = pd.read_csv(run / "scores" / "holdout_per_class.csv").set_index("class")["dice"]
                print(
                    f"seed {seed} {size} {setting}: held-out {scores.reindex(CLASSES).mean():.4f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                for name in CLASSES:
                    rows.append({"seed": seed, "size": size, "setting": setting, "class": name, "dice": scores[name]})
    table = pd.DataFrame(rows)
    if args.table:
        table.to_csv(args.table, index=False)
    print(summary(table, args.max_class_drop))


if __name__ == "__main__":
    main()
