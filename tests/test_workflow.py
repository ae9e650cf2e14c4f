"""The real Snakefile run by the real snakemake command on a tiny data set."""

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY_CONFIG, planned_jobs, snakemake, snakemake_command
from handbone.submission import validate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_whole_chain_writes_a_valid_submission(finished_run):
    results = finished_run / "results"
    index = pd.read_csv(results / "index" / "index.csv")
    test = index[index["split"] == "test"]
    sizes = {name: (h, w) for name, h, w in zip(test["image_name"], test["height"], test["width"])}
    assert validate(results / "submission.csv", sizes) == 2
    for fold in (0, 1):
        assert (results / "models" / "tiny" / f"fold{fold}" / "model.pt").is_file()
    assert len(list((results / "predictions" / "tiny" / "test").glob("*.npz"))) == 2
    holdout = json.loads((results / "scores" / "holdout.json").read_text())
    assert 0.0 <= holdout["mean_dice"] <= 1.0 and holdout["images"] == 2
    cv = pd.read_csv(results / "cv" / "cv_scores.csv")
    assert list(cv["fold"].astype(str)) == ["0", "1", "mean"]
    assert (results / "logs" / "train" / "tiny" / "fold0.log").is_file()
    assert (results / "benchmarks" / "train" / "tiny" / "fold0.tsv").is_file()


def test_out_of_fold_maps_cover_every_training_image_once(finished_run):
    results = finished_run / "results"
    folds = pd.read_csv(results / "splits" / "folds.csv")
    for fold in (0, 1):
        maps = sorted(path.name for path in (results / "predictions" / "tiny" / "oof" / f"fold{fold}").glob("*.npz"))
        expected = sorted(Path(name).stem + ".npz" for name in folds.loc[folds["fold"] == fold, "image_name"])
        assert maps == expected and maps


def test_overlays_of_test_images_and_extra_folders(finished_run):
    from handbone import probmaps

    results = finished_run / "results"
    assert len(list((results / "overlays" / "test").glob("*.png"))) == 2
    odd = results / "predictions" / "tiny" / "extra" / "odd"
    assert probmaps.load(odd / "palette.npz").shape == (29, 45, 70)
    assert probmaps.load(odd / "nested__rgb.npz").shape == (29, 90, 33)
    assert sorted(p.name for p in (results / "overlays" / "extra" / "odd").glob("*.png")) == [
        "nested__rgb.png",
        "palette.png",
    ]


def test_report_opens_on_the_run_summary_and_holds_the_prediction_analysis(finished_run):
    results = finished_run / "results"
    analysis = pd.read_csv(results / "analysis" / "per_class.csv")
    assert list(analysis["model"]) == ["tiny", "uniform ensemble"]
    assert len(pd.read_csv(results / "analysis" / "added_last.csv")) == 1
    assert len(list((results / "analysis" / "worst" / "tiny").glob("*.png"))) == 4
    snakemake(finished_run, "--report", str(finished_run / "report.html"))
    page = (finished_run / "report.html").read_text()
    # The front page (the report's workflow description, JSON in the page) with the run's own numbers.
    description = json.loads(re.search(r"var workflow_desc = (\".*?\");\n", page).group(1))
    holdout = json.loads((results / "scores" / "holdout.json").read_text())
    cv = json.loads((results / "cv" / "metrics.json").read_text())["cv_dice"]["tiny"]
    assert "summary of this run" in description and "System Message" not in description
    assert f"{holdout['mean_dice']:.4f}" in description and f"{cv['mean_dice']:.4f}" in description
    assert "7. Prediction analysis" in description and "similarity.png" in page


@pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz's dot is not installed (README: apt-get install graphviz)"
)
def test_dag_rule_draws_the_rule_graph_and_the_job_graph(finished_run):
    snakemake(finished_run, "--cores", "1", "dag")
    rulegraph = (finished_run / "results" / "dag" / "rulegraph.svg").read_text()
    jobs = (finished_run / "results" / "dag" / "dag.svg").read_text()
    assert rulegraph.startswith("<?xml") and "fit_postprocess" in rulegraph and "predict_extra" in rulegraph
    assert jobs.count(">train<") == 2 and jobs.count(">predict_oof<") == 2  # one node per job: 2 folds


