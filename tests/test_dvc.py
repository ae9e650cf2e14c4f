"""DVC on top of Snakemake: `dvc repro` on a fresh copy of the repository
with the tiny config, a second repro that does nothing, a parameter change
that reruns one model, push / pull through the default remote, two
experiments (`dvc exp run -S`) compared by `dvc exp show`, and a queued
experiment that reruns only its own stages."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, copy_repository, planned_jobs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, check: bool = True) -> str:
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{output[-6000:]}")
    return output


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """A git repository holding this checkout's files, with the tiny config
    as config.yaml (DVC reads its parameters from config.yaml); the default
    remote, ../handbone-dvc-remote, lands beside it in the temporary folder."""
    root = copy_repository(tmp_path_factory.mktemp("dvc") / "repo", TINY_CONFIG)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "copy"], root)
    run(["dvc", "repro"], root)
    return root


def test_dvc_repro_runs_the_demo_to_a_submission_with_metrics(repository):
    assert (repository / "results" / "submission.csv").is_file()
    metrics = run(["dvc", "metrics", "show"], repository)
    assert "results/scores/holdout.json" in metrics and "cv_dice.tiny.mean_dice" in metrics
    run(["dvc", "plots", "show", "-o", "plots_out"], repository)
    assert (repository / "plots_out" / "index.html").stat().st_size > 1000


def test_second_repro_does_nothing(repository):
    output = run(["dvc", "repro"], repository)
    assert "Running stage" not in output
    assert "up to date" in run(["dvc", "status"], repository)
    assert "Nothing to be done" in run(["snakemake", "-n"], repository)


def test_one_models_learning_rate_reruns_that_model_and_what_follows(repository):
    original = (repository / "config.yaml").read_text()
    config = yaml.safe_load(original)
    config["models"]["tiny"]["train"] = {"lr": 0.001}
    (repository / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        status = run(["dvc", "status"], repository)
        changed_stages = set(re.findall(r"^(\S+):\s*$", status, flags=re.MULTILINE))
        assert changed_stages == {"train@tiny"}, status
        assert "models.tiny" in status
        plan = planned_jobs(run(["snakemake", "-n"], repository))
        assert plan["train"] == "2" and plan["cv_model"] == "1" and plan["predict_test"] == "1"
        assert not {"demo_data", "index", "eda", "split", "preprocess"} & set(plan)
    finally:
        (repository / "config.yaml").write_text(original)
    assert "Nothing to be done" in run(["snakemake", "-n"], repository)


def test_push_then_pull_into_an_empty_cache_restores_everything(repository):
    run(["dvc", "push"], repository)
    assert (repository.parent / "handbone-dvc-remote").is_dir()
    submission = (repository / "results" / "submission.csv").read_bytes()
    shutil.rmtree(repository / ".dvc" / "cache")
    for path in (repository / "results").iterdir():
        if path.name not in (".gitignore", "logs", "benchmarks"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run(["dvc", "pull"], repository)
    assert (repository / "results" / "submission.csv").read_bytes() == submission
    # dvc pull does not restore file times, so Snakemake would see inputs
    # newer than outputs; --touch marks the restored outputs up to date in
    # the DAG's order (it never creates a missing file).
    run(["snakemake", "--touch", "--cores", "1"], repository)
    assert "Nothing to be done" in run(["snakemake", "-n"], repository)


def _experiments(shown) -> dict:
    """{name: (params of config.yaml, metrics by file)} of every named run in
    `dvc exp show --json` (the baseline under its branch name)."""
    found = {}
    if isinstance(shown, dict):
        data = shown.get("data")
        if shown.get("name") and isinstance(data, dict) and "params" in data:
            params = data["params"].get("config.yaml", {}).get("data", {})
            metrics = {path: entry.get("data", {}) for path, entry in (data.get("metrics") or {}).items()}
            found[shown["name"]] = (params, metrics)
        for value in shown.values():
            found.update(_experiments(value))
    elif isinstance(shown, list):
        for value in shown:
            found.update(_experiments(value))
    return found


def test_experiments_with_two_learning_rates_are_compared_by_dvc_exp_show(repository):
    """Runs last: it leaves the workspace at an experiment, then restores the baseline."""
    run(["git", "add", "-A"], repository)
    run(["git", "commit", "-qm", "baseline run", "--allow-empty"], repository)
    try:
        for name, lr in (("lr-high", 0.01), ("lr-low", 0.0001)):
            output = run(["dvc", "exp", "run", "-n", name, "-S", f"config.yaml:train.lr={lr}"], repository)
            assert "Running stage 'train@tiny'" in output and "Running stage 'data'" not in output, output
        again = run(["dvc", "exp", "run"], repository)
        assert "Running stage" not in again, again

        experiments = _experiments(json.loads(run(["dvc", "exp", "show", "--json"], repository)))
        high, low = experiments["lr-high"], experiments["lr-low"]
        assert high[0]["train"]["lr"] == 0.01 and low[0]["train"]["lr"] == 0.0001
        for _, metrics in (high, low):
            assert metrics["results/cv/metrics.json"]["cv_dice"]["tiny"]["mean_dice"] >= 0
            assert set(metrics["results/postprocess/oof.json"]["oof_dice"]) >= {"ensemble", "final", "models"}
            assert metrics["results/scores/holdout.json"]["mean_dice"] >= 0
        assert high[1] != low[1], "different learning rates, same metrics"

        plots = json.loads(run(["dvc", "plots", "diff", "lr-high", "lr-low", "--json"], repository))
        curves = plots["data"]["results/cv/models/tiny/history.csv"][0]
        assert set(curves["revisions"]) == {"lr-high", "lr-low"}

        # Keeping the winner: its config and results in the workspace, or a branch.
        run(["dvc", "exp", "apply", "lr-high"], repository)
        assert yaml.safe_load((repository / "config.yaml").read_text())["train"]["lr"] == 0.01
        applied = json.loads((repository / "results" / "cv" / "metrics.json").read_text())
        assert applied == high[1]["results/cv/metrics.json"]
        run(["dvc", "exp", "branch", "lr-high", "winner"], repository)
        shown = run(["git", "show", "winner:config.yaml"], repository)
        assert yaml.safe_load(shown)["train"]["lr"] == 0.01
    finally:
        run(["git", "checkout", "--", "config.yaml", "dvc.lock"], repository)
        run(["dvc", "checkout", "--force"], repository)


UPSTREAM_RULES = ("demo_data", "index", "eda", "split", "frames", "preprocess")


def test_a_queued_experiment_reruns_only_its_stages_and_retrains(repository):
    """A queued experiment runs in a copy where DVC checked every output out
    of its cache, with file times in no particular order, and where
    Snakemake has no records: before `handbone dvc-stage` it reran the
    earlier stages' jobs, or kept the baseline's models."""
    run(["git", "add", "-A"], repository)
    run(["git", "commit", "-qm", "baseline for the queue", "--allow-empty"], repository)
    baseline = json.loads((repository / "results" / "cv" / "metrics.json").read_text())
    run(["dvc", "exp", "run", "--queue", "-n", "lr-queued", "-S", "config.yaml:train.lr=0.02"], repository)
    run(["dvc", "queue", "start"], repository)
    deadline = time.monotonic() + 1200
    while True:
        status = run(["dvc", "queue", "status"], repository)
        row = next(line for line in status.splitlines() if "lr-queued" in line)
        if "Queued" not in row and "Running" not in row:
            break
        assert time.monotonic() < deadline, status
        time.sleep(5)
    log = run(["dvc", "queue", "logs", "lr-queued"], repository)
    assert "Success" in row, log[-6000:]

    assert "Running stage 'train@tiny'" in log and "Running stage 'submission'" in log
    assert "Running stage 'data'" not in log and "Running stage 'cache'" not in log
    rerun = re.findall(rf"^(?:local)?rule ({'|'.join(UPSTREAM_RULES)}):", log, flags=re.MULTILINE)
    assert not rerun, f"the queued experiment reran earlier stages' jobs {rerun}"
    assert re.search(r"^(?:local)?rule train:", log, flags=re.MULTILINE)

    params, metrics = _experiments(json.loads(run(["dvc", "exp", "show", "--json"], repository)))["lr-queued"]
    assert params["train"]["lr"] == 0.02
    assert metrics["results/cv/metrics.json"] != baseline, "a new learning rate, the baseline's models"
