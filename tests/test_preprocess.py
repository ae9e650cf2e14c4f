import numpy as np
import pandas as pd
import pytest

from handbone.masks import pack_mask, unpack_mask
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


def test_split_command_marks_excluded_images(tmp_path):
    from handbone.cli import main

    index = tmp_path / "index.csv"
    pd.DataFrame(
        {
            "split": ["train"] * 8,
            "person_id": [f"ID{i // 2:03d}" for i in range(8)],
            "image_name": [f"{i}.png" for i in range(8)],
            "image_path": "",
            "label_path": "",
            "height": 4,
            "width": 4,
        }
    ).to_csv(index, index=False)
    outliers = tmp_path / "outliers.csv"
    pd.DataFrame(
        {
            "image_name": ["1.png", "2.png", "3.png"],
            "reason": ["label_swap", "bent_wrist", "area_outlier"],
            "score": [3.0, 20.0, 5.0],
            "detail": ["Radius<->Ulna", "", ""],
        }
    ).to_csv(outliers, index=False)
    folds_path, excluded_path = tmp_path / "folds.csv", tmp_path / "excluded.csv"
    code = main(
        [
            "-q",
            "split",
            "--index",
            str(index),
            "--folds",
            "2",
            "--outliers",
            str(outliers),
            "--exclude-reasons",
            '["label_swap", "area_outlier"]',
            "--include",
            '["3.png"]',
            "--exclude",
            '["7.png"]',
            "--out",
            str(folds_path),
            "--excluded-out",
            str(excluded_path),
        ]
    )
    assert code == 0
    folds = pd.read_csv(folds_path, keep_default_na=False)
    assert dict(zip(folds["image_name"], folds["excluded"])) == {f"{i}.png": i in (1, 7) for i in range(8)}
    assert list(pd.read_csv(excluded_path)["exclusion_reason"]) == ["label_swap", "manual"]


def test_cached_sample_equals_png_and_json(tmp_path):
    from handbone.cache import CacheEntry, build_cache
    from handbone.data import index_data_root, mask_for_row, read_image
    from handbone.preprocess import preprocess
    from handbone.synthetic import SyntheticConfig, generate

    root = generate(
        tmp_path / "set", SyntheticConfig(train_people=2, test_people=1, image_size=96, seed=4), progress=False
    )
    index = index_data_root(root / "data")
    index.to_csv(tmp_path / "index.csv", index=False)
    # The whole image: tests/test_frames.py checks the cache in a mirrored, cropped frame.
    options = {"clahe": {"enabled": True, "clip_limit": 3.0, "tile_grid_size": 4}, "unify_side": "none", "crop": "none"}
    cache = build_cache(tmp_path / "index.csv", tmp_path / "cache", options, progress=False)
    for _, row in index[index["split"] == "train"].iterrows():
        entry = CacheEntry(cache, row["image_name"][:-4])
        assert np.array_equal(entry.image, preprocess(read_image(row["image_path"]), options))
        mask = mask_for_row(row)
        assert np.array_equal(entry.mask(), mask)
        assert np.array_equal(entry.mask(slice(10, 40), slice(5, 60)), mask[:, 10:40, 5:60])
    assert len(pd.read_csv(cache / "cache.csv")) == 4


def test_a_damaged_cache_entry_is_rebuilt_instead_of_trained_on(tmp_path, caplog):
    from handbone.cache import CacheEntry, build_cache, verify_cache
    from handbone.data import index_data_root
    from handbone.synthetic import SyntheticConfig, generate

    root = generate(
        tmp_path / "set", SyntheticConfig(train_people=2, test_people=1, image_size=64, seed=4), progress=False
    )
    index_data_root(root / "data").to_csv(tmp_path / "index.csv", index=False)
    cache = build_cache(tmp_path / "index.csv", tmp_path / "cache", {"clahe": {"enabled": True}}, progress=False)
    stems = list(pd.read_csv(cache / "cache.csv")["stem"])
    expected = {stem: (np.array(CacheEntry(cache, stem).image), CacheEntry(cache, stem).mask()) for stem in stems}
    flipped, truncated = stems[0], stems[1]
    data = bytearray((cache / f"{flipped}.mask.npy").read_bytes())
    data[-5] ^= 0xFF  # one flipped byte: same size, wrong bits
    (cache / f"{flipped}.mask.npy").write_bytes(bytes(data))
    image_file = cache / f"{truncated}.image.npy"
    image_file.write_bytes(image_file.read_bytes()[:100])
    locations = verify_cache(cache, stems, tmp_path / "spare")
    assert locations[flipped] == locations[truncated] == tmp_path / "spare"
    assert all(locations[stem] == cache for stem in stems[2:])
    assert f"cache entry {flipped} is damaged" in caplog.text and f"cache entry {truncated} is damaged" in caplog.text
    for stem in stems:
        entry = CacheEntry(locations[stem], stem)
        assert np.array_equal(entry.image, expected[stem][0]) and np.array_equal(entry.mask(), expected[stem][1])
    with pytest.raises(ValueError, match="no entry"):
        verify_cache(cache, ["not_there"], tmp_path / "spare")


def test_pose_stratified_folds_spread_bent_wrists_and_keep_people_together():
    from handbone.splits import pose_strata

    people = [f"ID{i:03d}" for i in range(12) for _ in range(2)]
    index = pd.DataFrame({"split": "train", "person_id": people, "image_name": [f"{i}.png" for i in range(24)]})
    bent = {0, 1, 2, 3, 4, 5}  # both hands of the first three people
    stats = pd.DataFrame(
        {
            "image_name": index["image_name"],
            "wrist_bend_from_labels": [25.0 if i in bent else 2.0 for i in range(24)],
            "rotation_from_pixels": 0.0,
        }
    )
    folds = make_folds(index, 3, pose_strata(stats))
    assert folds.groupby("person_id")["fold"].nunique().eq(1).all()
    assert sorted(folds.loc[folds["image_name"].isin([f"{i}.png" for i in bent]), "fold"].unique()) == [0, 1, 2]
