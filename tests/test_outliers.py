import copy

import numpy as np
import pytest

from handbone import config
from handbone.classes import CLASSES
from handbone.outliers import (
    ANNOTATION_FAULTS,
    HARD_CASES,
    REASONS,
    detect,
    detect_statistical,
    detect_structure,
    excluded_images,
    fit_stats,
    image_features,
    self_intersects,
)
from handbone.pose import angle_difference, corrected_frame, from_canonical, label_frame, pixel_pose, to_canonical
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


# Hands cut by the image's top border, as radiographs with a small field of
# view cut fingertips: the image's top rows cropped off, every polygon
# clipped at the new border and bones entirely above it left out, as an
# annotator would.


def _clip_at_top(points: np.ndarray) -> np.ndarray:
    """The part of a closed polygon with y >= 0 (Sutherland-Hodgman)."""
    kept = []
    for k in range(len(points)):
        a, b = points[k], points[(k + 1) % len(points)]
        if a[1] >= 0:
            kept.append(a)
        if (a[1] >= 0) != (b[1] >= 0):
            kept.append(a + (0 - a[1]) / (b[1] - a[1]) * (b - a))
    return np.array(kept)


def _cut_at_top(image, truth, depth):
    """The hand with the border through the middle finger's distal phalanx
    (finger-8) at ``depth`` of its height from its tip (above 1: below it);
    returns the image, the annotations, and the labels cut and left out."""
    tip = np.asarray(_by_label(truth, "finger-8")["points"], float)
    shift = int(round(tip[:, 1].min() + depth * np.ptp(tip[:, 1])))
    annotations, cut, gone = [], set(), set()
    for annotation in truth:
        points = np.asarray(annotation["points"], float) - [0, shift]
        if points[:, 1].max() <= 0:
            gone.add(annotation["label"])
            continue
        if points[:, 1].min() < 0:
            points = _clip_at_top(points)
            cut.add(annotation["label"])
        annotations.append({**annotation, "points": np.round(points, 2).tolist()})
    return image[shift:], annotations, cut, gone


@pytest.fixture(scope="module")
def partly_cut_hands():
    """50 correct hands, every fifth cut at the top (one of them so deep that
    fingertips are out of view): (name, image, annotations, cut, gone)."""
    depths = iter([0.3, 0.5, 0.7, 0.9, 1.4, 0.4, 0.6, 0.8, 1.2, 0.55])
    hands = []
    for number in range(50):
        rng = np.random.default_rng([31, number])
        image, truth, _, _ = generate_image(make_person(rng), rng, SIZE, number % 2 == 1, 0.1, 0.0, 0.0)
        cut, gone = set(), set()
        if number % 5 == 0:
            image, truth, cut, gone = _cut_at_top(image, truth, next(depths))
        hands.append((f"hand{number}", image, truth, cut, gone))
    return hands


def _features(hands):
    return [image_features(name, truth, *image.shape) for name, image, truth, _, _ in hands]


def test_fingertips_cut_by_the_border_are_truncated_not_outliers(partly_cut_hands):
    rows = detect(_features(partly_cut_hands))
    for name, _, _, cut, gone in partly_cut_hands:
        found = [row for row in rows if row["image_name"] == name]
        assert {row["reason"] for row in found} <= set(HARD_CASES), found
        truncated = [row["detail"] for row in found if row["reason"] == "truncated"]
        if not cut and not gone:
            # The forearm leaves every image through the bottom: usual, not reported.
            assert not truncated, found
            continue
        assert len(truncated) == 1, found
        fingertips = sorted((cut | gone) & {"finger-4", "finger-8", "finger-12", "finger-16", "finger-1"})
        assert all(label in truncated[0] for label in fingertips), truncated
        if gone:
            assert "out of view" in truncated[0]
    assert any(gone for *_, gone in partly_cut_hands)


def test_truncated_is_reported_but_excludes_no_image_by_default():
    defaults = config.default("outliers.exclude_reasons")
    assert "truncated" in REASONS and "truncated" not in defaults
    assert set(defaults) == set(ANNOTATION_FAULTS)
    assert excluded_images([{"image_name": "a.png", "reason": "truncated"}], ["a.png"], defaults) == {}


