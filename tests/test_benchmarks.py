"""Every script in benchmarks/ runs at its smallest size, so that a
refactor cannot break one silently."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from handbone.classes import CLASSES

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *arguments: str) -> str:
    path = ROOT / "benchmarks" / script
    command = [str(path)] if script.endswith(".sh") else [sys.executable, str(path)]
    # This environment's snakemake, python and handbone first on PATH, as in conftest.
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [*command, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _number(pattern: str, output: str) -> float:
    """The number that ``pattern``'s group catches in ``output``."""
    found = re.search(pattern, output, re.MULTILINE)
    assert found, f"{pattern!r} not in:\n{output}"
    return float(found.group(1))


def test_sides_benchmark_scores_the_side_from_the_pixels(tmp_path):
    output = _run("sides.py", "--people", "2", "--size", "128", "--seeds", "1", "--table", str(tmp_path / "sides.csv"))
    assert "skew alone" in output and "shipped: pose.SKEW_WEIGHT" in output
    assert "with the pair rule: " in output
    table = pd.read_csv(tmp_path / "sides.csv")
    assert {"finger_gap", "skew", "side_score", "side", "truth"} <= set(table.columns)
    assert table["set"].str.startswith("generated").sum() == 6


def test_data_pipeline_benchmark_times_the_cache_against_decoding(tmp_path):
    output = _run("data_pipeline.py", "--size", "128", "--window", "64", "--images", "1", "--samples", "1")
    assert "2 train images of 128x128, 64x64 windows, 1 samples each way" in output
    assert "cache built in " in output
    for name in ("naive (PNG + JSON per sample)", "cache (memory-mapped window)"):
        assert _number(rf"{re.escape(name)}\s+([\d.]+) samples/s", output) > 0
    assert _number(r"cache / naive: ([\d.]+)x", output) > 0


def test_inference_benchmark_compares_windows_storage_and_memory(tmp_path):
    import torch

    from handbone.model import build_model, save_checkpoint

    torch.manual_seed(0)
    spec = {
        "arch": "Unet",
        "encoder": "tu-mobilenetv3_small_050",
        "encoder_weights": None,
        "kwargs": {"decoder_channels": [16, 16, 8, 8, 8]},
    }
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, build_model(spec).eval(), {"model": spec, "input_size": 64, "input_mode": "resize"})
    output = _run(
        "inference.py",
        *("--checkpoint", str(checkpoint), "--size", "64", "--window", "64", "--images", "1", "--repeats", "1"),
    )
    # 1. Our Gaussian sliding window equals MONAI's.
    assert "one 64 x 64 image" in output
    assert _number(r"largest \|ours - MONAI\| = (\S+);", output) < 1e-4
    # 2. The three storage formats, ours thresholding like the float32 map.
    assert "maps of 29 x 64 x 64" in output and "MB/image" in output
    for name in ("float32 savez_compressed (nnU-Net)", "float16 savez_compressed"):
        assert re.search(rf"^\s+{re.escape(name)}(\s+[\d.]+){{4}}$", output, re.MULTILINE), output
    assert _number(r"handbone \.npz \(uint8 boxes\)(?:\s+[\d.]+){3}\s+([\d.]+)$", output) > 0.9
    assert re.search(r"ours vs float16: \d+x smaller", output)
    # 3. Peak memory of each input mode, measured in a fresh process.
    for label in ("whole image resized", "64 px windows, overlap 0.5, batch 4", "64 px windows, overlap 0.5, batch 1"):
        assert _number(rf"{re.escape(label)}\s+([\d.]+)\s+[\d.]+\s+[\d.]+$", output) > 0


def test_models_benchmark_measures_a_training_step_and_a_forward_pass_of_the_demo_model(tmp_path):
    out, costs = tmp_path / "models.json", tmp_path / "costs.yaml"
    output = _run(
        "models.py",
        *("--device", "cpu", "--window", "64", "--batches", "1", "--repeats", "1", "--configs", "config.yaml"),
        *("--out", str(out), "--costs-out", str(costs)),
    )
    models = {name: spec for name, spec in yaml.safe_load((ROOT / "config.yaml").read_text())["models"].items() if spec}
    assert (
        "Training step (forward + backward + AdamW) and prediction forward pass, 64 x 64 windows, device cpu" in output
    )
    assert "| model | config | arch / encoder | params (M) | train ms/window b1 | predict ms/window b1 |" in output
    for name in models:
        assert re.search(
            rf"^\| {name} \| config.yaml \| .+ \| [\d.]+ \| \d+ \| \d+ \| [\d.]+ \|$", output, re.MULTILINE
        )
    report = json.loads(out.read_text())
    assert report["window"] == 64 and [row["model"] for row in report["models"]] == list(models)
    for row in report["models"]:
        measured = row["batches"]["1"]
        assert row["parameters"] > 0 and measured["seconds_per_window"] > measured["infer_seconds_per_window"] > 0
    # The cost table handbone estimate reads: one entry per model, matched on its spec.
    table = yaml.safe_load(costs.read_text())
    assert table["device"].startswith("CPU") and "memory_gib" not in table
    for entry, spec in zip(table["models"], models.values()):
        assert (entry["arch"], entry["encoder"], entry.get("kwargs")) == (
            spec["arch"],
            spec["encoder"],
            spec.get("kwargs"),
        )
        assert entry["window"] == 64 and entry["train_ms_per_window"][1] > entry["infer_ms_per_window"][1] > 0


