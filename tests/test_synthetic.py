import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from handbone.classes import CLASS_TO_INDEX, CLASSES
from handbone.data import index_data_root, mask_for_row, read_image
from handbone.errors import ConfigError
from handbone.synthetic import (
    CARPALS,
    CASES,
    CUT_SIDES,
    OFF_CENTRE,
    OSSIFICATION_AGE,
    SyntheticConfig,
    Variety,
    detail_fields,
    generate,
    generate_image,
    make_person,
)


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# Adults' whole hands, unframed: the anatomy tests below need every bone in
# view (the variety of framing and children has its own fixture).
PLAIN = dict(off_centre_rate=0.0, cut_rate=0.0, collimation_rate=0.0, black_border_rate=0.0, child_rate=0.0)
# Every correct-but-unusual case often enough to appear in a small set.
VARIED = dict(off_centre_rate=0.4, cut_rate=0.5, collimation_rate=0.5, black_border_rate=0.5, child_rate=0.4)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "set"
    config = SyntheticConfig(
        train_people=4, test_people=1, image_size=256, seed=7, artifact_rate=0.5, fault_rate=0.0, **PLAIN
    )
    return generate(out, config, progress=False), config


def test_same_seed_same_bytes_other_seed_other_bytes(demo, tmp_path):
    out, config = demo
    again = generate(tmp_path / "again", config, progress=False)
    assert _digest(out) == _digest(again)
    other = generate(tmp_path / "other", SyntheticConfig(**{**config.__dict__, "seed": 8}), progress=False)
    assert _digest(out) != _digest(other)


def test_competition_layout_two_hands_per_person(demo):
    out, _ = demo
    index = index_data_root(out / "data")  # validates labels too
    assert (index["split"] == "train").sum() == 8 and (index["split"] == "test").sum() == 2
    assert index.groupby("person_id").size().eq(2).all()
    assert not (out / "data" / "test" / "outputs_json").exists()  # test labels are kept apart
    assert len(list((out / "ground_truth" / "test" / "outputs_json").rglob("*.json"))) == 2
    labels = json.loads(next((out / "data" / "train" / "outputs_json").rglob("*.json")).read_text())
    assert {a["type"] for a in labels["annotations"]} == {"poly_seg"}


def test_anatomy_29_bones_in_place_with_overlaps(demo):
    out, _ = demo
    index = index_data_root(out / "data")
    train = index[index["split"] == "train"]
    iou = {"tri_pis": [], "trapezium_trapezoid": [], "radius_ulna": []}
    for _, row in train.iterrows():
        mask = mask_for_row(row).astype(bool)
        assert mask.reshape(29, -1).any(axis=1).all(), "every bone is present"
        centre_y = {name: np.nonzero(mask[CLASS_TO_INDEX[name]])[0].mean() for name in CLASSES}
        # Fingers point up: distal above proximal above metacarpal above carpals above forearm.
        for ray in ([1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]):
            ys = [centre_y[f"finger-{i}"] for i in ray]
            assert ys == sorted(ys)
        assert centre_y["finger-11"] < centre_y["Capitate"] < centre_y["Radius"]

        def pair_iou(a, b):
            first, second = mask[CLASS_TO_INDEX[a]], mask[CLASS_TO_INDEX[b]]  # noqa: B023 (used in this iteration)
            return (first & second).sum() / (first | second).sum()

        iou["tri_pis"].append(pair_iou("Triquetrum", "Pisiform"))
        iou["trapezium_trapezoid"].append(pair_iou("Trapezium", "Trapezoid"))
        iou["radius_ulna"].append(pair_iou("Radius", "Ulna"))
    assert 0.3 < np.mean(iou["tri_pis"]) < 0.65
    assert 0.05 < np.mean(iou["trapezium_trapezoid"]) < 0.35
    assert np.mean(iou["radius_ulna"]) < 0.02


def test_xray_like_bone_brighter_than_tissue_brighter_than_background(demo):
    out, _ = demo
    row = index_data_root(out / "data").iloc[0]
    image = read_image(row["image_path"]).astype(float)
    bone = mask_for_row(row).any(axis=0)
    border = np.zeros_like(bone)
    border[:10, :] = True
    assert image[bone].mean() > image[border].mean() + 60


