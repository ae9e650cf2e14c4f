"""handbone estimate: the workflow's jobs from Snakemake's dry run, their
costs from the tables, and the jobs packed as Snakemake packs them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from handbone import estimate
from handbone.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_jobs():
    """The demo config's jobs, from a real dry run in the repository."""
    return estimate.parse_dry_run(
        estimate.dry_run(["config.yaml"], cores=2, gpus=1, pending=False, snakefile=str(ROOT / "Snakefile"))
    )


def test_the_dry_run_gives_every_job_with_its_rule_threads_gpu_and_inputs(demo_jobs, monkeypatch):
    by_rule = {}
    for job in demo_jobs:
        by_rule.setdefault(job.rule, []).append(job)
    folds = yaml.safe_load((ROOT / "config.yaml").read_text())["cv"]["folds"]
    assert len(by_rule["train"]) == len(by_rule["predict_oof"]) == folds
    assert len(by_rule["predict_test"]) == 1 and len(by_rule["submission"]) == 1
    train = {job.wildcards["fold"]: job for job in by_rule["train"]}
    assert all(job.gpu and job.threads == 2 for job in by_rule["train"])  # 4 threads, capped at --cores 2
    assert not any(job.gpu for job in by_rule["eda"] + by_rule["submission"])
    # Each out-of-fold prediction waits for its own fold's model, the test prediction for every fold's.
    for job in by_rule["predict_oof"]:
        assert train[job.wildcards["fold"]].jobid in job.waits_for
    assert {job.jobid for job in by_rule["train"]} <= by_rule["predict_test"][0].waits_for
    preprocess = by_rule["preprocess"][0].jobid
    assert all(preprocess in job.waits_for for job in by_rule["train"])
    assert by_rule["train"][0].command and not by_rule["all"][0].command  # all runs nothing


def test_packing_follows_the_gpu_slots_the_cores_and_the_order_of_the_jobs():
    def job(jobid, seconds, gpu=True, threads=1, waits_for=()):
        return estimate.Job(jobid=jobid, rule="r", threads=threads, gpu=gpu, waits_for=set(waits_for), seconds=seconds)

    three = [job(1, 10), job(2, 10), job(3, 10)]
    assert estimate.pack(three, gpus=2, cores=8) == 20
    assert estimate.pack(three, gpus=3, cores=8) == 10
    assert estimate.pack(three, gpus=None, cores=1) == 30  # one core: one job at a time
    # A chain: the second waits for the first whatever the slots.
    assert estimate.pack([job(1, 10), job(2, 5, waits_for=[1])], gpus=3, cores=8) == 15
    # The longest remaining chain starts first: 4 + 4 then 6 beside them, not 6 + 4 after 4.
    jobs = [job(1, 4), job(2, 4, waits_for=[1]), job(3, 6)]
    assert estimate.pack(jobs, gpus=2, cores=8) == 8
    # A CPU job runs beside GPU jobs when cores are free.
    assert estimate.pack([job(1, 10), job(2, 10, gpu=False)], gpus=1, cores=2) == 10


def test_sliding_windows_and_scales_count_as_inference_predicts_them():
    # 2048 px frames, 1024 windows at overlap 0.5: 3 x 3, and 4 x 4 at scale 1.2 (2458 px).
    assert estimate.windows_per_image(2048, 1024, "patch", 0.5, [1.0]) == 9
    assert estimate.windows_per_image(2048, 1024, "patch", 0.5, [0.8, 1.0, 1.2]) == 9 + 9 + 16
    # Resize mode: one input per scale, costing its pixels.
    assert estimate.windows_per_image(384, 256, "resize", 0.5, [0.8, 1.0]) == pytest.approx(0.64 + 1.0)