def _training_jobs(workdir: Path) -> list[int]:
    """PIDs of `handbone train` processes running in ``workdir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if b"handbone" in command and b"train" in command and Path(os.readlink(entry / "cwd")) == workdir:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_run_killed_during_training_recovers_to_the_same_submission(finished_run, tmp_path):
    """SIGKILL the first training job of a fresh run, rerun, and compare the
    submission byte for byte with the uninterrupted run (same seed, CPU):
    recovery and determinism at once."""
    import signal
    import time

    workdir = tmp_path.resolve()
    config = yaml.safe_load((finished_run / "tiny.yaml").read_text())
    config["predict"]["extra_images"] = {}
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    command, environment = snakemake_command(workdir, "--cores", "2")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    killed = None
    deadline = time.time() + 300
    while killed is None and process.poll() is None and time.time() < deadline:
        jobs = _training_jobs(workdir)
        if jobs:
            time.sleep(0.5)  # let it get into its first epoch
            os.kill(jobs[0], signal.SIGKILL)
            killed = jobs[0]
        time.sleep(0.05)
    assert killed is not None, "no training job was seen running"
    assert process.wait(timeout=300) != 0  # the killed job fails the run
    assert not (workdir / "results" / "submission.csv").exists()
    snakemake(workdir, "--cores", "2", "--rerun-incomplete")
    uninterrupted = (finished_run / "results" / "submission.csv").read_bytes()
    assert (workdir / "results" / "submission.csv").read_bytes() == uninterrupted


def test_finished_run_has_nothing_left_to_do(finished_run):
    result = snakemake(finished_run, "-n", "--cores", "24", "--resources", "gpu=3")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_the_threshold_reruns_only_what_depends_on_it(finished_run):
    changed = {**yaml.safe_load((finished_run / "tiny.yaml").read_text()), "postprocess": {"threshold": 0.4}}
    (finished_run / "threshold.yaml").write_text(yaml.safe_dump(changed))
    result = snakemake(finished_run, "-n", "--cores", "2", configfile="threshold.yaml")
    assert planned_jobs(result.stdout) == {
        "all": "1",
        "fit_postprocess": "1",
        "score": "1",
        "submission": "1",
        "overlays_test": "1",
        "overlays_extra": "1",
        "run_summary": "1",
        "total": "7",
    }


def dry_run_jobs(dry_run_output: str) -> list[tuple[str, list[str], list[str]]]:
    """(rule, input files, output files) of every job in `snakemake -n` output."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        if rule:
            files = {kind: re.search(rf"^\s+{kind}: (.*)$", block, flags=re.MULTILINE) for kind in ("input", "output")}
            names = {
                kind: [name.strip() for name in found.group(1).split(",")] if found else []
                for kind, found in files.items()
            }
            jobs.append((rule.group(1), names["input"], names["output"]))
    return jobs


def job_inputs(dry_run_output: str) -> dict[str, list[str]]:
    """{rule: input files} of every job in `snakemake -n` output."""
    inputs = {}
    for rule, files, _ in dry_run_jobs(dry_run_output):
        if files:
            inputs.setdefault(rule, []).extend(files)
    return inputs