def test_the_statistics_are_fitted_on_whole_bones_only(partly_cut_hands):
    whole = [hand for hand in partly_cut_hands if not hand[3]]
    with_cut = fit_stats(_features(partly_cut_hands))
    without_cut = fit_stats(_features(whole))
    for label in ("finger-4", "finger-8"):
        assert with_cut.log_area_median[label] == pytest.approx(without_cut.log_area_median[label], abs=0.02)
        assert 0 < with_cut.truncated_rate[label] < 0.5
    assert with_cut.truncated_rate["Radius"] == 1.0 and "Radius" not in with_cut.log_area_median


def test_a_forearm_cut_off_below_the_wrist_is_out_of_view_not_missing(clean_hands, stats):
    # In every clean hand the forearm leaves through the bottom, as in real
    # radiographs; here the border runs just above the ulna's end.
    image, truth = clean_hands[6]
    bottom = int(np.asarray(_by_label(truth, "Ulna")["points"], float)[:, 1].min()) - 1
    flip = np.array([1.0, -1.0])
    annotations = []
    for annotation in truth:
        points = np.asarray(annotation["points"], float)
        if points[:, 1].min() < bottom:
            kept = _clip_at_top((points - [0, bottom]) * flip) * flip + [0, bottom]  # the part with y <= bottom
            annotations.append({**annotation, "points": kept.tolist()})
    assert "Ulna" not in {a["label"] for a in annotations}
    features = image_features("case", annotations, bottom + 1, SIZE)
    findings = detect_structure(features, stats) + detect_statistical(features, stats)
    assert {reason for reason, _, _ in findings} <= set(HARD_CASES), findings
    assert any(reason == "truncated" and "Ulna out of view" in detail for reason, _, detail in findings)


def test_the_config_schema_lists_every_reason():
    assert config.subschema("outliers.exclude_reasons")["items"]["enum"] == list(REASONS)


def test_a_cut_bone_still_cannot_be_too_large_or_elsewhere(partly_cut_hands):
    stats = fit_stats(_features(partly_cut_hands))
    name, image, truth, cut, _ = next(hand for hand in partly_cut_hands if "finger-8" in hand[3])
    height, width = image.shape

    def reasons(annotations):
        features = image_features(name, annotations, height, width)
        return {reason for reason, _, _ in detect_structure(features, stats) + detect_statistical(features, stats)}

    assert reasons(truth) <= set(HARD_CASES)
    tip = np.asarray(_by_label(truth, "finger-8")["points"], float)
    enlarged = copy.deepcopy(truth)
    centre = tip.mean(axis=0)
    _by_label(enlarged, "finger-8")["points"] = _clip_at_top((tip - centre) * 2.5 + centre).tolist()
    assert "area_outlier" in reasons(enlarged)
    moved = copy.deepcopy(truth)
    little = np.asarray(_by_label(truth, "finger-17")["points"], float).mean(axis=0)
    _by_label(moved, "finger-8")["points"] = (tip + [little[0] - centre[0], 0]).tolist()  # still on the border
    assert "position_outlier" in reasons(moved)


def test_a_frame_bone_cut_by_the_border_is_left_out_of_the_frame(clean_hands, stats):
    truth = clean_hands[4][1]
    centroids = {a["label"]: np.asarray(a["points"], float).mean(axis=0) for a in truth}
    whole = label_frame(centroids)
    moved = dict(centroids, **{"finger-7": centroids["finger-7"] + [0, -30]})  # as if its base were cut off
    frame = label_frame(moved, cut={"finger-7", "Radius", "Ulna"})
    assert frame["left_out"] == ["finger-7"] and frame["cut"] == []
    assert abs(frame["rotation"] - whole["rotation"]) < 5 and abs(frame["scale"] / whole["scale"] - 1) < 0.2
    every_knuckle = label_frame(moved, cut={"finger-7", "finger-11", "finger-15"})
    assert every_knuckle["cut"] == ["finger-7", "finger-11", "finger-15"]
    # A frame resting on cut bones is biased: areas and positions are not
    # tested, and the truncated finding says so.
    features = image_features("case", truth, SIZE, SIZE)
    features.frame = every_knuckle
    findings = detect_statistical(features, stats)
    assert not {reason for reason, _, _ in findings} & {"area_outlier", "position_outlier"}
    assert any(reason == "truncated" and "not tested" in detail for reason, _, detail in findings)


def test_a_forearm_stub_or_one_forearm_bone_gives_no_wrist_bend(clean_hands):
    truth = clean_hands[5][1]
    centroids = {a["label"]: np.asarray(a["points"], float).mean(axis=0) for a in truth}
    frame = label_frame(centroids)
    assert np.isfinite(frame["wrist_bend"])
    stub = dict(centroids, Radius=frame["wrist"] - 0.1 * frame["scale"] * frame["axis"], Ulna=frame["wrist"])
    assert np.isnan(label_frame(stub)["wrist_bend"])
    # One forearm bone alone lies to the side of the forearm's axis.
    assert np.isnan(label_frame({k: v for k, v in centroids.items() if k != "Ulna"})["wrist_bend"])


