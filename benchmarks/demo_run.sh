#!/usr/bin/env bash
# Times the default demo run from an empty results/ folder: wall time and
# peak memory (GNU time's maximum resident set size, the largest single
# process: snakemake or one of its jobs), then prints the scores.
# Usage (with the environment active): benchmarks/demo_run.sh [CORES [SNAKEMAKE OPTIONS...]]   (default 2)
# The options go to snakemake (e.g. --configfile configs/demo_ensemble.yaml).
# With -n (--dry-run) among them it only prints the plan: nothing is deleted,
# run or timed (tests/test_benchmarks.py runs it so, with --directory elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
cores="${1:-2}"
[ $# -gt 0 ] && shift
for option in "$@"; do
    case "$option" in
        -n | --dry-run | --dryrun) exec snakemake --cores "$cores" "$@" ;;
    esac
done
find results -mindepth 1 -maxdepth 1 ! -name .gitignore -exec rm -rf {} +
rm -rf .snakemake
log=$(mktemp)
/usr/bin/time -v snakemake --cores "$cores" --quiet rules "$@" 2> "$log" || { tail -40 "$log"; exit 1; }
grep -E "Elapsed \(wall clock\)|Maximum resident set size" "$log"
echo "cross-validation:"
cat results/cv/cv_scores.csv | cut -d, -f1-4
echo "held-out:"
cat results/scores/holdout.json