def test_a_model_missing_from_the_cost_table_is_named_with_the_command_that_measures_it():
    table = yaml.safe_load((estimate.COSTS_DIR / "v100-16gb.yaml").read_text())
    with pytest.raises(
        ConfigError, match=r"no figures for mine \(Unet / tu-mobilenetv3_small_100\).*benchmarks/models.py --costs-out"
    ):
        estimate.model_costs(table, {"arch": "Unet", "encoder": "tu-mobilenetv3_small_100"}, "mine", Path("v100.yaml"))
    with pytest.raises(ConfigError, match="use one of a100-40gb, cpu, h200, v100-16gb"):
        estimate.cost_table_path("h100")
    # A measured entry names its kwargs: another decoder is another network.
    measured = {"models": [{"arch": "Unet", "encoder": "e", "kwargs": {"decoder_channels": [8]}, "window": 64}]}
    assert estimate.model_costs(
        measured, {"arch": "Unet", "encoder": "e", "kwargs": {"decoder_channels": [8]}}, "a", Path("t")
    )
    with pytest.raises(ConfigError):
        estimate.model_costs(measured, {"arch": "Unet", "encoder": "e"}, "b", Path("t"))


def test_every_shipped_cost_table_covers_the_models_of_its_configs():
    from handbone import config

    for name, configs in {
        "v100-16gb": ["configs/competition.yaml"],
        "a100-40gb": ["configs/competition.yaml"],
        "cpu": ["config.yaml", "configs/demo_ensemble.yaml"],
        "h200": ["config.yaml", "configs/competition.yaml", "configs/second_team.yaml"],
    }.items():
        path = estimate.cost_table_path(name)
        table = estimate.read_table(path)
        for configfile in configs:
            values = config.load_config(estimate.workflow_configs([str(ROOT / configfile)]))
            for model, spec in config.model_specs(values).items():
                entry = estimate.model_costs(table, spec, model, path)
                assert entry["train_ms_per_window"] and entry["infer_ms_per_window"]


def test_every_member_of_both_recipes_fits_a_16_gb_card_at_its_batch_by_the_measured_peaks():
    """The H200 table's peaks are the tensors' allocations, the same on a
    V100: each recipe's batch sizes must leave room for the CUDA context on
    the 16 GB cards the recipes are planned for (SegFormer MiT-B5 needs
    24 GiB at batch 2, so second_team.yaml trains it at batch 1)."""
    from handbone import config

    path = estimate.cost_table_path("h200")
    table = estimate.read_table(path)
    sixteen_gb = 16 * 10**9 / 2**30
    for configfile in ("configs/competition.yaml", "configs/second_team.yaml"):
        values = config.load_config(estimate.workflow_configs([str(ROOT / configfile)]))
        for model, spec in config.model_specs(values).items():
            options = config.train_options(values, model)
            window = int(options["input_size"])
            peak = estimate.peak_gib(
                estimate.model_costs(table, spec, model, path, window), options["batch_size"], window
            )
            assert peak is not None and peak + table["context_gib"] <= sixteen_gb, (configfile, model, peak)


def test_the_competition_recipe_fits_12_hours_and_16_gb_on_three_v100s():
    """The shipped recipe as a user plans it (docs/gpus.md): its data root is
    not here, so the competition's counts and a stand-in root are used; with
    a GPU table the cores default to 8 per GPU (the server planned for)."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "handbone",
            "estimate",
            "--configfile",
            "configs/competition.yaml",
            "--gpus",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    output = completed.stdout
    assert "Images: 800 training, 300 test, 2048 px frames (the competition's counts" in output
    folds = yaml.safe_load((ROOT / "configs/competition.yaml").read_text())["cv"]["folds"]
    members = [
        name for name, spec in yaml.safe_load((ROOT / "configs/competition.yaml").read_text())["models"].items() if spec
    ]
    assert re.search(rf"^\| train \| {folds * len(members)} \| yes \|", output, re.MULTILINE)
    hours = float(re.search(r"Wall time with 3 GPU slots and 24 cores: ([\d.]+) h", output).group(1))
    assert hours <= 12
    assert output.count("fits a 16 GB card") == len(members) and "DOES NOT FIT" not in output
