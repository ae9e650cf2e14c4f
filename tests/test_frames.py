"""Frames: left hands mirrored to right ones and the hand's crop, found from
the pixels, and every map brought back to the original image exactly."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from handbone.classes import CLASS_TO_INDEX

NONE = {"unify_side": "none", "crop": "none"}
UNIFY = {"unify_side": "right", "crop": "none"}
CROP = {"unify_side": "none", "crop": "hand"}
BOTH = {"unify_side": "right", "crop": "hand"}


class Pointwise(torch.nn.Module):
    """A 'model' whose output at a pixel depends only on that pixel, so a
    frame that is undone exactly gives the same map as no frame."""

    def forward(self, batch):
        return (batch[:, :1] * 2.0 - 1.0).repeat(1, 29, 1, 1)


@pytest.fixture(scope="module")
def hands(tmp_path_factory):
    """A small synthetic set (with the demo's variety: off-centre, cut,
    collimated hands, children) and its index."""
    from handbone.data import index_data_root
    from handbone.synthetic import SyntheticConfig, generate

    folder = tmp_path_factory.mktemp("hands")
    root = generate(folder / "set", SyntheticConfig(train_people=4, test_people=2, image_size=128, seed=3), False)
    index = index_data_root(root / "data")
    index.to_csv(folder / "index.csv", index=False)
    return folder, index


def _options(**chosen):
    from handbone import config

    return config.section("preprocess", chosen, "test")


def _thumb_left_of_little_finger(mask: np.ndarray) -> bool:
    """A right hand, fingers up (pose.py's convention): the thumb lies on the image's left."""
    thumb = np.nonzero(mask[CLASS_TO_INDEX["finger-3"]])[1].mean()
    little = np.nonzero(mask[CLASS_TO_INDEX["finger-19"]])[1].mean()
    return thumb < little


def test_frames_are_undone_exactly_inside_the_crop_and_leave_zeros_outside():
    from handbone.frames import Frame, to_network, to_original

    rng = np.random.default_rng(0)
    maps = rng.random((29, 40, 60)).astype(np.float32)
    frames = [
        Frame.whole(40, 60),
        Frame(40, 60, True, 0, 40, 0, 60),
        Frame(40, 60, False, 5, 35, 10, 40),
        Frame(40, 60, True, -8, 52, 20, 80),  # reaches past three borders: padded
    ]
    for frame in frames:
        network = to_network(np.moveaxis(maps, 0, -1), frame)
        assert network.shape[:2] == (frame.bottom - frame.top, frame.right - frame.left)
        back = to_original(np.moveaxis(network, -1, 0), frame)
        inside = np.zeros((40, 60), bool)
        inside[max(frame.top, 0) : frame.bottom, max(frame.left, 0) : frame.right] = True
        assert np.array_equal(back[:, inside], maps[:, inside])
        assert not back[:, ~inside].any()
    padded = to_network(np.full((40, 60), 9, np.uint8), frames[3])
    # Rows 8-47 show the image's 40 rows; columns 20-59 its columns 20-59,
    # mirrored, so the padding past its right border is now on the left.
    assert padded[8:48, 20:].min() == 9
    assert padded[:8].max() == padded[48:].max() == padded[:, :20].max() == 0


def test_left_hands_are_mirrored_into_right_ones_from_their_pixels(hands):
    from handbone.data import mask_for_row, read_image
    from handbone.frames import frame_of, to_network
    from handbone.masks import pack_mask, unpack_mask

    _, index = hands
    train = index[index["split"] == "train"]
    right_afterwards = 0
    for _, row in train.iterrows():
        frame = frame_of(read_image(row["image_path"]), _options(**UNIFY))
        mask = mask_for_row(row)
        mirrored = unpack_mask(to_network(pack_mask(mask), frame))
        assert _thumb_left_of_little_finger(mirrored) == (_thumb_left_of_little_finger(mask) != frame.flip)
        right_afterwards += _thumb_left_of_little_finger(mirrored)
    # The pixels tell the side of most hands, not all (frames.csv lists the misjudged ones).
    assert right_afterwards >= 0.75 * len(train)
    # Without the option nothing is mirrored.
    assert not any(frame_of(read_image(path), _options(**NONE)).flip for path in train["image_path"])


def test_the_hand_crop_keeps_every_labelled_pixel_and_spends_the_input_on_the_hand(hands):
    from handbone.data import mask_for_row, read_image
    from handbone.frames import frame_of

    _, index = hands
    shares = []
    for _, row in index[index["split"] == "train"].iterrows():
        frame = frame_of(read_image(row["image_path"]), _options(**CROP))
        assert frame.bottom - frame.top == frame.right - frame.left  # square: resize keeps proportions
        labelled = mask_for_row(row).any(axis=0)
        inside = labelled[max(frame.top, 0) : frame.bottom, max(frame.left, 0) : frame.right].sum()
        assert inside == labelled.sum(), row["image_name"]
        shares.append((frame.bottom - frame.top) ** 2 / labelled.size)
    assert min(shares) < 0.8  # some hands fill only part of the image: their crop is smaller


@pytest.mark.parametrize("chosen", [UNIFY, CROP, BOTH], ids=["unify_side", "crop", "both"])
def test_a_pointwise_model_gives_the_same_map_with_and_without_the_frame(hands, tmp_path, monkeypatch, chosen):
    from handbone import predict, probmaps
    from handbone.data import read_image
    from handbone.frames import frame_of
    from handbone.predict import predict_images, split_images

    folder, _ = hands
    monkeypatch.setattr(
        predict, "load_checkpoint", lambda path, device: (Pointwise(), {"input_size": 32, "input_mode": "patch"})
    )
    images = split_images(folder / "index.csv", "train")
    device = torch.device("cpu")
    plain = predict_images(images, ["m.pt"], tmp_path / "plain", _options(**NONE), device, hflip=True, progress=False)
    framed = predict_images(images, ["m.pt"], tmp_path / "framed", _options(**chosen), device, True, False)
    flipped = 0
    for name, path in images:
        frame = frame_of(read_image(path), _options(**chosen))
        flipped += frame.flip
        expected = probmaps.load(plain / probmaps.map_filename(name))
        result = probmaps.load(framed / probmaps.map_filename(name))
        assert result.shape == expected.shape
        inside = np.zeros(expected.shape[1:], bool)
        inside[max(frame.top, 0) : frame.bottom, max(frame.left, 0) : frame.right] = True
        assert np.array_equal(result[:, inside], expected[:, inside]), name
        assert not result[:, ~inside].any()
    assert (flipped > 0) == (chosen["unify_side"] == "right")


def test_a_left_hands_submission_rows_are_in_the_original_orientation(hands, tmp_path, monkeypatch):
    """A network that sees only right hands, asked about a left hand: its
    masks come back on the left hand, where the labels are."""
    from handbone import predict, probmaps
    from handbone.data import mask_for_row, read_image
    from handbone.frames import frame_of, to_network
    from handbone.masks import pack_mask, unpack_mask
    from handbone.postprocess import PostprocessParams
    from handbone.predict import predict_images
    from handbone.rle import decode
    from handbone.submission import write_submission

    folder, index = hands
    train = index[index["split"] == "train"]
    left, frame = next(
        (row, frame)
        for _, row in train.iterrows()
        if not _thumb_left_of_little_finger(mask_for_row(row))
        and (frame := frame_of(read_image(row["image_path"]), _options(**BOTH))).flip
    )
    labels = mask_for_row(left)
    in_frame = unpack_mask(to_network(pack_mask(labels), frame)).astype(np.float32)

    class KnowsTheRightHand(torch.nn.Module):
        """Answers the labels it was shown, in the frame (a right hand): what a
        perfect network trained on mirrored hands would say."""

        def forward(self, batch):
            # One window (patch mode, the frame padded at its bottom and right up to it).
            logits = torch.full((batch.shape[0], 29, *batch.shape[-2:]), -10.0)
            logits[:, :, : in_frame.shape[1], : in_frame.shape[2]] = torch.from_numpy(in_frame * 20 - 10)
            return logits

    monkeypatch.setattr(
        predict,
        "load_checkpoint",
        lambda path, device: (KnowsTheRightHand(), {"input_size": 128, "input_mode": "patch"}),
    )
    maps = predict_images(
        [(left["image_name"], left["image_path"])],
        ["m.pt"],
        tmp_path / "maps",
        _options(**BOTH),
        torch.device("cpu"),
        hflip=False,
        progress=False,
    )
    assert np.array_equal(probmaps.load(maps / probmaps.map_filename(left["image_name"])) >= 0.5, labels.astype(bool))
    test_index = tmp_path / "index.csv"
    index[index["image_name"] == left["image_name"]].assign(split="test").to_csv(test_index, index=False)
    out = write_submission(maps, test_index, tmp_path / "submission.csv", PostprocessParams.plain(), progress=False)
    rows = pd.read_csv(out, keep_default_na=False)
    for _, row in rows.iterrows():
        decoded = decode(row["rle"], labels.shape[1:])
        assert np.array_equal(decoded, labels[CLASS_TO_INDEX[row["class"]]]), row["class"]


def test_the_cache_holds_the_frame_and_the_fit_scores_on_the_original_labels(hands, tmp_path):
    from handbone.cache import CacheEntry, build_cache, original_labels, verify_cache
    from handbone.data import mask_for_row, read_image
    from handbone.frames import frame_of, to_network
    from handbone.masks import pack_mask
    from handbone.preprocess import preprocess

    folder, index = hands
    options = _options(**BOTH)
    cache = build_cache(folder / "index.csv", tmp_path / "cache", options, progress=False)
    table = pd.read_csv(cache / "cache.csv")
    for _, row in index[index["split"] == "train"].iterrows():
        stem = row["image_name"][:-4]
        raw = read_image(row["image_path"])
        frame = frame_of(raw, options)
        entry = CacheEntry(cache, stem)
        assert np.array_equal(entry.image, to_network(preprocess(raw, options), frame))
        assert np.array_equal(np.asarray(entry.packed_mask), to_network(pack_mask(mask_for_row(row)), frame))
        assert np.array_equal(original_labels(cache, stem), mask_for_row(row))
    assert 0 < table["flip"].sum() < len(table)
    # A damaged entry is rebuilt in its frame.
    stem = table["stem"][int(np.argmax(table["flip"]))]
    expected = np.array(CacheEntry(cache, stem).image)
    (cache / f"{stem}.image.npy").write_bytes(b"broken")
    locations = verify_cache(cache, [stem], tmp_path / "spare")
    assert np.array_equal(CacheEntry(locations[stem], stem).image, expected)


def test_the_frames_table_reports_sides_that_disagree_and_crops_that_cut(hands, tmp_path, caplog):
    from handbone.data import read_image
    from handbone.frames import read_frames, write_frames
    from handbone.pose import pixel_pose

    caplog.set_level("INFO", logger="handbone")
    folder, index = hands
    stats = index[["image_name", "split"]].copy()
    poses = [pixel_pose(read_image(path)) for path in index["image_path"]]
    stats["side_from_pixels"] = [pose["side"] for pose in poses]
    for cue in ("side_score", "finger_gap", "skew"):
        stats[f"{cue}_from_pixels"] = [pose[cue] for pose in poses]
    stats["person_id"] = index["person_id"]
    stats["side_from_labels"] = stats["side_from_pixels"].where(stats["split"] == "train", "")
    wrong = stats.index[stats["split"] == "train"][0]
    stats.loc[wrong, "side_from_labels"] = {"left": "right", "right": "left"}[stats.loc[wrong, "side_from_labels"]]
    stats.to_csv(tmp_path / "image_stats.csv", index=False)
    table = write_frames(folder / "index.csv", tmp_path / "image_stats.csv", BOTH, tmp_path / "frames.csv", False)
    assert table["sides_agree"].astype(str).tolist().count("False") == 1
    assert stats.loc[wrong, "image_name"] in caplog.text and "differs from the side from the labels" in caplog.text
    # A training image's side, and so its mirroring, is its labels'.
    train = table["split"] == "train"
    assert (table.loc[train, "side"] == stats.loc[train, "side_from_labels"]).all()
    assert (table.loc[train, "side_method"] == "labels").all() and (table.loc[train, "side_confidence"] == 1).all()
    assert (table["flip"] == (table["side"] == "left")).all()
    assert table.loc[~train, "side_method"].isin(["pixels", "pair"]).all()
    assert ((table["side_confidence"] > 0.5) & (table["side_confidence"] <= 1)).all()
    assert "side from the pixels: the rule (finger gap + 1 x skew) with its default confidence scale" in caplog.text
    assert (table.loc[table["split"] == "test", "labels_inside_crop"] == "").all()
    assert set(read_frames(tmp_path / "frames.csv")) == set(index["image_name"])


def test_one_hand_training_turns_the_flip_augmentation_and_automatic_flip_tta_off():
    from handbone import config

    values = config.load_config([Path(__file__).resolve().parents[1] / "config.yaml"])
    values["preprocess"]["unify_side"] = "none"
    assert config.train_options(values, "unet_mobilenetv3")["augment"]["hflip"] > 0
    assert config.tta_hflip("auto", values["preprocess"]) and not config.tta_hflip(False, values["preprocess"])
    values["preprocess"]["unify_side"] = "right"
    assert config.train_options(values, "unet_mobilenetv3")["augment"]["hflip"] == 0
    assert not config.tta_hflip("auto", values["preprocess"]) and config.tta_hflip(True, values["preprocess"])


def _sides(logits, labels=None, people=None):
    names = [f"image{k}.png" for k in range(len(logits))]
    return pd.DataFrame(
        {
            "image_name": names,
            "person_id": people or [f"ID{k}" for k in range(len(logits))],
            "side_logit": logits,
            "side_from_labels": labels or [""] * len(logits),
        }
    )


def test_sides_come_from_the_labels_then_the_pixels_with_a_confidence():
    from handbone.frames import decide_sides

    decided = decide_sides(_sides([2.0, -0.25, 1.5], ["right", "", ""]))
    assert decided["side"].tolist() == ["right", "right", "left"]
    assert decided["side_method"].tolist() == ["labels", "pixels", "pixels"]
    confidence = decided["side_confidence"].tolist()
    assert confidence[0] == 1.0 and 0.5 < confidence[1] < confidence[2] < 1.0
    assert confidence[2] == pytest.approx(1 / (1 + np.exp(-1.5)))


def test_a_person_has_two_hands_so_the_less_sure_of_two_equal_sides_is_the_other():
    from handbone.frames import decide_sides

    # ID1: both judged left, the second less surely: it is the right hand.
    # ID2: left and right already: unchanged. ID3: the labelled hand is left,
    # so the other one is right whatever its pixels say.
    decided = decide_sides(
        _sides(
            [2.5, 0.5, 1.5, -1.5, 0.0, 1.0],
            ["", "", "", "", "left", ""],
            ["ID1", "ID1", "ID2", "ID2", "ID3", "ID3"],
        )
    )
    assert decided["side"].tolist() == ["left", "right", "left", "right", "left", "right"]
    assert decided["side_method"].tolist() == ["pixels", "pair", "pixels", "pixels", "labels", "pair"]
    assert decided["side_confidence"][1] == decided["side_confidence"][0]
    assert decided["side_confidence"][5] == 1.0


def _labelled_cues(seed, count=60):
    """(cues, labels, people) of ``count`` labelled hands, two per person,
    whose finger gap points to the side and whose skew is noise."""
    rng = np.random.default_rng(seed)
    labels = np.array(["left", "right"] * (count // 2))
    signs = np.where(labels == "left", 1.0, -1.0)
    cues = np.stack([signs * rng.uniform(0.05, 0.4, count), rng.normal(0, 0.5, count)], axis=1)
    return cues, labels, np.repeat([f"ID{k}" for k in range(count // 2)], 2)


def test_the_side_model_keeps_the_rule_unless_weights_fitted_on_labels_are_clearly_better():
    from handbone.frames import DEFAULT_SIDE_SCALE, MIN_LABELLED_SIDES, side_model
    from handbone.pose import SKEW_WEIGHT

    cues, labels, people = _labelled_cues(0)
    # Few labels: the rule with its default scale.
    few = 2 * MIN_LABELLED_SIDES - 2
    weights, how = side_model(cues[:few], labels[:few], people[:few])
    assert np.allclose(weights, DEFAULT_SIDE_SCALE * np.array([1.0, SKEW_WEIGHT])) and "default" in how
    # A skew that is noise misleads the rule; fitted weights, cross-validated
    # over people, are clearly better and are used (the skew's weight small).
    weights, how = side_model(cues, labels, people)
    assert "fitted weights" in how and abs(weights[1]) < 0.5 * weights[0]
    right = (np.sign(cues @ weights) > 0) == (labels == "left")
    assert right.mean() > 0.95
    # Cues that follow the rule: the rule is kept, its confidence scale fitted.
    cues[:, 1] = cues[:, 0] * 0.5
    weights, how = side_model(cues, labels, people)
    assert "the rule is kept" in how and weights[1] == pytest.approx(SKEW_WEIGHT * weights[0])


class RightHanded(torch.nn.Module):
    """A 'model' that learnt one hand: sure (logits of +-8) of an input whose
    left half is the brighter, as unsure as possible (0.5) of its mirror."""

    def forward(self, batch):
        width = batch.shape[-1]
        left_brighter = batch[..., : width // 2].mean(dim=(1, 2, 3)) > batch[..., width // 2 :].mean(dim=(1, 2, 3))
        sharp = (batch[:, :1] * 16.0 - 8.0).repeat(1, 29, 1, 1)
        return torch.where(left_brighter[:, None, None, None], sharp, torch.zeros_like(sharp))


def test_orientation_confidence_prefers_a_sharp_map_with_every_bone():
    from handbone.metrics import orientation_confidence

    sharp = np.zeros((29, 8, 8), np.float32)
    sharp[:, 2:6, 2:6] = 0.99
    blurred = np.full((29, 8, 8), 0.5, np.float32)
    missing = sharp.copy()
    missing[:10] = 0.0
    assert orientation_confidence(sharp) > orientation_confidence(blurred) > 0
    assert orientation_confidence(sharp) > orientation_confidence(missing)
    assert orientation_confidence(missing) == pytest.approx(19 / 29 * orientation_confidence(sharp), rel=1e-6)


@pytest.mark.parametrize("confidence, checked", [(0.6, True), (0.99, False)])
def test_an_unsure_side_is_decided_by_the_orientation_the_models_are_surer_of(
    tmp_path, monkeypatch, confidence, checked
):
    import cv2

    from handbone import predict, probmaps
    from handbone.frames import SIDE_CHECKS
    from handbone.predict import predict_images

    # A bright right half: the model is sure of it only once mirrored.
    image = np.full((64, 64), 40, np.uint8)
    image[8:56, 36:60] = 220
    cv2.imwrite(str(tmp_path / "hand.png"), image)
    frame = {"image_name": "hand.png", "height": 64, "width": 64, "flip": False, "top": 0, "bottom": 64}
    frame |= {"left": 0, "right": 64, "side": "right", "side_confidence": confidence, "side_method": "pixels"}
    pd.DataFrame([frame]).to_csv(tmp_path / "frames.csv", index=False)
    monkeypatch.setattr(
        predict, "load_checkpoint", lambda path, device: (RightHanded(), {"input_size": 32, "input_mode": "resize"})
    )
    out = predict_images(
        [("hand.png", tmp_path / "hand.png")],
        ["m.pt"],
        tmp_path / "maps",
        _options(**UNIFY),
        torch.device("cpu"),
        progress=False,
        frames_path=tmp_path / "frames.csv",
    )
    maps = probmaps.load(out / probmaps.map_filename("hand.png"))
    assert (maps.max() > 0.99) == checked  # sure only when predicted mirrored (and mirrored back)
    assert (out / SIDE_CHECKS).is_file() == checked
    if checked:
        record = pd.read_csv(out / SIDE_CHECKS).iloc[0]
        assert record["side"] == "left" and bool(record["changed"])
        assert record["confidence_mirrored"] > record["confidence_as_framed"]
        # The map is on the original image: bright (bone) where the image is.
        assert maps[0, 30, 50] > 0.99 and maps[0, 30, 10] < 0.01


def test_the_networks_overrule_an_unsure_side_only_when_their_margin_outweighs_its_confidence():
    from handbone.frames import NETWORK_SIDE_SCALE, networks_overrule

    # Real radiographs of the demo run (docs/training.md): an infant's hand the
    # pixels got right at 0.90, which the models preferred mirrored by 0.035,
    # stays; an adducted thumb the pixels got wrong at 0.58, 0.091 the other
    # way, turns.
    assert not networks_overrule(0.035, 0.897)
    assert networks_overrule(0.091, 0.576)
    # A coin-toss side turns on any margin for the other orientation, never on one against it.
    assert networks_overrule(1e-6, 0.5) and not networks_overrule(-0.01, 0.5)
    # The boundary: the margin whose log-odds equal the confidence's.
    confidence = 0.8
    boundary = np.log(confidence / (1 - confidence)) / NETWORK_SIDE_SCALE
    assert networks_overrule(boundary + 1e-3, confidence) and not networks_overrule(boundary - 1e-3, confidence)