def test_left_hand_mirrors_right(demo):
    out, _ = demo
    index = index_data_root(out / "data")
    person = index[index["person_id"] == "ID001"]
    thumb_x = []
    for _, row in person.iterrows():
        mask = mask_for_row(row)
        thumb_x.append(
            np.nonzero(mask[CLASS_TO_INDEX["finger-3"]])[1].mean()
            - np.nonzero(mask[CLASS_TO_INDEX["finger-19"]])[1].mean()
        )
    assert thumb_x[0] * thumb_x[1] < 0, "the thumb is on opposite sides in the two hands"


def test_faults_are_injected_and_listed(tmp_path):
    config = SyntheticConfig(train_people=6, test_people=1, image_size=128, seed=3, artifact_rate=1.0, fault_rate=1.0)
    out = generate(tmp_path / "faults", config, progress=False)
    manifest = pd.read_csv(out / "ground_truth" / "manifest.csv")
    faults = manifest[manifest["kind"] == "fault"]
    assert len(faults) == 12 and set(faults["split"]) == {"train"}, "every train image, no test image"
    assert set(faults["code"]) <= {"ring_annotated", "swapped_labels", "wrong_polygon"}
    assert (manifest["kind"] == "artifact").sum() >= 14
    ring = faults[faults["code"] == "ring_annotated"]
    if len(ring):
        name = ring.iloc[0]["image_name"].replace(".png", ".json")
        labels = json.loads(next((out / "data" / "train").rglob(name)).read_text())["annotations"]
        assert len(labels) == 30, "the ring is an extra annotation"


def test_2048_image_size_works(tmp_path):
    out = generate(
        tmp_path / "big", SyntheticConfig(train_people=1, test_people=1, image_size=2048, seed=1), progress=False
    )
    index = index_data_root(out / "data")
    assert set(index["height"]) == {2048} and set(index["width"]) == {2048}


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """A small set with every case; its manifest, every image's labels (train
    labels, test ground truth) and pixels by image name."""
    out = tmp_path_factory.mktemp("varied") / "set"
    config = SyntheticConfig(
        train_people=8, test_people=2, image_size=256, seed=24, artifact_rate=0.3, fault_rate=0.3, **VARIED
    )
    root = generate(out, config, progress=False)
    manifest = pd.read_csv(root / "ground_truth" / "manifest.csv", keep_default_na=False)
    labels = {p.stem + ".png": json.loads(p.read_text())["annotations"] for p in root.rglob("outputs_json/*/*.json")}
    images = {path.name: read_image(path) for path in root.rglob("DCM/*/*.png")}
    return root, config, manifest, labels, images


def _cases(manifest, code):
    """{image name: detail fields} of one kind of case."""
    rows = manifest[(manifest["kind"] == "case") & (manifest["code"] == code)]
    return {row["image_name"]: detail_fields(row["detail"]) for _, row in rows.iterrows()}


def _listed_absent(manifest) -> dict:
    """{image name: bones the manifest says have no annotation}."""
    absent = {}
    for code in ("cut_border", "too_small", "child"):
        for name, fields in _cases(manifest, code).items():
            absent.setdefault(name, set()).update(fields["absent"].split())
    return absent


def test_same_seed_same_bytes_with_every_case(varied, tmp_path):
    root, config, *_ = varied
    assert _digest(root) == _digest(generate(tmp_path / "again", config, progress=False))


def test_every_case_is_listed_and_explains_every_missing_bone(varied):
    _, _, manifest, labels, images = varied
    cases = manifest[manifest["kind"] == "case"]
    assert set(cases["code"]) == set(CASES) - {"too_small"}  # too_small: small images only, below
    assert {"artifact", "fault"} <= set(manifest["kind"])
    scale = cases[cases["code"] == "scale"]
    assert sorted(scale["image_name"]) == sorted(images), "one scale row per image"
    assert {fields["side"] for fields in _cases(manifest, "cut_border").values()} == set(CUT_SIDES)
    absent = _listed_absent(manifest)
    assert sum(map(len, absent.values())) >= 5
    for name, annotations in labels.items():
        # Faults swap, move or add polygons but never drop a class.
        assert {a["label"] for a in annotations} == set(CLASSES) - absent.get(name, set()), name


