"""Cross-validation folds grouped by person, so both hands stay together."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from .outliers import BENT_WRIST_DEGREES, ROTATED_HAND_DEGREES


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
        raise ValueError(f"cv.folds must be at least 2, got {folds}")
    if people < folds:
        raise ValueError(f"cv.folds is {folds} but the training set has only {people} people; lower cv.folds")
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