def test_from_canonical_undoes_to_canonical(clean_hands):
    for _, truth in clean_hands[:2]:
        frame = image_features("case", truth, SIZE, SIZE).frame
        points = np.random.default_rng(0).uniform(0, SIZE, (5, 2))
        assert np.allclose(from_canonical(to_canonical(points, frame), frame), points)


def test_pixel_pose_with_fingertips_cut_by_the_border(clean_hands):
    # Fingers reaching the border must not be taken for the forearm.
    for image, truth in clean_hands[:12]:
        frame = label_frame({a["label"]: np.asarray(a["points"], float).mean(axis=0) for a in truth})
        cropped, _, cut, _ = _cut_at_top(image, truth, 1.5)
        assert cut
        pose = pixel_pose(cropped)
        assert pose["side"] == frame["side"]
        assert abs(angle_difference(pose["rotation"], frame["rotation"])) < 20


# Far-out and non-finite points: JSON carries 1e15, and Python's reader also
# NaN, Infinity, 1e400 (read as infinity) and integers too large for a float.


@pytest.mark.parametrize("value", [1e15, -1e15, 1e300, float("inf"), float("nan"), 10**400])
def test_a_point_far_outside_or_not_finite_is_invalid_not_a_crash(clean_hands, stats, value):
    truth = copy.deepcopy(clean_hands[0][1])
    polygon = _by_label(truth, "Capitate")
    polygon["points"] = polygon["points"][:2] + [[value, value]] + polygon["points"][2:]
    features = image_features("case", truth, SIZE, SIZE)
    details = [detail for reason, _, detail in detect_structure(features, stats) if reason == "polygon_invalid"]
    assert details and details[0].startswith("Capitate: ")
    assert "outside the image" in details[0] or "not finite" in details[0]
    capitate = features.first_by_label()["Capitate"]
    assert capitate.area <= SIZE * SIZE
    if len(capitate.visible):
        assert capitate.visible.min() >= -0.5 and capitate.visible.max() <= SIZE - 0.5
    detect_statistical(features, stats)  # bounded numbers only


def test_degenerate_polygons_are_invalid_not_a_crash(clean_hands, stats):
    truth = copy.deepcopy(clean_hands[0][1])
    _by_label(truth, "Lunate")["points"] = [[5, 5]] * 4  # one point repeated
    _by_label(truth, "Pisiform")["points"] = [[-500, -500], [-400, -500], [-400, -400]]  # entirely outside
    _by_label(truth, "Hamate")["points"] = [[-1e15, 10], [1e15, 10], [1e15, 11], [-1e15, 11]]  # across the image
    features = image_features("case", truth, SIZE, SIZE)
    details = {detail for reason, _, detail in detect_structure(features, stats) if reason == "polygon_invalid"}
    assert {"Lunate: zero area", "Pisiform: outside the image, entirely outside the image"} <= details
    assert "Hamate: outside the image" in details
    assert features.first_by_label()["Hamate"].borders == ("left", "right")


def test_a_childs_unossified_carpals_are_not_missing_but_a_forgotten_bone_is():
    """Children lack the carpals that ossify after their age (latest first)
    and their latest-ossified carpals are small: unossified_carpals, which
    excludes nothing; the same missing carpal in an adult, or a missing
    finger bone in a child, is still class_missing."""
    hands = []
    for number in range(40):
        rng = np.random.default_rng([77, number])
        child = number >= 30
        person = make_person(rng, child_rate=1.0 if child else 0.0, child_ages=(4.0, 8.0))
        _, truth, _, _ = generate_image(person, rng, SIZE, number % 2 == 1, 0.0, 0.0, 0.0)
        hands.append((f"hand{number}", truth, child))
    adult = copy.deepcopy(hands[0][1])
    adult = [a for a in adult if a["label"] != "Pisiform"]
    child_missing_finger = [a for a in hands[30][1] if a["label"] != "finger-4"]
    features = [image_features(name, truth, SIZE, SIZE) for name, truth, _ in hands]
    features += [
        image_features("adult without pisiform", adult, SIZE, SIZE),
        image_features("child without finger-4", child_missing_finger, SIZE, SIZE),
    ]
    rows = detect(features)
    reasons = {}
    for row in rows:
        reasons.setdefault(row["image_name"], set()).add(row["reason"])
    children = [name for name, truth, child in hands if child and len({a["label"] for a in truth}) < len(CLASSES)]
    assert children
    for name in children:
        assert "unossified_carpals" in reasons.get(name, set()), (name, reasons.get(name))
        assert not reasons[name] & set(ANNOTATION_FAULTS), (name, reasons[name])
    for name, _, _ in hands:
        assert not reasons.get(name, set()) & set(ANNOTATION_FAULTS), (name, reasons.get(name))
    assert "class_missing" in reasons["adult without pisiform"]
    assert "class_missing" in reasons["child without finger-4"]
    assert "unossified_carpals" in HARD_CASES and "unossified_carpals" not in config.default("outliers.exclude_reasons")