def test_fitting_rules_never_read_a_test_set_file(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    inputs = job_inputs(snakemake(tmp_path, "-n", "--cores", "2", "--forceall").stdout)
    assert "fit_ensemble" in inputs and "fit_postprocess" in inputs
    for rule in ("fit_ensemble", "fit_postprocess"):
        test_files = [name for name in inputs[rule] if "test" in Path(name).parts or "index" in Path(name).parts]
        assert not test_files, f"{rule} reads test-set files {test_files}"
        assert any("/oof/" in name for name in inputs[rule])
    # The test maps reach only the rules after the fit: the ensemble, and the
    # run's summary, which reads their side_checks.csv (sides the models decided).
    readers = {
        rule
        for rule, files in inputs.items()
        if any(name.startswith("results/predictions/tiny/test") for name in files)
    }
    assert readers == {"ensemble", "run_summary"}


def test_pseudo_label_round_runs_on_top_of_round_one_and_keeps_folds_apart(finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["pseudo_label"].update(enabled=True, confidence=0.0)  # tiny models are unsure: keep every test image
    (workdir / "pseudo.yaml").write_text(yaml.safe_dump(config))
    dry_run = snakemake(workdir, "-n", "--cores", "2", configfile="pseudo.yaml").stdout
    plan = planned_jobs(dry_run)
    assert "train" not in plan and "predict_test" not in plan and "fit_postprocess" not in plan  # round 1 is done
    assert plan["pseudo_label"] == "2" and plan["train_pseudo"] == "2" and plan["compare_rounds"] == "1"
    # Fold k of round 2 learns from labels made by round 1's fold-k model alone.
    for rule, inputs, outputs in dry_run_jobs(dry_run):
        if rule == "pseudo_label":
            fold = re.search(r"fold(\d+)$", outputs[0]).group(1)
            assert [name for name in inputs if name.endswith(".pt")] == [f"results/models/tiny/fold{fold}/model.pt"]
        if rule == "train_pseudo":
            fold = re.search(r"fold(\d+)/model.pt", outputs[0]).group(1)
            assert [name for name in inputs if "/labels/" in name] == [f"results/pseudo/round2/labels/fold{fold}"]

    snakemake(workdir, "--cores", "2", configfile="pseudo.yaml")
    results = workdir / "results"
    index = pd.read_csv(results / "index" / "index.csv")
    test = index[index["split"] == "test"]
    sizes = {name: (h, w) for name, h, w in zip(test["image_name"], test["height"], test["width"])}
    assert validate(results / "pseudo" / "round2" / "submission.csv", sizes) == 2
    for fold in (0, 1):
        metrics = json.loads(
            (results / "pseudo" / "round2" / "models" / "tiny" / f"fold{fold}" / "metrics.json").read_text()
        )
        assert metrics["pseudo_labelled_images"] == 2
        # The pseudo-labels are kept in the frames the networks learn in (on by default).
        pseudo = pd.read_csv(results / "pseudo" / "round2" / "labels" / f"fold{fold}" / "cache.csv")
        assert pseudo["flip"].any() or (pseudo["height"] < pseudo["image_height"]).any()
        # Round 2's out-of-fold maps are of the same real training images as round 1's.
        maps = {
            round_: sorted(
                path.name for path in (folder / "predictions" / "tiny" / "oof" / f"fold{fold}").glob("*.npz")
            )
            for round_, folder in ((1, results), (2, results / "pseudo" / "round2"))
        }
        assert maps[1] == maps[2] and maps[1]
    rounds = pd.read_csv(results / "pseudo" / "rounds.csv")
    assert rounds["scored_on"].tolist() == [
        "OOF",
        "held-out",
        "OOF",
        "held-out",
        "OOF, minus round 1",
        "held-out, minus round 1",
    ]
    assert rounds["round"].tolist() == [1, 1, 2, 2, 2, 2]
    assert rounds.loc[2, "pseudo_labelled_test_images"] == "fold0: 2 of 2; fold1: 2 of 2"
    holdout = json.loads((results / "pseudo" / "round2" / "scores" / "holdout.json").read_text())
    assert rounds.loc[3, "mean_dice"] == pytest.approx(holdout["mean_dice"], abs=1e-5)
    assert rounds.loc[5, "mean_dice"] == pytest.approx(
        rounds.loc[3, "mean_dice"] - rounds.loc[1, "mean_dice"], abs=2e-6
    )
    assert (results / "pseudo" / "rounds.png").stat().st_size > 0


def test_frames_are_on_by_default_and_switching_them_off_retrains_on_whole_images(finished_run, tmp_path):
    """The default run learns from mirrored, cropped frames while every map
    and the submission stay on the original images; without the options
    the frames table, the cache and everything after it are made again."""
    from handbone.probmaps import load

    results = finished_run / "results"
    frames = pd.read_csv(results / "frames" / "frames.csv")
    assert frames["flip"].any() and (frames["bottom"] - frames["top"] < frames["height"]).any()
    index = pd.read_csv(results / "index" / "index.csv")
    sizes = dict(zip(index["image_name"], zip(index["height"], index["width"])))
    for path in (results / "predictions" / "tiny").glob("*/**/*.npz"):
        if path.stem + ".png" in sizes:
            assert load(path).shape == (29, *sizes[path.stem + ".png"])
    cache = pd.read_csv(next((results / "cache").glob("*/cache.csv")))
    framed = frames.set_index("image_name").loc[cache["image_name"]]
    assert (cache["height"].to_numpy() == (framed["bottom"] - framed["top"]).to_numpy()).all()

    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["preprocess"].update(unify_side="none", crop="none")
    (workdir / "whole.yaml").write_text(yaml.safe_dump(config))
    dry_run = snakemake(workdir, "-n", "--cores", "2", configfile="whole.yaml").stdout
    plan = planned_jobs(dry_run)
    assert plan["frames"] == plan["preprocess"] == "1" and plan["train"] == "2" and plan["predict_oof"] == "2"
    assert "demo_data" not in plan and "eda" not in plan  # the data and its EDA stay
    # With one-hand frames training ran without the flip augmentation and TTA; without them both are back.
    assert '"hflip": 0.5' in dry_run and '"hflip": true' in dry_run
    snakemake(workdir, "--cores", "2", configfile="whole.yaml")
    frames = pd.read_csv(workdir / "results" / "frames" / "frames.csv")
    assert not frames["flip"].any() and (frames["bottom"] - frames["top"] == frames["height"]).all()
    test_sizes = {name: size for (name, size), split in zip(sizes.items(), index["split"]) if split == "test"}
    assert validate(workdir / "results" / "submission.csv", test_sizes) == 2


def test_same_plan_with_three_gpus_as_on_a_laptop(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    laptop = planned_jobs(snakemake(tmp_path, "-n", "--cores", "2").stdout)
    server = planned_jobs(snakemake(tmp_path, "-n", "--cores", "24", "--resources", "gpu=3").stdout)
    assert laptop == server
    assert laptop["train"] == "2" and laptop["predict_test"] == "1"


@pytest.mark.parametrize(
    "change, named",
    [
        ({"cv": {"fold": 2}}, "fold"),  # a typo'd key
        ({"cv": {"folds": "three", "stratify": "pose"}}, "three"),  # a wrong type
        ({"models": {"../outside": TINY_CONFIG["models"]["tiny"]}}, "../outside"),  # a model name that is a path
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, change, named):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY_CONFIG, **change}))
    result = snakemake(tmp_path, "-n", "--cores", "1", check=False)
    assert result.returncode != 0
    assert named in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_an_unknown_encoder_stops_the_run_before_any_training(tmp_path):
    config = {
        **TINY_CONFIG,
        "models": {
            **TINY_CONFIG["models"],
            "broken": {"arch": "Unet", "encoder": "resnet_does_not_exist", "encoder_weights": None},
        },
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "2", check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "check_models.log").read_text()
    assert "models.broken" in log and "resnet_does_not_exist" in log
    assert not list((tmp_path / "results").glob("models/*/fold*/*")), "a training job started"


def test_a_real_data_root_replaces_the_demo(tmp_path):
    from handbone.synthetic import SyntheticConfig, generate

    root = generate(tmp_path / "set", SyntheticConfig(train_people=2, test_people=1, image_size=64), progress=False)
    config = {**TINY_CONFIG, "data": {"root": str(root / "data")}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    plan = planned_jobs(snakemake(tmp_path, "-n", "--cores", "2").stdout)
    assert "demo_data" not in plan and plan["score"] == "1"
    assert plan["index"] == "1" and plan["submission"] == "1"
    config["data"]["root"] = str(tmp_path / "missing")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--cores", "2", check=False)
    assert result.returncode != 0 and "missing/train/DCM does not exist" in result.stdout + result.stderr


def test_competition_config_plans_three_models_by_five_folds(tmp_path):
    from handbone.synthetic import SyntheticConfig, generate

    root = generate(tmp_path / "set", SyntheticConfig(train_people=5, test_people=1, image_size=64), progress=False)
    config = yaml.safe_load((REPO / "configs" / "competition.yaml").read_text())
    config["data"]["root"] = str(root / "data")  # the real root is not on this machine
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    # As the whole config, and merged over config.yaml (whose demo model it sets to null).
    for replace in (True, False):
        dry_run = snakemake(tmp_path, "-n", "--cores", "24", "--resources", "gpu=3", replace=replace).stdout
        plan = planned_jobs(dry_run)
        assert plan["train"] == "15" and plan["predict_test"] == "3" and "demo_data" not in plan
        trained = {
            re.search(r"results/models/([^/]+)/", outputs[0]).group(1)
            for rule, _, outputs in dry_run_jobs(dry_run)
            if rule == "train"
        }
        assert trained == {"unet_hrnet_w48", "nnunet", "deeplabv3plus_resnet50"}


def test_second_team_config_plans_five_members_by_five_folds_and_a_pseudo_label_round(tmp_path):
    from handbone.synthetic import SyntheticConfig, generate

    root = generate(tmp_path / "set", SyntheticConfig(train_people=5, test_people=1, image_size=64), progress=False)
    config = yaml.safe_load((REPO / "configs" / "second_team.yaml").read_text())
    config["data"]["root"] = str(root / "data")  # the real root is not on this machine
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    members = {name for name, spec in config["models"].items() if spec}
    dry_run = snakemake(tmp_path, "-n", "-p", "--cores", "24", "--resources", "gpu=3", replace=False).stdout
    plan = planned_jobs(dry_run)
    assert len(members) == 5 and "demo_data" not in plan
    assert plan["train"] == "25" and plan["train_pseudo"] == "25" and plan["pseudo_label"] == "5"
    assert plan["predict_test"] == "5" and plan["predict_test_pseudo"] == "5"
    assert plan["submission"] == plan["submission_pseudo"] == "1"
    for rule in ("train", "train_pseudo"):
        trained = {
            re.search(r"results/(?:pseudo/round2/)?models/([^/]+)/", outputs[0]).group(1)
            for name, _, outputs in dry_run_jobs(dry_run)
            if name == rule
        }
        assert trained == members, rule
    # The members' masks are combined by a vote, every hand a right one, no flip TTA.
    fit_ensemble = [line for line in dry_run.splitlines() if "handbone --quiet fit-ensemble" in line]
    assert fit_ensemble and all('"mode": "hard"' in line for line in fit_ensemble)
    assert '"hflip": false' in dry_run and '"hflip": true' not in dry_run


def test_the_model_check_gates_only_runs_with_jobs_of_that_model(tmp_path):
    """Without the pretrained weights a model needs, the data stages (no
    model involved) still run; the first run that would train it stops
    before any job, naming the model."""
    config = copy.deepcopy(TINY_CONFIG)
    config["models"]["tiny"]["encoder_weights"] = True
    config["weights"] = {"cache_dir": str(tmp_path / "empty-cache")}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2", "--until", "preprocess")
    results = tmp_path / "results"
    assert list(results.glob("cache/*/cache.csv")) and not (results / "logs" / "check_models.log").exists()
    result = snakemake(tmp_path, "--cores", "2", "--until", "train", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "pretrained weights missing" in output and "models.tiny" in output
    assert not (results / "splits").exists(), "a job ran before the check"


def test_pretrained_and_nnunet_members_run_through_every_rule_offline(tmp_path, pretrained_cache):
    """A pretrained encoder read from the weights cache and the nnU-Net-style
    member (deep supervision on) through training, prediction, ensembling
    and a pseudo-labelling round; without the weights nothing trains."""
    cache, _ = pretrained_cache
    config = copy.deepcopy(TINY_CONFIG)
    config["models"] = {
        "pretrained": {**TINY_CONFIG["models"]["tiny"], "encoder_weights": True},
        "nnunet": {"arch": "nnUNet", "kwargs": {"base_features": 8, "max_features": 32, "deep_supervision": 1}},
    }
    config["weights"] = {"cache_dir": str(tmp_path / "empty-cache")}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "2", check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "check_models.log").read_text()
    assert "models.pretrained" in log and "handbone fetch-weights" in log and "models.nnunet" not in log
    assert not list((tmp_path / "results").glob("models/*/fold*/*")), "a training job started"

    config["weights"]["cache_dir"] = str(cache)
    # The nnU-Net member through a pseudo-labelling round too (the tiny smp model's round is tested above).
    config["pseudo_label"].update(enabled=True, confidence=0.0, models=["nnunet"])
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2")
    results = tmp_path / "results"
    index = pd.read_csv(results / "index" / "index.csv")
    test = index[index["split"] == "test"]
    sizes = {name: (h, w) for name, h, w in zip(test["image_name"], test["height"], test["width"])}
    for folder, models in ((results, ("pretrained", "nnunet")), (results / "pseudo" / "round2", ("nnunet",))):
        assert validate(folder / "submission.csv", sizes) == 2
        for model in models:
            assert len(list((folder / "predictions" / model / "test").glob("*.npz"))) == 2
            assert json.loads((folder / "models" / model / "fold1" / "metrics.json").read_text())["val_dice"] >= 0
    assert set(json.loads((results / "checks" / "models.json").read_text())["parameters"]) == {"pretrained", "nnunet"}
