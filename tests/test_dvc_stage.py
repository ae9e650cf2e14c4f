"""`handbone dvc-stage`, the command of every DVC stage: which snakemake
calls it makes in a checkout with and without Snakemake's records. That the
calls do what they should (a queued experiment reruns only its stages, and
retrains) is tested end to end in test_dvc.py."""

import pytest

from handbone.dvc_stage import run_stage
from handbone.errors import HandboneError

TOUCH = ["snakemake", "--cores", "1", "--touch", "--no-hooks", "--quiet", "all", "--until"]


class Recorder:
    def __init__(self, failing: str | None = None):
        self.commands = []
        self.failing = failing

    def __call__(self, command):
        self.commands.append(command)
        return 1 if self.failing and self.failing in command else 0


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_checkout_without_records_reruns_each_stage_fully_the_first_time_only(checkout):
    """A queued experiment's copy: no .snakemake/ at all."""
    first = Recorder()
    run_stage("train@tiny", ["preprocess", "split"], ["--cores", "all", "target"], runner=first)
    assert first.commands == [
        TOUCH + ["preprocess", "split", "--forceall"],
        ["snakemake", "--cores", "all", "target"],
    ]
    # The next stage in the same copy has no records of its own either ...
    following = Recorder()
    run_stage("cv", ["cv_model"], ["--cores", "all", "--until", "cv_summary"], runner=following)
    assert following.commands[0] == TOUCH + ["cv_model", "--forceall"]
    # ... but a stage that ran here once (killed, say) resumes from Snakemake's records.
    again = Recorder()
    run_stage("train@tiny", ["preprocess", "split"], ["--cores", "all", "target"], runner=again)
    assert again.commands[0] == TOUCH + ["preprocess", "split"]


def test_a_checkout_where_snakemake_ran_only_puts_the_earlier_stages_times_in_order(checkout):
    (checkout / ".snakemake" / "metadata").mkdir(parents=True)
    recorder = Recorder()
    run_stage("predict", ["train"], ["--cores", "all", "--until", "predict_oof"], runner=recorder)
    assert recorder.commands == [TOUCH + ["train"], ["snakemake", "--cores", "all", "--until", "predict_oof"]]


def test_the_first_stage_forces_its_own_jobs_and_touches_nothing(checkout):
    recorder = Recorder()
    run_stage("data", [], ["--cores", "all", "results/demo"], runner=recorder)
    assert recorder.commands == [["snakemake", "--cores", "all", "results/demo", "--forceall"]]
    recorder = Recorder()
    run_stage("data", [], ["--cores", "all", "results/demo"], runner=recorder)
    assert recorder.commands == [["snakemake", "--cores", "all", "results/demo"]]


def test_a_failing_snakemake_call_names_the_stage_and_stops_the_stage(checkout):
    recorder = Recorder(failing="--touch")
    with pytest.raises(HandboneError, match=r"DVC stage cv: snakemake .*--touch.* failed \(exit 1\)"):
        run_stage("cv", ["cv_model"], ["--cores", "all"], runner=recorder)
    assert len(recorder.commands) == 1


def test_the_command_line_splits_the_stage_options_from_snakemakes(checkout, monkeypatch):
    from handbone import cli

    calls = []
    monkeypatch.setattr("handbone.dvc_stage.run_stage", lambda *args: calls.append(args))
    argv = ["dvc-stage", "--stage", "train@m", "--after", "preprocess", "split", "--", "--cores", "all", "--until", "x"]
    assert cli.main(argv) == 0
    assert calls == [("train@m", ["preprocess", "split"], ["--cores", "all", "--until", "x"])]