def test_outliers_benchmark_scores_the_eda_against_the_manifest():
    output = _run("outliers.py", "--people", "2", "--size", "128")
    assert re.search(r"^\d+ train images \(128 px, with every case\), \d+ with an injected fault", output, re.M)
    assert "recall per injected fault kind (image excluded):" in output
    assert _number(r"^  excluded \(any\)\s+\d+/\s*\d+ = ([\d.]+)$", output) >= 0
    assert re.search(r"cut, adults: 0/\d+ excluded \(must be 0\)", output)
    assert _number(r"side agrees ([\d.]+)", output) >= 0.5
    assert re.search(r"real radiographs: pixel pose on \d+ images without error", output)


def test_submission_benchmark_encodes_and_times_the_stage(tmp_path):
    # An empty results folder: part 3 (the demo's ensembles) says it is skipped.
    output = _run("submission.py", "--images", "1", "--unique", "1", "--size", "128", "--results", str(tmp_path))
    assert "RLE of 29 masks of 128 x 128" in output
    assert "identical strings: True" in output
    assert "maps of 29 x 128 x 128" in output
    assert re.search(r"^\s+1(\s+[\d.]+){5}$", output, re.MULTILINE), output  # 1 image: seconds, GB, images/s
    assert "3. skipped: the demo has fewer than 2 models" in output


def test_compare_runs_prints_each_class_and_applies_the_rule(tmp_path):
    for label, dice in (("none", 0.80), ("right", 0.82)):
        results = tmp_path / label / "results"
        (results / "postprocess").mkdir(parents=True)
        (results / "scores").mkdir()
        steps = [("plain threshold", dice - 0.01), ("largest component", dice)]  # the last step was frozen
        pd.DataFrame(
            [{"step": step, "mean_dice": value, **dict.fromkeys(CLASSES, value)} for step, value in steps]
        ).to_csv(results / "postprocess" / "oof_scores.csv", index=False)
        held_out = [dice - 0.1 if label == "right" and name == CLASSES[3] else dice for name in CLASSES]
        pd.DataFrame({"class": CLASSES, "dice": held_out}).to_csv(
            results / "scores" / "holdout_per_class.csv", index=False
        )
    output = _run("compare_runs.py", f"none={tmp_path / 'none'}", f"right={tmp_path / 'right'}")
    assert re.search(r"^\s+none OOF\s+none held-out\s+right OOF\s+right held-out$", output, re.MULTILINE)
    assert re.search(rf"^{CLASSES[3]}\s+0\.80*\s+0\.80*\s+0\.820*\s+0\.720*$", output, re.MULTILINE), output
    assert f"right: held-out +{0.02 - 0.1 / 29:.4f}, OOF +0.0200" in output
    assert f"1 classes lose more than 0.01 (worst {CLASSES[3]} -0.0800); does not help by the rule" in output
    markdown = _run("compare_runs.py", f"none={tmp_path / 'none'}", f"right={tmp_path / 'right'}", "--markdown")
    assert "|   none OOF |" in markdown and "| mean " in markdown


def test_one_hand_benchmark_runs_each_setting_and_summarises_per_hand_size(tmp_path):
    table = tmp_path / "one_hand.csv"
    arguments = (
        *("--seeds", "1", "--sizes", "small", "--settings", "none", "both", "--epochs", "1"),
        *("--train-people", "4", "--test-people", "1", "--image-size", "128", "--input-size", "64", "--folds", "2"),
        *("--work", str(tmp_path / "work"), "--table", str(table)),
    )
    output = _run("one_hand.py", *arguments)
    rows = pd.read_csv(table)
    assert len(rows) == 2 * len(CLASSES) and set(rows["setting"]) == {"none", "both"}
    assert rows["dice"].between(0, 1).all()
    assert "small hands (1 seeds), held-out Dice:" in output
    both = rows[rows["setting"] == "both"]["dice"].mean() - rows[rows["setting"] == "none"]["dice"].mean()
    assert re.search(rf"^both\s+[\d.]+\s+\([\d.]+\); vs none: {both:+.4f}, \d+ classes lose", output, re.MULTILINE), (
        output
    )
    # Each setting's own frames: left hands mirrored and hands cropped only in the shipped default.
    work = tmp_path / "work" / "seed1_small"
    both, none = (pd.read_csv(work / setting / "frames.csv") for setting in ("both", "none"))
    assert both["flip"].any() and not none["flip"].any()
    assert (both["bottom"] - both["top"] < both["height"]).any() and (
        none["bottom"] - none["top"] == none["height"]
    ).all()
    # A second call reuses the scored runs instead of training again.
    model = work / "none" / "model" / "model.pt"
    trained = model.stat().st_mtime_ns
    assert _run("one_hand.py", *arguments).splitlines()[-4:] == output.splitlines()[-4:]
    assert model.stat().st_mtime_ns == trained


