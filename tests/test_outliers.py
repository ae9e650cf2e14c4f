import copy

import numpy as np
import pytest

from handbone.classes import CLASSES
from handbone.outliers import (
    detect_statistical,
    detect_structure,
    excluded_images,
    fit_stats,
    image_features,
    self_intersects,
)
from handbone.pose import label_frame, pixel_pose, to_canonical
from handbone.synthetic import generate_image, make_person

SIZE = 256


@pytest.fixture(scope="module")
def clean_hands():
    """Correct annotations of 24 synthetic hands (no faults injected)."""
    hands = []
    for number in range(24):
        rng = np.random.default_rng([99, number])
        image, truth, _, _ = generate_image(make_person(rng), rng, SIZE, number % 2 == 1, 0.1, 0.0, 0.0)
        hands.append((image, truth))
    return hands


@pytest.fixture(scope="module")
def stats(clean_hands):
    return fit_stats([image_features(f"clean{k}", truth, SIZE, SIZE) for k, (_, truth) in enumerate(clean_hands)])


def _reasons(annotations, stats):
    features = image_features("case", annotations, SIZE, SIZE)
    return {reason for reason, _, _ in detect_structure(features) + detect_statistical(features, stats)}, features


def _by_label(annotations, label):
    return next(a for a in annotations if a["label"] == label)


def test_clean_hands_raise_no_annotation_fault(clean_hands, stats):
    for _, truth in clean_hands:
        reasons, _ = _reasons(truth, stats)
        assert reasons <= {"bent_wrist", "rotated_hand"}


def test_missing_and_duplicated_class(clean_hands, stats):
    truth = clean_hands[0][1]
    reasons, _ = _reasons([a for a in truth if a["label"] != "Lunate"], stats)
    assert "class_missing" in reasons
    far_copy = copy.deepcopy(_by_label(truth, "finger-1"))
    far_copy["points"] = (np.asarray(far_copy["points"]) + [0, 40]).tolist()  # a second, separate finger-1
    far_copy["label"] = "finger-16"
    reasons, _ = _reasons(truth + [far_copy], stats)
    assert "class_duplicated" in reasons and "extra_object" not in reasons


def test_object_annotated_on_a_bone_is_an_extra_object(clean_hands, stats):
    truth = clean_hands[0][1]
    bone = np.asarray(_by_label(truth, "finger-14")["points"], float)
    centre = bone.mean(axis=0)
    ring = [
        [centre[0] - 8, centre[1] - 2],
        [centre[0] + 8, centre[1] - 2],
        [centre[0] + 8, centre[1] + 2],
        [centre[0] - 8, centre[1] + 2],
    ]
    reasons, _ = _reasons(truth + [{"label": "finger-14", "points": ring}], stats)
    assert "extra_object" in reasons and "class_duplicated" not in reasons


def test_invalid_polygons(clean_hands, stats):
    assert self_intersects(np.array([[0, 0], [4, 4], [4, 0], [0, 4]], float))  # a bow tie
    assert not self_intersects(np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float))
    truth = copy.deepcopy(clean_hands[0][1])
    _by_label(truth, "Capitate")["points"] = [[10, 10], [20, 20]]
    reasons, features = _reasons(truth, stats)
    assert "polygon_invalid" in reasons
    truth = copy.deepcopy(clean_hands[0][1])
    points = _by_label(truth, "Capitate")["points"]
    points[0], points[len(points) // 2] = points[len(points) // 2], points[0]  # edges now cross
    assert "polygon_invalid" in _reasons(truth, stats)[0]


def test_enlarged_and_displaced_polygon(clean_hands, stats):
    truth = copy.deepcopy(clean_hands[2][1])
    polygon = _by_label(truth, "Scaphoid")
    points = np.asarray(polygon["points"], float)
    centre = points.mean(axis=0)
    polygon["points"] = np.clip((points - centre) * 2.0 + centre + [0, -45], 0, SIZE - 1).tolist()
    reasons, _ = _reasons(truth, stats)
    assert "area_outlier" in reasons
    assert reasons & {"position_outlier", "impossible_overlap"}


@pytest.mark.parametrize("pair", [("Trapezium", "Hamate"), ("finger-8", "finger-12"), ("Radius", "Ulna")])
def test_swapped_labels(clean_hands, stats, pair):
    truth = copy.deepcopy(clean_hands[3][1])
    for annotation in truth:
        if annotation["label"] in pair:
            annotation["label"] = pair[1] if annotation["label"] == pair[0] else pair[0]
    features = image_features("case", truth, SIZE, SIZE)
    findings = detect_statistical(features, stats)
    swaps = [detail for reason, _, detail in findings if reason == "label_swap"]
    assert swaps and set(swaps[0].split("<->")) == set(pair)


def test_exclusion_rules_and_manual_lists():
    findings = [
        {"image_name": "a.png", "reason": "label_swap"},
        {"image_name": "b.png", "reason": "bent_wrist"},
        {"image_name": "c.png", "reason": "area_outlier"},
    ]
    names = ["a.png", "b.png", "c.png", "d.png"]
    excluded = excluded_images(findings, names, ["label_swap", "area_outlier"], exclude=["d.png"], include=["c.png"])
    assert excluded == {"a.png": "label_swap", "d.png": "manual"}
    with pytest.raises(ValueError, match="unknown outlier reason"):
        excluded_images(findings, names, ["label-swap"])
    with pytest.raises(ValueError, match="not a training image"):
        excluded_images(findings, names, [], exclude=["zzz.png"])


def test_label_frame_side_rotation_and_mirroring():
    # A hand-made right hand, fingers straight up, then turned 30 degrees.
    centroids = {name: np.array([0.0, -0.1]) for name in CLASSES[19:27]}
    centroids.update(
        {"finger-7": np.array([-0.05, -1.0]), "finger-11": np.array([0.0, -1.0]), "finger-15": np.array([0.05, -1.0])}
    )
    centroids.update({f"finger-{k}": np.array([-0.4, -0.6]) for k in (1, 2, 3)})
    centroids.update({f"finger-{k}": np.array([0.3, -1.2]) for k in (16, 17, 18, 19)})
    centroids.update({"Radius": np.array([-0.05, 0.5]), "Ulna": np.array([0.08, 0.5])})
    shifted = {k: v + [0, 0.1] for k, v in centroids.items()}  # carpals at the origin
    frame = label_frame(shifted)
    assert frame["side"] == "right" and abs(frame["rotation"]) < 1e-6 and abs(frame["wrist_bend"]) < 2
    turn = np.array([[np.cos(np.pi / 6), -np.sin(np.pi / 6)], [np.sin(np.pi / 6), np.cos(np.pi / 6)]])
    turned = label_frame({k: turn @ v for k, v in shifted.items()})
    assert turned["rotation"] == pytest.approx(30.0)
    mirrored = label_frame({k: v * [-1, 1] for k, v in shifted.items()})
    assert mirrored["side"] == "left"
    # In the canonical frame both hands look like the same right hand.
    point = shifted["finger-3"]
    assert np.allclose(to_canonical(point, frame), to_canonical(point * [-1, 1], mirrored))


def test_pixel_pose_follows_the_labels(clean_hands):
    for image, truth in clean_hands[:8]:
        centroids = {a["label"]: np.asarray(a["points"], float).mean(axis=0) for a in truth}
        frame = label_frame(centroids)
        pose = pixel_pose(image)
        assert pose["side"] == frame["side"]
        assert abs(pose["rotation"] - frame["rotation"]) < 12