def test_bones_cut_by_a_collimator_edge_or_black_band_are_truncated(clean_hands, stats):
    """A bright, flat unexposed area beyond a straight edge (collimation) or
    a black band cuts bones as the image's border does, seen in the pixels."""
    from handbone.outliers import field_edges
    from handbone.synthetic import clip_polygon

    image, truth = copy.deepcopy(clean_hands[0])
    thumb = np.asarray(_by_label(truth, "finger-1")["points"], float)
    edge = int(thumb[:, 0].min() + 0.5 * np.ptp(thumb[:, 0]))
    rng = np.random.default_rng(0)
    for kind in ("collimator edge", "black band"):
        shown = image.copy()
        shown[:, :edge] = 0 if kind == "black band" else np.clip(rng.normal(205, 3, (SIZE, edge)), 0, 255)
        plane = [(np.array([edge, 0.0]), np.array([1.0, 0.0]))]
        cut = []
        for annotation in truth:
            points = np.round(clip_polygon(np.asarray(annotation["points"], float), plane))
            if len(points) >= 3:
                cut.append(dict(annotation, points=points.tolist()))
        found = field_edges(shown)
        assert [(side, name) for side, name, _, _ in found] == [("left", kind)], found
        assert abs(found[0][3] - edge) <= 2
        features = image_features("case", cut, SIZE, SIZE, shown)
        assert features.first_by_label()["finger-1"].borders == (f"left {kind}",)
        findings = detect_structure(features, stats) + detect_statistical(features, stats)
        assert {reason for reason, _, _ in findings} <= set(HARD_CASES), findings
        assert "truncated" in {reason for reason, _, _ in findings}


@pytest.mark.parametrize(
    "cut",
    [
        ("Hamate", "Triquetrum", "Pisiform"),  # the little finger's side of the wrist
        ("Trapezium", "Scaphoid"),  # the thumb's side
        ("Lunate", "Triquetrum", "Pisiform", "finger-15"),  # and a knuckle
        ("Capitate", "finger-11"),
    ],
)
def test_a_frame_on_some_carpals_is_corrected_to_the_whole_hands(stats, cut):
    # Hands not in the fit, right and left: with some carpals (and knuckles)
    # cut, the wrist's centre from the uncut ones is off by their offset,
    # which the usual places of the bones used correct.
    for number in range(6):
        rng = np.random.default_rng([98, number])
        _, truth, _, _ = generate_image(make_person(rng), rng, SIZE, number % 2 == 1, 0.1, 0.0, 0.0)
        centroids = {a["label"]: np.asarray(a["points"], float).mean(axis=0) for a in truth}
        whole = label_frame(centroids)
        moved = dict(centroids, **{name: centroids[name] + [0, -20] for name in cut})  # as if cut
        frame = label_frame(moved, cut=set(cut))
        assert not frame["corrected"] and set(frame["left_out"]) == set(cut)
        fixed = corrected_frame(frame, stats.position_median)
        assert fixed["corrected"] and fixed["side"] == whole["side"]
        before = np.linalg.norm(frame["wrist"] - whole["wrist"]) / whole["scale"]
        after = np.linalg.norm(fixed["wrist"] - whole["wrist"]) / whole["scale"]
        assert after < 0.03 and after < before
        # (A single knuckle's place along the hand varies by a few per cent.)
        assert abs(fixed["scale"] / whole["scale"] - 1) < 0.1
        assert abs(angle_difference(fixed["rotation"], whole["rotation"])) < 2.5
    # A frame on every carpal and knuckle is left as it is.
    assert corrected_frame(whole, stats.position_median) is whole