def test_demo_run_dry_run_plans_the_demo_and_deletes_nothing(tmp_path):
    # The real run takes about 17 minutes and empties results/; -n only plans it
    # (here in an empty folder, so the plan is the whole demo).
    output = _run("demo_run.sh", "2", "-n", "--directory", str(tmp_path))
    assert "This was a dry-run (flag -n)" in output
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", output, re.MULTILINE))
    assert jobs["demo_data"] == "1" and jobs["submission"] == "1" and int(jobs["train"]) >= 1
    assert not (tmp_path / "results").exists()


def test_estimate_check_estimates_a_tiny_run_then_measures_it_and_host_measures_the_work_around_the_networks(
    tmp_path,
):
    from conftest import TINY_CONFIG

    config = {key: TINY_CONFIG[key] for key in ("synthetic", "cv", "train")}
    config["models"] = {"unet_mobilenetv3": None, **TINY_CONFIG["models"]}
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(config))
    costs = tmp_path / "costs.yaml"
    _run(
        "models.py",
        *("--device", "cpu", "--window", "64", "--batches", "2", "--repeats", "1", "--configs", str(configfile)),
        *("--out", str(tmp_path / "models.json"), "--costs-out", str(costs)),
    )
    output = _run(
        "estimate_check.py",
        *("--configfile", str(configfile), "--costs", str(costs), "--workdir", str(tmp_path / "run")),
    )
    assert "Device: CPU" in output and "Images: 8 training, 2 test, 128 px frames" in output
    train = re.search(r"^\| train\s+\|\s+2 \|\s+([\d.]+)\s+\|\s+([\d.]+)\s+\|", output, re.MULTILINE)
    assert train and float(train.group(1)) > 0 and float(train.group(2)) > 0
    estimated = _number(r"Wall time: estimated (\d+) s", output)
    measured = _number(r"Wall time: estimated \d+ s, measured (\d+) s", output)
    assert estimated > 0 and measured > 0
    # The host table from that run: every cost measured, each rule's time per megapixel.
    host = tmp_path / "host.yaml"
    _run(
        "host.py",
        *("--results", str(tmp_path / "run" / "results"), "--configfile", str(configfile), "--samples", "4"),
        *("--out", str(host)),
    )
    table = yaml.safe_load(host.read_text())
    for key in (
        "job_start_s",
        "rule_start_s",
        "model_build_s",
        "sample_s_per_mpix",
        "maps_s_per_mpix",
        "dice_s_per_mpix",
    ):
        assert table[key] > 0, key
    assert table["job_start_s"] > table["rule_start_s"]  # a network job imports torch too
    assert table["rules"]["eda"]["s_per_mpix"] > 0 and table["rules"]["submission"]["s_per_mpix"] > 0


def test_side_margins_benchmark_predicts_each_image_in_both_orientations(tmp_path):
    import torch

    from handbone import config
    from handbone.classes import CLASSES
    from handbone.model import build_model, save_checkpoint

    spec = {"arch": "Unet", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None}
    spec["kwargs"] = {"decoder_channels": [32, 16, 16, 8, 8]}
    preprocess = config.load_config([str(ROOT / "config.yaml")])["preprocess"]
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"fold{seed}.pt"
        meta = {"model": spec, "input_size": 64, "input_mode": "resize", "preprocess": preprocess}
        save_checkpoint(path, build_model(spec, 64), {**meta, "classes": list(CLASSES)})
        checkpoints.append(str(path))
    table = tmp_path / "margins.csv"
    output = _run(
        "side_margins.py",
        *("--checkpoints", *checkpoints, "--config", str(ROOT / "config.yaml")),
        *("--people", "1", "--size", "128", "--seeds", "1", "--no-real", "--table", str(table)),
    )
    assert "2 checkpoints; predict options" in output
    assert re.search(r"^generated: 4 images, margin min -?[\d.]+", output, re.MULTILINE)
    assert re.search(r"^scale fitted on the 4 generated images: [\d.]+$", output, re.MULTILINE)
    assert "generated: sides right after the check" in output and "shipped: frames.NETWORK_SIDE_SCALE" in output
    margins = pd.read_csv(table)
    assert len(margins) == 4 and set(margins["truth"]) <= {"left", "right"}
    assert (margins["smallest model margin"] <= margins["largest model margin"]).all()