def test_bones_too_small_to_draw_are_listed(tmp_path):
    config = SyntheticConfig(
        train_people=12, test_people=1, image_size=64, seed=2, child_rate=1.0, child_age_min=3.0, child_age_max=6.0
    )
    root = generate(tmp_path / "small", config, progress=False)
    manifest = pd.read_csv(root / "ground_truth" / "manifest.csv", keep_default_na=False)
    too_small = _cases(manifest, "too_small")
    assert too_small and all(fields["absent"] for fields in too_small.values())
    absent = _listed_absent(manifest)
    for path in root.rglob("outputs_json/*/*.json"):
        present = {a["label"] for a in json.loads(path.read_text())["annotations"]}
        assert present == set(CLASSES) - absent.get(path.stem + ".png", set())


def _content_box(size, fields):
    """(x0, y0, x1, y1) inside the black bands a black_border row names."""
    widths = dict(zip(fields["sides"].split(), map(int, fields["widths"].split()))) if fields else {}
    return (
        widths.get("left", 0),
        widths.get("top", 0),
        size - 1 - widths.get("right", 0),
        size - 1 - widths.get("bottom", 0),
    )


def test_cut_bones_are_clipped_at_the_border_and_named(varied):
    _, config, manifest, labels, _ = varied
    size = config.image_size
    for name, annotations in labels.items():
        for annotation in annotations:
            points = np.asarray(annotation["points"])
            assert points.min() >= 0 and points.max() <= size - 1, f"{name}: {annotation['label']} leaves the image"
    collimated, borders = _cases(manifest, "collimation"), _cases(manifest, "black_border")
    faulty = set(manifest.loc[manifest["kind"] == "fault", "image_name"])
    checked = 0
    for name, fields in _cases(manifest, "cut_border").items():
        clipped = fields["clipped"].split()
        assert fields["side"] in CUT_SIDES and (
            set(clipped) - {"Radius", "Ulna"} or fields["absent"] or fields["side"] == "bottom"
        )
        if name in collimated or name in faulty:
            continue  # clipped at a tilted collimator edge, or a polygon moved by a fault
        x0, y0, x1, y1 = _content_box(size, borders.get(name))
        by_label = {a["label"]: np.asarray(a["points"]) for a in labels[name]}
        for label in clipped:
            points = by_label[label]
            on_border = (points[:, 0] == x0) | (points[:, 0] == x1) | (points[:, 1] == y0) | (points[:, 1] == y1)
            assert on_border.sum() >= 2, f"{name}: {label} is named as cut but does not run along the border"
            checked += 1
    assert checked >= 10


def test_black_borders_and_collimation_where_the_manifest_says(varied):
    _, config, manifest, _, images = varied
    size = config.image_size
    collimated, borders = _cases(manifest, "collimation"), _cases(manifest, "black_border")
    assert collimated and borders
    for name, image in images.items():
        x0, y0, x1, y1 = _content_box(size, borders.get(name))
        bands = {"left": image[:, :x0], "top": image[:y0], "right": image[:, x1 + 1 :], "bottom": image[y1 + 1 :]}
        for side, band in bands.items():
            assert (band == 0).all(), f"{name}: {side} band not black"
        content = image[y0 : y1 + 1, x0 : x1 + 1]
        outer = {"left": content[:, 0], "top": content[0], "right": content[:, -1], "bottom": content[-1]}
        assert all(line.mean() > 0 for line in outer.values()), f"{name}: black edge the manifest does not name"
        sides = collimated.get(name, {}).get("sides", "").split()
        for side, line in outer.items():
            if side in sides:
                assert np.median(line) >= 150, f"{name}: {side} should be collimated (bright)"
            elif not sides:
                assert np.median(line) < 120, f"{name}: {side} is bright without collimation"


def test_hand_fills_the_configured_share_of_the_image(varied):
    _, config, manifest, labels, _ = varied
    size = config.image_size
    fills = {name: float(fields["fill"]) for name, fields in _cases(manifest, "scale").items()}
    assert all(config.min_fill - 1e-3 <= fill <= config.max_fill + 1e-3 for fill in fills.values())
    assert max(fills.values()) - min(fills.values()) > 0.25, "scales vary"
    off_centre = _cases(manifest, "off_centre")
    assert off_centre and all(abs(float(fields["dx"])) >= OFF_CENTRE for fields in off_centre.values())
    unusual = set(
        manifest.loc[manifest["code"].isin(["cut_border", "too_small"]) | (manifest["kind"] == "fault"), "image_name"]
    )
    measured = 0
    for name in set(labels) - unusual:
        points = np.concatenate([a["points"] for a in labels[name] if a["label"] not in ("Radius", "Ulna")])
        low, high = points.min(axis=0), points.max(axis=0)
        assert abs((high - low).max() / size - fills[name]) <= 3 / size, name
        dx = ((low[0] + high[0]) / 2 - (size - 1) / 2) / size
        if abs(abs(dx) - OFF_CENTRE) > 2 / size:  # clear of the rounding of the points
            assert (abs(dx) >= OFF_CENTRE) == (name in off_centre), name
        measured += 1
    assert measured >= 4


