"""The tiny workflow on a real single-node SLURM through the executor plugin.

Brings the cluster up with tests/cluster/start_slurm.sh (Debian packages,
root), runs the workflow with profiles/slurm (memory and CPU requests
scaled down to this machine), and checks that the submission equals a local
run's and that sacct shows one job per rule instance. Runs in CI; skip it
locally with `pytest -m "not slurm"`.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, copy_repository, planned_jobs

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():
    """The test cluster in its default state folder (a running one is reused)."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]' (CI does)")
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        pytest.fail("the SLURM test needs root (or sudo) to install and start the daemons; skip it with -m 'not slurm'")
    command = ["bash", str(REPO / "tests" / "cluster" / "start_slurm.sh")]
    if os.geteuid() != 0:
        command = ["sudo", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _small_profile(folder: Path) -> Path:
    """profiles/slurm with memory and CPU requests that fit this machine."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"]["mem_mb"] = 1000
    for values in profile["set-resources"].values():
        values.update(mem_mb=2000, cpus_per_task=1)
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def test_tiny_workflow_on_slurm_equals_the_local_run(cluster, finished_run, tmp_path):
    # A copy of the repository with the tiny config as its config.yaml: the
    # executor starts Snakemake again inside every job, and does not pass
    # --replace-workflow-config on.
    repository = copy_repository(tmp_path / "repo", TINY_CONFIG)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*arguments):
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", *arguments],
            cwd=repository,
            capture_output=True,
            text=True,
            env=environment,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return result.stdout + result.stderr

    plan = planned_jobs(run("-n", "--cores", "2"))
    profile = _small_profile(tmp_path / "profile")
    started = time.perf_counter()
    run(
        "--profile",
        str(profile),
        "--workflow-profile",
        "none",
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--seconds-between-status-checks",
        "5",
    )
    print(f"tiny workflow on SLURM: {time.perf_counter() - started:.0f} s")
    # The session's local run of the same tiny config (its extra image
    # folder changes no submission byte; the killed-run test relies on it too).
    remote_submission = (repository / "results" / "submission.csv").read_bytes()
    assert remote_submission == (finished_run / "results" / "submission.csv").read_bytes()
    # One SLURM job per rule instance (the `all` target runs on the submitting
    # side), each COMPLETED; GPUs requested by the GPU rules only.
    accounting = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-3hours", "-o", "JobID,State,AllocTRES,Comment,WorkDir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in accounting.splitlines() if line.endswith(str(repository))]
    rules = Counter(re.match(r"rule_(.+?)(?:_wildcards_.*)?$", row[3]).group(1) for row in rows)
    expected = {rule: int(count) for rule, count in plan.items() if rule not in ("all", "total")}
    assert rules == expected and all(row[1] == "COMPLETED" for row in rows), accounting
    for _, _, resources, comment, _ in rows:
        wants_gpu = re.match(r"rule_(train|predict_oof|predict_test)(_wildcards_|$)", comment) is not None
        assert ("gres/gpu=1" in resources.split(",")) == wants_gpu, (comment, resources)
    expected = sum(expected.values())
    # One kept log per job: results/logs/slurm/rule_<rule>[/<wildcards>]/<job id>.log
    assert len(list((repository / "results" / "logs" / "slurm").rglob("*.log"))) == expected
