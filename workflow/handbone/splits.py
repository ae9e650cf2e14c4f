"""Cross-validation folds grouped by person, so both hands stay together."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import GroupKFold


def make_folds(index: pd.DataFrame, folds: int) -> pd.DataFrame:
    """Assign each training image a fold with GroupKFold over person IDs."""
    train = index[index["split"] == "train"].reset_index(drop=True)
    people = train["person_id"].nunique()
    if folds < 2:
        raise ValueError(f"cv.folds must be at least 2, got {folds}")
    if people < folds:
        raise ValueError(f"cv.folds is {folds} but the training set has only {people} people; lower cv.folds")
    table = train[["image_name", "person_id"]].copy()
    table["fold"] = -1
    for fold, (_, validation) in enumerate(GroupKFold(n_splits=folds).split(table, groups=table["person_id"])):
        table.loc[validation, "fold"] = fold
    return table
