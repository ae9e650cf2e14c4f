"""Compares finished runs (e.g. the demo with different preprocess options)
class by class: the out-of-fold Dice after post-processing and the held-out
Dice of the submission, each run against the first.

Usage:
  python benchmarks/compare_runs.py none=/tmp/run_none right=/tmp/run_right ...
        [--max-class-drop 0.01] [--markdown]

Each argument is label=checkout whose results/ holds a finished demo run
(results/postprocess/oof_scores.csv, results/scores/holdout_per_class.csv).
A run "helps" when its held-out Dice is higher than the first run's and no
class loses more than --max-class-drop of held-out Dice (the rule
docs/training.md uses to choose defaults).
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from handbone.classes import CLASSES  # noqa: E402


def run_scores(checkout: Path) -> pd.DataFrame:
    """Per class (rows: the classes, then mean): OOF Dice after the frozen
    post-processing and held-out Dice."""
    results = checkout / "results"
    oof = pd.read_csv(results / "postprocess" / "oof_scores.csv").iloc[-1]  # the last step: what was frozen
    holdout = pd.read_csv(results / "scores" / "holdout_per_class.csv").set_index("class")["dice"]
    table = pd.DataFrame({"oof": [float(oof[name]) for name in CLASSES]}, index=list(CLASSES))
    table["held_out"] = holdout.reindex(CLASSES).to_numpy()
    table.loc["mean"] = [float(oof["mean_dice"]), float(table["held_out"].mean())]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="label=checkout, the first is the reference")
    parser.add_argument("--max-class-drop", type=float, default=0.01)
    parser.add_argument("--markdown", action="store_true", help="print the per-class table as Markdown")
    args = parser.parse_args()
    runs = dict(run.split("=", 1) for run in args.runs)
    scores = {label: run_scores(Path(folder)) for label, folder in runs.items()}
    reference = next(iter(scores))
    columns = {}
    for label, table in scores.items():
        columns[f"{label} OOF"] = table["oof"]
        columns[f"{label} held-out"] = table["held_out"]
    combined = pd.DataFrame(columns)
    print(combined.to_markdown(floatfmt=".4f") if args.markdown else combined.round(4).to_string())
    print()
    for label, table in scores.items():
        if label == reference:
            continue
        change = table["held_out"] - scores[reference]["held_out"]
        per_class = change.drop("mean")
        worst = per_class.idxmin()
        helps = change["mean"] > 0 and per_class.min() >= -args.max_class_drop
        print(
            f"{label}: held-out {change['mean']:+.4f}, OOF {table.loc['mean', 'oof'] - scores[reference].loc['mean', 'oof']:+.4f}; "
            f"{int((per_class < -args.max_class_drop).sum())} classes lose more than {args.max_class_drop} "
            f"(worst {worst} {per_class[worst]:+.4f}); {'helps' if helps else 'does not help'} by the rule"
        )


if __name__ == "__main__":
    main()
