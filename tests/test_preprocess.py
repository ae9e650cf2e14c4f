import numpy as np
import pandas as pd

from handbone.preprocess import pack_mask, unpack_mask
from handbone.splits import make_folds


def test_mask_packing_round_trip_and_crop():
    rng = np.random.default_rng(1)
    mask = (rng.random((29, 9, 11)) > 0.7).astype(np.uint8)
    packed = pack_mask(mask)
    assert packed.shape == (9, 11, 4) and packed.dtype == np.uint8
    assert np.array_equal(unpack_mask(packed), mask)
    assert np.array_equal(unpack_mask(packed[2:5, 3:8]), mask[:, 2:5, 3:8])


def test_folds_keep_both_hands_of_a_person_together():
    index = pd.DataFrame(
        {
            "split": ["train"] * 12 + ["test"] * 2,
            "person_id": [f"ID{i // 2:03d}" for i in range(12)] + ["ID100", "ID100"],
            "image_name": [f"{i}.png" for i in range(14)],
        }
    )
    folds = make_folds(index, 3)
    assert len(folds) == 12 and set(folds["fold"]) == {0, 1, 2}
    assert folds.groupby("person_id")["fold"].nunique().eq(1).all()
