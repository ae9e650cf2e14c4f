"""Comparing pseudo-labelling rounds: OOF and held-out Dice per class."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from .atomic import write_table
from .classes import CLASSES
from .errors import ConfigError

log = logging.getLogger("handbone")

# The scored_on labels of the rounds table.
OOF = "OOF"
HELD_OUT = "held-out"


def _round_dir(table_path: str | Path) -> Path:
    """<round folder>/<stage>/<table>.csv -> <round folder>; the labels of
    the round are in <round folder>/labels/fold*."""
    return Path(table_path).resolve().parent.parent


def compare_rounds(oof_tables: list, holdout_tables: list, label_dirs: list = ()) -> pd.DataFrame:
    """One row per round and score: the OOF Dice of the round's final
    ensemble (the last row of its post-processing table: every kept step
    applied), its held-out Dice (NaN without test labels), then each later
    round's difference to round 1. ``label_dirs`` (``<round>/labels/fold*``)
    give the pseudo-labelled images each round trained on, per fold."""
    if len(oof_tables) != len(holdout_tables):
        raise ConfigError(
            f"{len(oof_tables)} OOF tables but {len(holdout_tables)} held-out tables: one of each per round"
        )
    labels: dict[Path, list[str]] = {}
    for folder in sorted(Path(name) for name in label_dirs):
        confidence = pd.read_csv(folder / "confidence.csv")
        labels.setdefault(folder.resolve().parent.parent, []).append(
            f"{folder.name}: {int(confidence['kept'].sum())} of {len(confidence)}"
        )
    rows = []
    for number, (oof_path, holdout_path) in enumerate(zip(oof_tables, holdout_tables), start=1):
        oof = pd.read_csv(oof_path).iloc[-1]
        holdout = pd.read_csv(holdout_path).set_index("class")["dice"].reindex(CLASSES)
        pseudo = "; ".join(labels.get(_round_dir(oof_path), [])) or "none"
        for scored_on, values in ((OOF, oof[CLASSES].to_numpy(dtype=float)), (HELD_OUT, holdout.to_numpy(dtype=float))):
            rows.append(
                {
                    "round": number,
                    "scored_on": scored_on,
                    "pseudo_labelled_test_images": pseudo,
                    "mean_dice": float(values.mean()),
                    **dict(zip(CLASSES, values)),
                }
            )
    table = pd.DataFrame(rows)
    first = table[table["round"] == 1].set_index("scored_on")
    differences = []
    for _, row in table[table["round"] > 1].iterrows():
        base = first.loc[row["scored_on"]]
        values = row[["mean_dice", *CLASSES]].to_numpy(dtype=float) - base[["mean_dice", *CLASSES]].to_numpy(
            dtype=float
        )
        differences.append(
            {
                "round": row["round"],
                "scored_on": f"{row['scored_on']}, minus round 1",
                "pseudo_labelled_test_images": row["pseudo_labelled_test_images"],
                **dict(zip(["mean_dice", *CLASSES], values)),
            }
        )
    return pd.concat([table, pd.DataFrame(differences)], ignore_index=True)


def write_round_comparison(oof_tables, holdout_tables, label_dirs, out, figure=None) -> pd.DataFrame:
    """``handbone compare-rounds``: the rounds table (``compare_rounds``)
    as CSV and, optionally, a figure of the Dice per class and round."""
    table = compare_rounds(oof_tables, holdout_tables, label_dirs)
    write_table(table, out)
    if figure:
        from .figures import per_class_dice

        scores = table[table["scored_on"].isin([OOF, HELD_OUT])].dropna(subset=CLASSES)
        rows = {
            f"round {row['round']}, {row['scored_on']}": row[CLASSES].to_numpy(dtype=float)
            for _, row in scores.iterrows()
        }
        per_class_dice(rows, Path(figure), "Dice per class of each pseudo-labelling round")
    for _, row in table.iterrows():
        log.info("round %d, %s: mean Dice %.4f", row["round"], row["scored_on"], row["mean_dice"])
    return table


# -- the command line: `handbone compare-rounds` (cli.py dispatches) --


def compare_rounds_command(args) -> None:
    write_round_comparison(args.oof_tables, args.holdout_tables, args.labels, args.out, args.figure)


def compare_rounds_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=compare_rounds_command)
    parser.add_argument(
        "--oof-tables", nargs="+", required=True, help="each round's postprocess/oof_scores.csv, round 1 first"
    )
    parser.add_argument("--holdout-tables", nargs="+", required=True, help="each round's scores/holdout_per_class.csv")
    parser.add_argument("--labels", nargs="*", default=[], help="the pseudo-label caches (round*/labels/fold*)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--figure", help="PNG of the Dice per class and round")
