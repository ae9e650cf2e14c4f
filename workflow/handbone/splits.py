"""Cross-validation folds grouped by person, so both hands stay together."""

from __future__ import annotations

import argparse
import logging

import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from . import config
from .arguments import json_argument
from .atomic import write_table
from .data import read_index
from .errors import ConfigError
from .outliers import BENT_WRIST_DEGREES, ROTATED_HAND_DEGREES, excluded_images

log = logging.getLogger("handbone")


def pose_strata(image_stats: pd.DataFrame) -> pd.Series:
    """1 for a bent wrist or a strongly rotated hand (EDA's estimates), else 0,
    indexed by image name."""
    hard = (image_stats["wrist_bend_from_labels"].abs() > BENT_WRIST_DEGREES) | (
        image_stats["rotation_from_pixels"].abs() > ROTATED_HAND_DEGREES
    )
    return pd.Series(hard.astype(int).to_numpy(), index=image_stats["image_name"])


def make_folds(index: pd.DataFrame, folds: int, strata: pd.Series | None = None) -> pd.DataFrame:
    """Assign each training image a fold, grouped by person ID.

    With ``strata`` (a label per image name, e.g. ``pose_strata``), folds are
    also balanced for it (StratifiedGroupKFold), so bent wrists spread over
    the folds instead of gathering in one.
    """
    train = index[index["split"] == "train"].reset_index(drop=True)
    people = train["person_id"].nunique()
    if folds < 2:
        raise ConfigError(f"cv.folds must be at least 2, got {folds}")
    if people < folds:
        raise ConfigError(f"cv.folds is {folds} but the training set has only {people} people; lower cv.folds")
    table = train[["image_name", "person_id"]].copy()
    table["fold"] = -1
    if strata is None:
        splits = GroupKFold(n_splits=folds).split(table, groups=table["person_id"])
    else:
        labels = table["image_name"].map(strata).fillna(0).astype(int)
        splits = StratifiedGroupKFold(n_splits=folds).split(table, labels, groups=table["person_id"])
    for fold, (_, validation) in enumerate(splits):
        table.loc[validation, "fold"] = fold
    return table


def write_folds(
    index_path,
    out,
    folds: int,
    stratify: str = "none",
    image_stats=None,
    outliers=None,
    exclude_reasons=(),
    exclude=(),
    include=(),
    excluded_out=None,
) -> pd.DataFrame:
    """``handbone split``: the folds table (data.FOLD_COLUMNS) of the
    training images, with the images that the outlier findings (and the
    explicit lists) leave out of training and validation marked, and
    optionally those alone in ``excluded_out``."""
    if stratify == "pose" and not image_stats:
        raise ConfigError("cv.stratify pose needs the EDA's image_stats.csv (--image-stats)")
    strata = pose_strata(pd.read_csv(image_stats)) if stratify == "pose" else None
    table = make_folds(read_index(index_path), folds, strata)
    excluded = {}
    if outliers:
        findings = pd.read_csv(outliers, keep_default_na=False).to_dict("records")
        excluded = excluded_images(findings, table["image_name"], exclude_reasons, exclude, include)
    table["excluded"] = table["image_name"].isin(list(excluded))
    table["exclusion_reason"] = table["image_name"].map(excluded).fillna("")
    write_table(table, out, float_format=None)
    if excluded_out:
        write_table(table[table["excluded"]].drop(columns="excluded"), excluded_out, float_format=None)
    log.info(
        "%d folds over %d people -> %s; %d of %d training images excluded",
        folds,
        table["person_id"].nunique(),
        out,
        len(excluded),
        len(table),
    )
    return table


# -- the command line: `handbone split` (cli.py dispatches) --


def split_command(args) -> None:
    write_folds(
        args.index,
        args.out,
        args.folds,
        args.stratify,
        args.image_stats,
        args.outliers,
        args.exclude_reasons,
        args.exclude,
        args.include,
        args.excluded_out,
    )


def split_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=split_command)
    parser.add_argument("--index", required=True)
    parser.add_argument(
        "--folds", type=int, default=config.default("cv.folds"), help="number of folds (default: %(default)s)"
    )
    parser.add_argument(
        "--stratify",
        choices=["none", "pose"],
        default="none",
        help="pose: also balance folds for bent/rotated hands, from --image-stats "
        "(the workflow passes cv.stratify; by hand, without image stats: none)",
    )
    parser.add_argument("--image-stats", help="image_stats.csv written by eda (needed by --stratify pose)")
    parser.add_argument("--outliers", help="outliers.csv written by eda; without it no image is excluded")
    parser.add_argument(
        "--exclude-reasons",
        type=json_argument,
        default=config.default("outliers.exclude_reasons"),
        help="JSON list of outlier reasons that exclude an image (default: outliers.exclude_reasons of config.yaml)",
    )
    parser.add_argument(
        "--exclude",
        type=json_argument,
        default=config.default("outliers.exclude"),
        help="JSON list of image names always excluded",
    )
    parser.add_argument(
        "--include",
        type=json_argument,
        default=config.default("outliers.include"),
        help="JSON list of image names never excluded (wins)",
    )
    parser.add_argument(
        "--out", required=True, help="folds CSV: image_name, person_id, fold, excluded, exclusion_reason"
    )
    parser.add_argument("--excluded-out", help="also write the excluded images alone to this CSV")
