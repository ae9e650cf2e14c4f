"""One DVC stage run by Snakemake: the ``cmd`` of every stage in dvc.yaml.

DVC decides which stages run; inside a stage Snakemake decides which jobs
rerun, from the files' modification times and its own records
(``.snakemake/``) of the params and code that made each output. Both go
wrong where DVC, not Snakemake, put the files in place:

- Times. DVC does not keep modification times: a queued or ``--temp``
  experiment copies every output out of the DVC cache in no particular
  order, and ``dvc checkout`` / ``dvc exp apply`` rewrite files. Snakemake
  would then rerun jobs of earlier stages, which DVC has just found up to
  date, inside this one. So the stage first touches what the earlier
  stages made (``snakemake --touch --until <their rules>``: in the DAG's
  order, no content changes, nothing runs).
- Records. Where Snakemake has never run (a queued experiment's copy, a
  clone after ``dvc pull``) it has no records, so it sees no changed params:
  a queued ``-S config.yaml:train.lr=...`` would keep the baseline's models
  and record them under the new learning rate. There a stage, the first
  time it runs, reruns all of its jobs, which is what DVC asked for: the
  earlier stages' outputs are touched even where their order was right, so
  every job of this stage is older than its inputs.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import HandboneError

log = logging.getLogger(__name__)

SNAKEMAKE_STATE = Path(".snakemake")
# Kept in Snakemake's own folder: what git and DVC ignore, and what a fresh
# copy lacks.
STAGES_RUN = SNAKEMAKE_STATE / "handbone-dvc-stages"
NO_RECORDS = STAGES_RUN / "began-without-records"


def first_run_without_records(stage: str) -> bool:
    """Whether ``stage`` has to rerun all its jobs: this checkout had no
    Snakemake records when its first DVC stage ran, and ``stage`` has not
    run here since. Marks the stage as run."""
    began_without_records = not SNAKEMAKE_STATE.is_dir()
    STAGES_RUN.mkdir(parents=True, exist_ok=True)
    if began_without_records:
        NO_RECORDS.touch()
    marker = STAGES_RUN / stage
    rerun_all = NO_RECORDS.exists() and not marker.exists()
    # Marked before it runs: a stage killed half-way resumes from
    # Snakemake's records of the jobs that finished, not from scratch.
    marker.touch()
    return rerun_all


def run_stage(
    stage: str,
    after: Sequence[str],
    snakemake_args: Sequence[str],
    runner: Callable[[list[str]], int] = lambda command: subprocess.run(command).returncode,
) -> None:
    """Run ``snakemake <snakemake_args>`` as DVC stage ``stage``, after
    touching the outputs of the rules or files ``after`` (the earlier
    stages' work this one reads) and of every job they depend on. ``after``
    names only the last rules: with a rule and one it depends on,
    ``--until`` fails in Snakemake 9.27 ("Out of jobs ready to be started")."""
    rerun_all = first_run_without_records(stage)
    if rerun_all:
        log.info("%s: no Snakemake records of this stage in this checkout: all its jobs run", stage)
    # Forcing the earlier stages' touch makes every job of this stage older
    # than its inputs; the first stage has nothing earlier, so forces its own.
    force = ["--forceall"] if rerun_all else []
    commands = []
    if after:
        commands.append(
            ["snakemake", "--cores", "1", "--touch", "--no-hooks", "--quiet", "all", "--until", *after, *force]
        )
        force = []
    commands.append(["snakemake", *snakemake_args, *force])
    for command in commands:
        code = runner(command)
        if code != 0:
            raise HandboneError(f"DVC stage {stage}: {' '.join(command)} failed (exit {code})")


# -- the command line: `handbone dvc-stage` (cli.py dispatches) --


def dvc_stage_command(args) -> None:
    arguments = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    run_stage(args.stage, args.after, arguments)


def dvc_stage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=dvc_stage_command)
    parser.add_argument(
        "--stage",
        required=True,
        help="the DVC stage's name (train@<model>, ...): its first run in a checkout is recorded",
    )
    parser.add_argument(
        "--after",
        nargs="+",
        default=[],
        metavar="RULE_OR_FILE",
        help="the last rules or files of earlier stages that this one reads; they and what they come from are "
        "touched (snakemake --touch --until ...) before the stage runs. Name no rule together with one it "
        "depends on: Snakemake 9.27 then stops with 'BUG: Out of jobs ready to be started'",
    )
    parser.add_argument(
        "snakemake_args", nargs=argparse.REMAINDER, help="after --: the stage's snakemake arguments (targets, --until)"
    )