def test_children_are_listed_with_only_their_ossified_carpals(varied):
    _, config, manifest, labels, _ = varied
    children = _cases(manifest, "child")
    people = manifest.loc[manifest["code"] == "child", "person_id"]
    assert len(children) >= 4 and (people.value_counts() == 2).all(), "both hands of a child"
    for name, fields in children.items():
        assert config.child_age_min <= float(fields["age"]) <= config.child_age_max
        absent = fields["absent"].split()
        assert set(absent) <= set(CARPALS) and not set(absent) & {a["label"] for a in labels[name]}
        # Carpals ossify in a fixed order: a missing one has no later one present.
        for carpal in absent:
            later = {other for other in CARPALS if OSSIFICATION_AGE[other] > OSSIFICATION_AGE[carpal] + 1.5}
            assert later <= set(absent), f"{name}: {later - set(absent)} ossified before {carpal}"


def _growth_plate_contrast(image, points, towards):
    """How much darker the darkest cross-section near a long bone's base
    (the end nearest ``towards``) is than the bone on either side of it."""
    import cv2

    mask = np.zeros(image.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], 1)
    ys, xs = np.nonzero(mask)
    xy = np.stack([xs, ys], axis=1).astype(float)
    centre = xy.mean(axis=0)
    axis = np.linalg.eigh((xy - centre).T @ (xy - centre))[1][:, -1]
    along = (xy - centre) @ axis * (-1 if (towards - centre) @ axis > 0 else 1)
    bins = np.clip(((along - along.min()) / np.ptp(along) * 40).astype(int), 0, 39)
    profile = np.array([image[ys[bins == b], xs[bins == b]].mean() for b in range(40)])
    return min(profile[0:6].max(), np.median(profile[14:30])) - profile[2:14].min()


def test_a_childs_epiphyses_are_separate_bright_pieces():
    contrast = {}
    for who, rate in (("adult", 0.0), ("child", 1.0)):
        rng = np.random.default_rng([5, 0])
        person = make_person(rng, child_rate=rate, child_ages=(8.0, 8.0))
        image, truth, _, events = generate_image(person, rng, 384, False, 0.0, 0.0, 0.0, Variety(0.8, 0.8))
        assert ("child" in {code for _, code, _ in events}) == (who == "child")
        bones = {a["label"]: np.asarray(a["points"], float) for a in truth}
        contrast[who] = [
            _growth_plate_contrast(image, bones[phalanx], bones[metacarpal].mean(axis=0))
            for phalanx, metacarpal in (
                ("finger-6", "finger-7"),
                ("finger-10", "finger-11"),
                ("finger-14", "finger-15"),
            )
        ]
    # A dark band of cartilage between the base epiphysis and the shaft of
    # each proximal phalanx; an adult's bone is even there.
    assert min(contrast["child"]) > 20 and max(contrast["adult"]) < 10, contrast


def test_bone_lengths_spread_between_people():
    for spread in (0.0, 0.05):
        factors = np.concatenate(
            [
                np.concatenate(list(make_person(np.random.default_rng(n), length_spread=spread).proportions.values()))
                for n in range(60)
            ]
        )
        assert abs(factors.std() - spread * 1.118) < 0.01  # sqrt(1 + 1/4): the per-bone and per-finger spreads


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_fill": 0.8, "max_fill": 0.5}, "min_fill <= max_fill"),
        ({"child_age_min": 9.0, "child_age_max": 4.0}, "child_age_min"),
    ],
)
def test_impossible_ranges_are_refused(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        generate(tmp_path / "bad", SyntheticConfig(**options), progress=False)


def test_every_generator_option_has_its_default_in_config_yaml():
    from dataclasses import fields

    from handbone import config

    defaults = config.default("synthetic")
    assert {option.name: option.default for option in fields(SyntheticConfig)} == defaults
