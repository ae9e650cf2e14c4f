import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from handbone.classes import CLASS_TO_INDEX, CLASSES
from handbone.data import index_data_root, mask_for_row, read_image
from handbone.synthetic import SyntheticConfig, generate


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "set"
    config = SyntheticConfig(train_people=4, test_people=1, image_size=256, seed=7, artifact_rate=0.5, fault_rate=0.0)
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
