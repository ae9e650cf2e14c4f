"""Pseudo-labelling: confidence selection, ignored pixels, no leakage."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from handbone import predict, pseudo
from handbone.cache import CacheEntry, file_crc
from handbone.masks import IGNORE, pack_mask, unpack_mask_batch
from handbone.train import fold_images, make_loss, train_fold


def test_class_confidence_is_the_dice_a_map_expects_of_its_own_mask():
    probabilities = np.zeros((29, 4, 4), np.float32)
    probabilities[0] = 1.0  # sharp: sure of every pixel
    probabilities[1, 0] = 1.0  # 4 sure pixels and a fringe of 4 at 0.6
    probabilities[1, 1] = 0.6
    probabilities[2, :3, :3] = 0.4  # a weak detection: no pixel reaches 0.5
    confidence = pseudo.class_confidence(probabilities)
    assert confidence[0] == pytest.approx(1.0)
    # soft Dice of p and its mask at 0.5: 2 * (4 + 2.4) / ((4 + 2.4) + 8)
    assert confidence[1] == pytest.approx(12.8 / 14.4, abs=1e-5)
    assert confidence[2] < 1e-4
    assert np.allclose(confidence[3:], 1.0)  # absent, and no pixel says otherwise


def test_uncertain_pixels_lie_strictly_between_the_pixel_confidences():
    values = np.array([0.0, 0.05, 0.1, 0.11, 0.5, 0.6, 0.89, 0.9, 1.0], np.float32)
    probabilities = np.broadcast_to(values, (29, 1, len(values))).copy()
    mask, uncertain = pseudo.pseudo_label(probabilities, 0.9)
    assert mask[0, 0].tolist() == [False, False, False, False, True, True, True, True, True]
    assert uncertain[0, 0].tolist() == [False, False, False, True, True, True, True, False, False]
    with pytest.raises(ValueError, match="pixel confidence"):
        pseudo.pseudo_label(probabilities, 0.5)


def test_ignore_bits_become_ignored_targets():
    mask = np.zeros((29, 2, 3), bool)
    mask[0, 0, 0] = mask[28, 1, 2] = True
    uncertain = np.zeros_like(mask)
    uncertain[5, 1, 1] = uncertain[28, 0, 0] = True
    packed = pseudo.pack_pseudo_mask(mask, uncertain)
    assert packed.shape == (2, 3, 8)
    target = unpack_mask_batch(torch.from_numpy(np.moveaxis(packed, -1, 0)[None].copy()))[0]
    expected = mask.astype(np.float32)
    expected[uncertain] = IGNORE
    assert torch.equal(target, torch.from_numpy(expected))
    # Real labels (4 bytes) have nothing ignored.
    real = unpack_mask_batch(torch.from_numpy(np.moveaxis(pack_mask(mask), -1, 0)[None].copy()))[0]
    assert torch.equal(real, torch.from_numpy(mask.astype(np.float32)))


def test_ignored_pixels_count_in_no_loss():
    torch.manual_seed(0)
    target = (torch.rand(2, 29, 8, 8) > 0.5).float()
    target[:, :, :3] = IGNORE
    logits = torch.randn(2, 29, 8, 8)
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 29, 3, 8) * 10  # only ignored pixels differ
    loss = make_loss({"dice": 1.0, "bce": 0.5, "lovasz": 0.2}, IGNORE)
    assert loss(logits, target).item() == pytest.approx(loss(changed, target).item(), rel=1e-6)
    plain = make_loss({"dice": 1.0, "bce": 0.5})
    assert plain(logits, target.clamp(min=0)).item() != pytest.approx(plain(changed, target.clamp(min=0)).item())
    with pytest.raises(ValueError, match="focal"):
        make_loss({"dice": 1.0, "focal": 1.0}, IGNORE)


def _folds():
    return pd.DataFrame(
        {
            "image_name": [f"{person}_{hand}.png" for person in ("A", "B", "C", "D") for hand in ("L", "R")],
            "person_id": [person for person in ("A", "B", "C", "D") for _ in range(2)],
            "fold": [0, 0, 0, 0, 1, 1, 1, 1],
            "excluded": [False] * 7 + [True],
        }
    )


def test_no_person_in_both_parts_of_a_fold_with_pseudo_labels():
    folds = _folds()
    # Test people T and U; A is also a test person (same person, later visit).
    labels = pd.DataFrame(
        {
            "stem": ["T_L", "T_R", "U_L", "A_late"],
            "person_id": ["T", "T", "U", "A"],
            "image_name": ["T_L.png", "T_R.png", "U_L.png", "A_late.png"],
        }
    )
    for fold in (0, 1):
        train, validation, pseudo_stems = fold_images(folds, fold, labels)
        person = {
            **dict(zip(folds["image_name"].str[:-4], folds["person_id"])),
            **dict(zip(labels["stem"], labels["person_id"])),
        }
        training_people = {person[stem] for stem in train + pseudo_stems}
        validation_people = {person[stem] for stem in validation}
        assert not training_people & validation_people
        assert not set(pseudo_stems) & set(validation)
        assert set(validation) == set(folds.loc[(folds["fold"] == fold) & ~folds["excluded"], "image_name"].str[:-4])
    assert fold_images(folds, 0, labels)[2] == ["T_L", "T_R", "U_L"]  # A validates in fold 0
    assert fold_images(folds, 1, labels)[2] == ["T_L", "T_R", "U_L", "A_late"]
    clash = pd.DataFrame({"stem": ["B_L"], "person_id": ["X"], "image_name": ["B_L.png"]})
    with pytest.raises(ValueError, match="share names"):
        fold_images(folds, 1, clash)


@pytest.fixture()
def test_images(tmp_path):
    """An index of three 16 x 20 test images and hand-made maps for them."""
    rows = []
    for number, person in enumerate(["T1", "T1", "T2"]):
        path = tmp_path / f"test{number}.png"
        Image.fromarray(np.full((16, 20), 40 * number, np.uint8)).save(path)
        rows.append(
            {
                "split": "test",
                "person_id": person,
                "image_name": path.name,
                "image_path": str(path),
                "label_path": "",
                "height": 16,
                "width": 20,
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "index.csv", index=False)
    maps = {}
    for number, fringe in enumerate([1.0, 0.6, 0.55]):
        probabilities = np.zeros((29, 16, 20), np.float32)
        probabilities[:, 4:12, 4:10] = 1.0
        probabilities[:, 4:12, 10:16] = fringe  # the wider and softer the fringe, the less sure
        maps[number * 40] = probabilities
    return tmp_path, maps


def test_only_confident_test_images_are_written_with_their_unsure_pixels(test_images, monkeypatch):
    folder, maps = test_images
    monkeypatch.setattr(pseudo, "load_model_groups", lambda checkpoints, device, preprocess_options: [])
    # Also the orientation check of unsure sides (these test images show no hand).
    for module in (pseudo, predict):
        monkeypatch.setattr(
            module, "mean_probabilities", lambda groups, image, device, **options: maps[int(image[0, 0])]
        )
    expected = [pseudo.class_confidence(maps[value]).mean() for value in (0, 40, 80)]
    assert expected[0] > expected[1] > expected[2]
    threshold = (expected[1] + expected[2]) / 2
    table = pseudo.write_pseudo_labels(
        folder / "index.csv",
        ["unused.pt"],
        folder / "labels",
        # The raw pixels (their first one names the map): no frame, no CLAHE.
        {"clahe": {"enabled": False}, "unify_side": "none", "crop": "none"},
        torch.device("cpu"),
        threshold,
        0.9,
        ignore_uncertain=True,
        progress=False,
    )
    assert table["kept"].tolist() == [True, True, False]
    assert np.allclose(table["confidence"], expected, atol=1e-6)
    written = pd.read_csv(folder / "labels" / "cache.csv")
    assert written["stem"].tolist() == ["test0", "test1"] and written["person_id"].tolist() == ["T1", "T1"]
    assert not (folder / "labels" / "test2.mask.npy").exists()
    entry = CacheEntry(folder / "labels", "test1")
    assert np.array_equal(entry.mask(), maps[40] >= 0.5)
    packed = np.asarray(entry.packed_mask)
    assert packed.shape == (16, 20, 8)
    ignored = np.unpackbits(packed[..., 4:], axis=-1, count=29, bitorder="little")
    assert np.array_equal(np.moveaxis(ignored, -1, 0).astype(bool), (maps[40] > 0.1) & (maps[40] < 0.9))
    # Without ignoring, the labels are plain 4-byte masks.
    pseudo.write_pseudo_labels(
        folder / "index.csv",
        ["unused.pt"],
        folder / "plain",
        {"clahe": {"enabled": False}},
        torch.device("cpu"),
        threshold,
        0.9,
        ignore_uncertain=False,
        progress=False,
    )
    assert np.load(folder / "plain" / "test1.mask.npy").shape == (16, 20, 4)


def test_a_fold_without_a_confident_test_image_says_so(test_images, monkeypatch, caplog):
    folder, maps = test_images
    monkeypatch.setattr(pseudo, "load_model_groups", lambda checkpoints, device, preprocess_options: [])
    # Also the orientation check of unsure sides (these test images show no hand).
    for module in (pseudo, predict):
        monkeypatch.setattr(module, "mean_probabilities", lambda groups, image, device, **options: maps[40])
    table = pseudo.write_pseudo_labels(
        folder / "index.csv",
        ["unused.pt"],
        folder / "none",
        {"clahe": {"enabled": False}},
        torch.device("cpu"),
        0.99,
        0.9,
        ignore_uncertain=True,
        progress=False,
    )
    assert not table["kept"].any() and pd.read_csv(folder / "none" / "cache.csv").empty
    assert "no test image reached confidence 0.990" in caplog.text


def test_training_adds_the_pseudo_labels_of_other_people_only(tmp_path):
    from handbone.cache import build_cache
    from handbone.data import index_data_root
    from handbone.splits import make_folds
    from handbone.synthetic import SyntheticConfig, generate

    root = generate(
        tmp_path / "set", SyntheticConfig(train_people=4, test_people=1, image_size=64, seed=4), progress=False
    )
    index = index_data_root(root / "data")
    index.to_csv(tmp_path / "index.csv", index=False)
    build_cache(tmp_path / "index.csv", tmp_path / "cache", {}, progress=False)
    folds = make_folds(index, 2)
    folds.to_csv(tmp_path / "folds.csv", index=False)
    # The test images labelled as sure everywhere but a fringe, one of them
    # given a validation person's ID of fold 0.
    test = index[index["split"] == "test"]
    rows = []
    labels = tmp_path / "labels"
    labels.mkdir()
    for number, (_, row) in enumerate(test.iterrows()):
        stem = row["image_name"][:-4]
        mask = np.zeros((29, 64, 64), bool)
        mask[:, 20:40, 20:40] = True
        uncertain = np.zeros_like(mask)
        uncertain[:, 18:20, 18:42] = True
        np.save(labels / f"{stem}.image.npy", np.full((64, 64), 100, np.uint8))
        np.save(labels / f"{stem}.mask.npy", pseudo.pack_pseudo_mask(mask, uncertain))
        person = folds.loc[folds["fold"] == 0, "person_id"].iloc[0] if number == 0 else row["person_id"]
        rows.append(
            {
                "image_name": row["image_name"],
                "stem": stem,
                "person_id": person,
                "height": 64,
                "width": 64,
                "image_path": row["image_path"],
                "label_path": "",
                "image_crc": file_crc(labels / f"{stem}.image.npy"),
                "mask_crc": file_crc(labels / f"{stem}.mask.npy"),
            }
        )
    pd.DataFrame(rows).to_csv(labels / "cache.csv", index=False)
    spec = {
        "arch": "Unet",
        "encoder": "tu-mobilenetv3_small_050",
        "encoder_weights": None,
        "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
    }
    options = {"input_size": 64, "epochs": 1, "batch_size": 2, "val_every": 1, "warmup_epochs": 0}
    metrics = train_fold(
        tmp_path / "cache",
        tmp_path / "folds.csv",
        0,
        spec,
        options,
        tmp_path / "fold0",
        torch.device("cpu"),
        progress=False,
        pseudo_dir=labels,
    )
    assert metrics["pseudo_labelled_images"] == len(test) - 1  # the validation person's image is left out
    assert metrics["train_images"] == int((folds["fold"] == 1).sum())
    assert metrics["val_images"] == int((folds["fold"] == 0).sum())
    # A damaged pseudo-label cannot be rebuilt from a label file: it stops training.
    with open(labels / f"{rows[1]['stem']}.mask.npy", "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\xff")
    with pytest.raises(ValueError, match="rerun the rule"):
        train_fold(
            tmp_path / "cache",
            tmp_path / "folds.csv",
            0,
            spec,
            options,
            tmp_path / "again",
            torch.device("cpu"),
            progress=False,
            pseudo_dir=labels,
        )
