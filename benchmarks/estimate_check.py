"""``handbone estimate`` against a measured run: estimates a config's run,
then runs it (``snakemake --cores C`` in a fresh folder) and prints, per
rule and in all, the estimated and the measured seconds (Snakemake's
benchmark records) and the wall time.

Usage:
  python benchmarks/estimate_check.py --configfile config.yaml [--configfile ...]
      [--costs cpu] [--host FILE] [--cores 2] [--workdir DIR] [--snakemake-args ...]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))


def run(workdir: Path, configfiles: list[str], cores: int, snakemake_args: list[str]) -> float:
    """Wall seconds of the run in a fresh ``workdir``."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    command += ["--cores", str(cores), "--configfile", *configfiles, *snakemake_args]
    # This environment's python (and its handbone and snakemake) for the jobs' shell commands.
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    if done.returncode != 0:
        sys.exit(f"the run failed: see {workdir / 'snakemake.log'}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configfile", action="append", required=True)
    parser.add_argument("--costs", default="cpu", help="cost table (handbone estimate --costs)")
    parser.add_argument("--host", help="host cost table (handbone estimate --host)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", default="results/estimate_check", help="the run's folder (emptied first)")
    parser.add_argument(
        "--measured-run",
        help="compare with this finished run's folder instead of running (with --measured-wall)",
    )
    parser.add_argument("--measured-wall", type=float, help="that run's wall seconds, start to end")
    parser.add_argument("--snakemake-args", nargs=argparse.REMAINDER, default=[], help="passed to snakemake")
    args = parser.parse_args()

    from handbone.estimate import estimate

    configfiles = [str(Path(path).resolve()) for path in args.configfile]
    result = estimate(configfiles, args.costs, 1, args.cores, host_path=args.host, snakefile=str(REPO / "Snakefile"))
    print(result.text(), flush=True)

    if args.measured_run:
        workdir, wall = Path(args.measured_run).resolve(), args.measured_wall
    else:
        workdir = Path(args.workdir).resolve()
        wall = run(workdir, configfiles, args.cores, args.snakemake_args)

    rows = {}
    for job in result.jobs:
        if not job.command:
            continue
        record = workdir / job.benchmark
        measured = (
            float(pd.read_csv(record, sep="\t")["s"].iloc[-1]) if job.benchmark and record.is_file() else float("nan")
        )
        row = rows.setdefault(job.rule, {"jobs": 0, "estimated_s": 0.0, "measured_s": 0.0})
        row["jobs"] += 1
        row["estimated_s"] += job.seconds
        row["measured_s"] += measured
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["estimated / measured"] = table["estimated_s"] / table["measured_s"]
    print()
    print(table.round(2).to_markdown())
    ratio = result.wall_seconds / wall
    print(
        f"\nWall time: estimated {result.wall_seconds:.0f} s, measured {wall:.0f} s "
        f"(snakemake --cores {args.cores}, start to end): estimated / measured {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
