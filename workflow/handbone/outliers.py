"""Outlier detection on the training annotations.

Each detector returns findings ``(reason, score, detail)`` for one image.
Reasons that mean the annotation is wrong (``ANNOTATION_FAULTS``) exclude an
image from training by default; the others mark hard but correctly labelled
images and are reported only.

Features of one image come from ``image_features``: per annotation its
label, polygon, the part of it inside the image, area, centroid, the image
borders it touches and its problems; per image the hand's frame (see
``pose.label_frame``) and the overlaps between annotations. The statistical
detectors compare an image with ``DatasetStats`` fitted on all training
images with robust statistics (medians), so a few faults do not move the
reference.

Radiographs cut fingers and forearms at the image's border, and annotators
clip the polygons there. A bone that touches the border is ``truncated``:
its area and centroid are those of the visible part, so the statistics are
fitted on uncut bones only, and a cut bone is only tested for what a cut
cannot explain (a larger area than usual, a part lying outside the bone's
usual place). A class that is not annotated because its usual place is
outside the image is out of view, not missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .classes import CLASSES, OSSIFICATION_AGE
from .data import COORDINATE_LIMIT, clip_polygon, far_outside, parse_points, polygon_area
from .errors import ConfigError
from .pose import corrected_frame, from_canonical, label_frame, to_canonical

ANNOTATION_FAULTS = (
    "class_missing",
    "class_duplicated",
    "extra_object",
    "polygon_invalid",
    "area_outlier",
    "position_outlier",
    "label_swap",
    "impossible_overlap",
)
HARD_CASES = ("bent_wrist", "rotated_hand", "truncated", "unossified_carpals")
REASONS = ANNOTATION_FAULTS + HARD_CASES
# Bones whose place relative to the hand depends on the wrist's bend; they
# are checked against each other instead of against the hand's frame.
FOREARM = ("Radius", "Ulna")

AREA_Z = 4.0
POSITION_Z = 6.0
POSITION_MIN_DISTANCE = 0.12  # in hand units (wrist to knuckles = 1)
SWAP_Z = 3.0
OVERLAP_MIN_IOU = 0.05
OVERLAP_MAX_FREQUENCY = 0.02
BENT_WRIST_DEGREES = 15.0
ROTATED_HAND_DEGREES = 20.0
# A class cut by the border in at least this share of the images it is in
# (the forearm, in almost every radiograph) is not reported as truncated.
USUALLY_CUT = 0.5
# A class is out of view when its usual place, mapped into the image, lies
# outside it or closer to the border than this many position spreads.
OUT_OF_VIEW_SPREADS = 2.0
BORDERS = ("top", "bottom", "left", "right")
# Children differ from the typical order by about this much (years).
ORDER_TOLERANCE = 1.0
# A carpal grows to its adult size in some years after it ossifies: a
# child's latest-ossified carpals are at most CHILD_AREA_RATIO times as
# large, relative to the first-ossifying carpals (Capitate, Hamate), as in
# adults (where that ratio varies by a few per cent); when only those are
# present, they are at least CHILD_AREA_Z area spreads below the adults'
# median.
CHILD_AREA_RATIO = 0.8
CHILD_AREA_Z = 2.0
# Below this many images without a child's carpals, the references are
# fitted on all images.
MIN_ADULTS = 10
# The exposed field: black bands (digital padding) are lines of the image's
# side at most BLACK_LEVEL in at least BLACK_SHARE of their pixels; a
# collimator edge is a straight step from a bright, flat unexposed area
# (mean at least SHUTTER_LEVEL, spread at most SHUTTER_FLATNESS) to darker
# pixels within FIELD_DEPTH of the side, found along at least FIELD_SUPPORT
# of the side. A bone within FIELD_TOUCH pixels of an edge is cut by it.
BLACK_LEVEL = 4
BLACK_SHARE = 0.95
SHUTTER_LEVEL = 120.0
SHUTTER_FLATNESS = 12.0
SHUTTER_STEP = 30.0
FIELD_DEPTH = 0.3
FIELD_SUPPORT = 0.4
FIELD_TOUCH = 2.0


@dataclass
class Annotation:
    label: str
    points: np.ndarray  # as annotated
    visible: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # the part inside the image
    area: float = 0.0  # pixels inside the image
    centroid: np.ndarray | None = None  # of the visible part
    extent: float = 0.0  # farthest visible point from the centroid, in pixels
    borders: tuple = ()  # the image borders the polygon touches
    problems: list[str] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return bool(self.borders)


@dataclass
class ImageFeatures:
    image_name: str
    height: int
    width: int
    annotations: list[Annotation]
    frame: dict | None
    overlaps: dict  # (i, j) annotation indices -> IoU, only pairs that touch
    edges: list = field(default_factory=list)  # of the exposed field inside the image, see field_edges

    def first_by_label(self) -> dict[str, Annotation]:
        found: dict[str, Annotation] = {}
        for annotation in self.annotations:
            found.setdefault(annotation.label, annotation)
        return found

    def canonical_centroids(self) -> dict[str, np.ndarray]:
        if self.frame is None:
            return {}
        return {
            label: to_canonical(annotation.centroid, self.frame)
            for label, annotation in self.first_by_label().items()
            if annotation.centroid is not None
        }


def _segments_cross(p1, p2, q1, q2) -> bool:
    def orientation(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return (
        orientation(p1, p2, q1) * orientation(p1, p2, q2) < 0 and orientation(q1, q2, p1) * orientation(q1, q2, p2) < 0
    )


def self_intersects(points: np.ndarray) -> bool:
    """Whether two non-adjacent edges of the closed polygon cross."""
    # Clamped so that the cross products of far-out points stay finite.
    points = np.clip(points, -COORDINATE_LIMIT, COORDINATE_LIMIT)
    count = len(points)
    edges = [(points[i], points[(i + 1) % count]) for i in range(count)]
    for i in range(count):
        for j in range(i + 2, count):
            if i == 0 and j == count - 1:
                continue  # adjacent through the closing edge
            if _segments_cross(*edges[i], *edges[j]):
                return True
    return False


def _local_mask(visible: np.ndarray, height: int, width: int):
    """The pixels of a polygon already clipped to the image, in its box
    (x0, y0, x1, y1) within the image."""
    rounded = np.round(visible).astype(np.int32)
    x0, y0 = np.maximum(rounded.min(axis=0), 0)
    x1, y1 = np.minimum(rounded.max(axis=0), [width - 1, height - 1])
    mask = np.zeros((max(y1 - y0 + 1, 0), max(x1 - x0 + 1, 0)), np.uint8)
    if mask.size:
        cv2.fillPoly(mask, [(rounded - [x0, y0]).reshape(-1, 1, 2)], 1)
    return mask.astype(bool), (int(x0), int(y0), int(x1), int(y1))


def _borders(mask: np.ndarray, box, height: int, width: int) -> tuple:
    """The image borders a polygon's pixels reach."""
    x0, y0, x1, y1 = box
    if not mask.any():
        return ()
    touching = {
        "top": y0 == 0 and mask[0].any(),
        "bottom": y1 == height - 1 and mask[-1].any(),
        "left": x0 == 0 and mask[:, 0].any(),
        "right": x1 == width - 1 and mask[:, -1].any(),
    }
    return tuple(border for border in BORDERS if touching[border])


def _side_view(image: np.ndarray, side: str) -> np.ndarray:
    """The image seen from one side: a[i, j] is the pixel at distance j
    from that side, i along it."""
    return {"left": image, "right": image[:, ::-1], "top": image.T, "bottom": image[::-1, :].T}[side]


def _side_coordinates(points: np.ndarray, side: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of image points (x, y) in ``_side_view``'s coordinates."""
    x, y = points[:, 0], points[:, 1]
    return {
        "left": (y, x),
        "right": (y, width - 1 - x),
        "top": (x, y),
        "bottom": (x, height - 1 - y),
    }[side]


def _collimator_line(view: np.ndarray, band: int) -> tuple[float, float] | None:
    """(slope, intercept) of a collimator edge j = slope * i + intercept seen
    from one side (beyond ``band`` black lines), or None: per line i, the
    strongest bright-to-dark step within FIELD_DEPTH of the side whose outer
    part is bright and flat, then a straight line fitted to these steps."""
    rows, columns = view.shape
    depth = min(columns - band, int(FIELD_DEPTH * columns))
    if depth < 8:
        return None
    strip = view[:, band : band + depth].astype(np.float32)
    lit = (strip > BLACK_LEVEL).mean(axis=1) > 0.5  # lines not in a black band across
    step = strip[:, :-3] - strip[:, 3:]
    position = np.argmax(step, axis=1)
    found = []
    for i in np.flatnonzero(lit & (step.max(axis=1) >= SHUTTER_STEP)):
        outer = strip[i, : position[i] + 1]
        if len(outer) >= 3 and outer.mean() >= SHUTTER_LEVEL and outer.std() <= SHUTTER_FLATNESS:
            found.append((i, band + position[i] + 1.5))
    if len(found) < max(8, FIELD_SUPPORT * lit.sum()):
        return None
    found = np.asarray(found, float)
    keep = np.ones(len(found), bool)
    for _ in range(3):
        slope, intercept = np.polyfit(found[keep, 0], found[keep, 1], 1)
        keep = np.abs(found[:, 1] - (slope * found[:, 0] + intercept)) <= FIELD_TOUCH
        if keep.sum() < 2:
            return None
    spread = np.ptp(found[keep, 0]) if keep.any() else 0
    if keep.sum() < FIELD_SUPPORT * lit.sum() or spread < 0.5 * lit.sum() or abs(slope) > 0.2:
        return None
    return float(slope), float(intercept)


def field_edges(image: np.ndarray) -> list[tuple[str, str, float, float]]:
    """The edges of the exposed field inside the image's border:
    (side, kind, slope, intercept), where the field starts at
    j = slope * i + intercept in ``_side_view`` coordinates; kind is
    "black band" (digital padding: whole lines of black) or "collimator
    edge" (a straight edge of a bright, flat unexposed area)."""
    edges = []
    for side in BORDERS:
        view = _side_view(image, side)
        black = (view <= BLACK_LEVEL).mean(axis=0) >= BLACK_SHARE
        band = int(np.argmin(black)) if not black.all() else 0
        if band:
            edges.append((side, "black band", 0.0, float(band)))
        line = _collimator_line(view, band)
        if line is not None:
            edges.append((side, "collimator edge", *line))
    return edges


def _field_borders(visible: np.ndarray, edges, height: int, width: int) -> tuple:
    """The field edges (black bands, collimator edges) a polygon reaches."""
    touched = []
    for side, kind, slope, intercept in edges:
        i, j = _side_coordinates(visible, side, height, width)
        if (j - (slope * i + intercept) <= FIELD_TOUCH).any():
            touched.append(f"{side} {kind}")
    return tuple(touched)


def _iou(first, second) -> float:
    (mask_a, (ax0, ay0, ax1, ay1)), (mask_b, (bx0, by0, bx1, by1)) = first, second
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x0 > x1 or y0 > y1:
        return 0.0
    crop_a = mask_a[y0 - ay0 : y1 - ay0 + 1, x0 - ax0 : x1 - ax0 + 1]
    crop_b = mask_b[y0 - by0 : y1 - by0 + 1, x0 - bx0 : x1 - bx0 + 1]
    intersection = int(np.count_nonzero(crop_a & crop_b))
    union = int(mask_a.sum()) + int(mask_b.sum()) - intersection
    return intersection / union if union else 0.0


def _parse_annotation(raw: dict, height: int, width: int, edges=()):
    """One annotation's features and its mask in the image (None when it has
    no area to draw)."""
    label = raw["label"] if isinstance(raw["label"], str) else repr(raw["label"])
    points, problem = parse_points(raw["points"])
    if problem:
        return Annotation(label, np.zeros((0, 2)), problems=[problem]), None
    annotation = Annotation(label, points)
    if len(points) < 3:
        annotation.problems.append(f"{len(points)} points")
        return annotation, None
    if far_outside(points, height, width).any():
        annotation.problems.append("outside the image")
    if self_intersects(points):
        annotation.problems.append("self-intersecting")
    annotation.visible = clip_polygon(points, height, width)
    if polygon_area(annotation.visible) == 0:
        annotation.problems.append("zero area" if polygon_area(points) == 0 else "entirely outside the image")
        return annotation, None
    mask = _local_mask(annotation.visible, height, width)
    annotation.area = float(mask[0].sum())
    annotation.borders = _borders(*mask, height, width) + _field_borders(annotation.visible, edges, height, width)
    moments = cv2.moments(annotation.visible.astype(np.float32))
    if moments["m00"] > 0:
        annotation.centroid = np.array([moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]])
        annotation.extent = float(np.linalg.norm(annotation.visible - annotation.centroid, axis=1).max())
    if annotation.area == 0 or annotation.centroid is None:
        annotation.problems.append("zero area")
    return annotation, mask


def image_features(
    image_name: str, annotations: list[dict], height: int, width: int, image: np.ndarray | None = None
) -> ImageFeatures:
    """Features of one image's annotations (raw dicts from the label file).

    Every polygon is clipped to the image before anything is computed from
    it, so points far outside (a typo such as 1e15) are reported as a
    problem rather than overflowing the arithmetic. With the ``image``'s
    pixels, the edges of its exposed field (black bands, collimator edges,
    see ``field_edges``) count as borders too: a bone reaching one is cut.
    """
    edges = field_edges(image) if image is not None else []
    parsed, masks = [], []
    for raw in annotations:
        annotation, mask = _parse_annotation(raw, height, width, edges)
        parsed.append(annotation)
        masks.append(mask)
    overlaps = {}
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if masks[i] is not None and masks[j] is not None:
                iou = _iou(masks[i], masks[j])
                if iou > 0:
                    overlaps[(i, j)] = iou
    first = {a.label: a for a in reversed(parsed) if a.centroid is not None}
    centroids = {label: annotation.centroid for label, annotation in first.items()}
    cut = {label for label, annotation in first.items() if annotation.truncated}
    return ImageFeatures(image_name, height, width, parsed, label_frame(centroids, cut), overlaps, edges)


@dataclass
class DatasetStats:
    """Robust per-class references fitted on all training images (the
    area, position and extent ones on bones not cut by the border)."""

    log_area_median: dict
    log_area_spread: dict
    position_median: dict
    position_spread: dict
    pair_frequency: dict  # (class, class) sorted -> share of images where they overlap
    images: int
    extent_median: dict = field(default_factory=dict)  # farthest point from the centroid, hand units
    truncated_rate: dict = field(default_factory=dict)  # share of the images with the class where it is cut
    usual_place: dict = field(default_factory=dict)  # (centre, spread) of the centroid, of cut bones if never whole


def _normalised_log_area(annotation: Annotation, frame: dict | None) -> float | None:
    if frame is None or annotation.area <= 0:
        return None
    return float(np.log(annotation.area / frame["scale"] ** 2))


def _class_pairs(features: ImageFeatures) -> set:
    pairs = set()
    for (i, j), _iou in features.overlaps.items():
        a, b = features.annotations[i].label, features.annotations[j].label
        if a != b:
            pairs.add(tuple(sorted((a, b))))
    return pairs


def _samples(all_features: list[ImageFeatures]) -> tuple[dict, dict]:
    """Per class: normalised log areas, canonical centroids and extents of
    its whole, valid bones; and canonical centroids of its cut ones. Only
    from images whose frame has all its bones."""
    whole = {name: ([], [], []) for name in CLASSES}
    cut: dict[str, list] = {name: [] for name in CLASSES}
    for features in all_features:
        frame = features.frame
        if frame is None or frame["cut"] or frame["left_out"]:
            continue
        for label, annotation in features.first_by_label().items():
            if label not in whole or annotation.problems or annotation.centroid is None:
                continue
            position = to_canonical(annotation.centroid, frame)
            if annotation.truncated:
                cut[label].append(position)
                continue
            areas, positions, extents = whole[label]
            areas.append(_normalised_log_area(annotation, frame))
            positions.append(position)
            extents.append(annotation.extent / frame["scale"])
    return whole, cut


def _centre_and_spread(points: list) -> tuple[np.ndarray, float]:
    points = np.asarray(points)
    centre = np.median(points, axis=0)
    return centre, float(np.median(np.linalg.norm(points - centre, axis=1)) + 0.01)


def fit_stats(all_features: list[ImageFeatures]) -> DatasetStats:
    present: Counter = Counter()
    cut_count: Counter = Counter()
    pair_counts: Counter = Counter()
    for features in all_features:
        for label, annotation in features.first_by_label().items():
            present[label] += 1
            cut_count[label] += annotation.truncated
        pair_counts.update(_class_pairs(features))
    whole, cut = _samples(all_features)
    log_area_median, log_area_spread, position_median, position_spread, extent_median = {}, {}, {}, {}, {}
    usual_place = {}
    for name, (areas, positions, extents) in whole.items():
        if positions:
            values = np.asarray(areas)
            log_area_median[name] = float(np.median(values))
            log_area_spread[name] = float(1.4826 * np.median(np.abs(values - np.median(values))) + 0.05)
            position_median[name], position_spread[name] = _centre_and_spread(positions)
            extent_median[name] = float(np.median(extents))
        if positions or cut[name]:
            # A class that is always cut (the forearm) still has a usual
            # place for its visible part, enough to tell it out of view.
            usual_place[name] = _centre_and_spread(positions or cut[name])
    images = max(1, len(all_features))
    return DatasetStats(
        log_area_median,
        log_area_spread,
        position_median,
        position_spread,
        {pair: count / images for pair, count in pair_counts.items()},
        len(all_features),
        extent_median,
        {label: cut_count[label] / count for label, count in present.items()},
        usual_place,
    )


def out_of_view(features: ImageFeatures, stats: DatasetStats | None) -> list[str]:
    """The classes not annotated in an image whose usual place in the hand
    lies outside the image (or at its border): cut off, not forgotten."""
    frame = features.frame
    if stats is None or frame is None or frame["cut"]:
        return []
    present = {annotation.label for annotation in features.annotations}
    found = []
    for name in CLASSES:
        if name in present or name not in stats.usual_place:
            continue
        centre, spread = stats.usual_place[name]
        x, y = from_canonical(centre, frame)
        margin = OUT_OF_VIEW_SPREADS * spread * frame["scale"]
        if min(x, y) < margin - 0.5 or x > features.width - 0.5 - margin or y > features.height - 0.5 - margin:
            found.append(name)
            continue
        for side, _kind, slope, intercept in features.edges:
            i, j = _side_coordinates(np.array([[x, y]]), side, features.height, features.width)
            if j[0] < slope * i[0] + intercept + margin:
                found.append(name)
                break
    return found


def carpal_stage(features: ImageFeatures, stats: DatasetStats | None) -> dict | None:
    """Whether the carpals are those of a child, from the labels alone:
    {"missing": carpals not yet ossified, "small": carpals smaller than
    AREA_Z area spreads (lately ossified), "ratio": area of the latest-
    ossified present carpals relative to adults'}; None when not.

    A child's radiograph lacks the carpals that ossify later than the
    child's age, and those that did ossify grow to their adult size over some
    years. So the classes missing (and not out of view) must all be carpals
    that ossify no earlier than every present one (OSSIFICATION_AGE, give or
    take ORDER_TOLERANCE), the carpals much smaller than usual must ossify no
    earlier than every carpal of usual size, and, as evidence of a child
    rather than a forgotten bone, the latest-ossifying present carpals must
    together be small compared with ``stats`` (fitted on adults by
    ``detect``): relative to the hand's first-ossifying carpals at most
    CHILD_AREA_RATIO of the adults' ratio, or, when those are all there is,
    a mean area z-score of at most -CHILD_AREA_Z.
    """
    frame = features.frame
    if stats is None or frame is None or frame["cut"]:
        return None
    present = {annotation.label for annotation in features.annotations}
    hidden = set(out_of_view(features, stats))
    missing = [name for name in CLASSES if name not in present and name not in hidden]
    if any(name not in OSSIFICATION_AGE for name in missing):
        return None
    z = {}
    for label, annotation in features.first_by_label().items():
        value = _normalised_log_area(annotation, frame)
        if label in OSSIFICATION_AGE and label in stats.log_area_median and value is not None:
            if not annotation.truncated and not annotation.problems:
                z[label] = (value - stats.log_area_median[label]) / stats.log_area_spread[label]
    if not z:
        return None
    age = OSSIFICATION_AGE
    if (
        missing
        and min(age[name] for name in missing) < max(age[name] for name in present if name in age) - ORDER_TOLERANCE
    ):
        return None
    small = [name for name, value in z.items() if value < -AREA_Z]
    usual = [name for name in z if name not in small]
    if small and usual and min(age[name] for name in small) < max(age[name] for name in usual) - ORDER_TOLERANCE:
        return None
    latest = max(age[name] for name in z)
    group = [name for name in z if age[name] >= latest - ORDER_TOLERANCE]
    first = [name for name in z if age[name] <= min(OSSIFICATION_AGE.values()) + ORDER_TOLERANCE]
    ratio = np.mean([z[name] * stats.log_area_spread[name] for name in group])
    if first and not set(first) & set(group):
        # Relative to the first-ossifying carpals of the same hand, which
        # takes the hand's size out: adults' ratios vary by a few per cent.
        ratio -= np.mean([z[name] * stats.log_area_spread[name] for name in first])
        if ratio > np.log(CHILD_AREA_RATIO):
            return None
    elif np.mean([z[name] for name in group]) > -CHILD_AREA_Z:
        return None
    return {"missing": missing, "small": small, "ratio": float(np.exp(ratio)), "latest": group}


def detect_structure(features: ImageFeatures, stats: DatasetStats | None = None) -> list[tuple[str, float, str]]:
    """Missing or repeated classes, extra objects and invalid polygons; with
    ``stats``, classes out of view are not counted as missing."""
    findings = []
    counts = Counter(annotation.label for annotation in features.annotations)
    hidden = set(out_of_view(features, stats))
    missing = [name for name in CLASSES if counts[name] == 0 and name not in hidden]
    stage = carpal_stage(features, stats) if missing else None
    if stage:
        findings.append(
            (
                "unossified_carpals",
                float(len(missing)),
                f"{', '.join(missing)} not yet ossified: a child's hand "
                f"({', '.join(stage['latest'])} {stage['ratio']:.2f} x adult area)",
            )
        )
    elif missing:
        findings.append(("class_missing", float(len(missing)), ", ".join(missing)))
    for label, count in counts.items():
        if count < 2:
            continue
        indices = [i for i, a in enumerate(features.annotations) if a.label == label]
        touching = any(features.overlaps.get((i, j), 0) > 0 for k, i in enumerate(indices) for j in indices[k + 1 :])
        if touching:
            # A second polygon of a class lying on the first: an object on
            # the bone (a ring, a pin) annotated as bone.
            findings.append(("extra_object", float(count - 1), f"{count} overlapping polygons labelled {label}"))
        else:
            findings.append(("class_duplicated", float(count - 1), f"{label} annotated {count} times"))
    for annotation in features.annotations:
        if annotation.problems:
            findings.append(("polygon_invalid", 1.0, f"{annotation.label}: {', '.join(annotation.problems)}"))
    return findings


def _area_findings(features: ImageFeatures, stats: DatasetStats) -> list[tuple[str, float, str]]:
    """Bones whose area (relative to the hand's scale) is far from their
    class's; a child's lately ossified carpals (see ``carpal_stage``) are
    small, not wrong."""
    findings = []
    stage = carpal_stage(features, stats)
    young = set(stage["small"]) if stage else set()
    for label, annotation in features.first_by_label().items():
        if label in young:
            continue
        value = _normalised_log_area(annotation, features.frame)
        if value is None or label not in stats.log_area_median:
            continue
        z = (value - stats.log_area_median[label]) / stats.log_area_spread[label]
        # A cut bone shows only part of itself: it can be smaller than
        # usual, but not larger.
        # So can the forearm, whose visible length depends on where the
        # field ends (a collimator edge not found cuts it unseen).
        if abs(z) > AREA_Z and not ((annotation.truncated or label in FOREARM) and z < 0):
            ratio = float(np.exp(value - stats.log_area_median[label]))
            cut = ", although cut by the border" if annotation.truncated else ""
            findings.append(("area_outlier", round(abs(z), 2), f"{label} area {ratio:.2f} x typical{cut}"))
    return findings


def _distance(annotation: Annotation, label: str, frame: dict, stats: DatasetStats) -> float:
    """How far (hand units) an annotation lies from the usual place of
    ``label``. A cut bone's centroid moves with the cut, but all of its
    visible part must still lie within the bone's usual extent of that place."""
    centre = stats.position_median[label]
    if not annotation.truncated:
        return float(np.linalg.norm(to_canonical(annotation.centroid, frame) - centre))
    farthest = float(np.linalg.norm(to_canonical(annotation.visible, frame) - centre, axis=1).max())
    return max(0.0, farthest - stats.extent_median[label])


def _position_findings(features: ImageFeatures, stats: DatasetStats) -> list[tuple[str, float, str]]:
    """Bones far from their class's usual place, and pairs of bones each in
    the other's place (label_swap)."""
    frame, findings = features.frame, []
    # A wrist centre from only some carpals (the others cut or missing) is off by their
    # offset from the centre of all, a few spreads of a carpal's place: unless
    # the frame is corrected for that offset (see with_corrected_frame), the
    # carpals are then not tested (said in the truncated finding).
    partial = len(frame["carpals"]) < len(OSSIFICATION_AGE) and not frame["corrected"]
    skip = set(FOREARM) | (set(OSSIFICATION_AGE) if partial else set())
    placed = {
        label: annotation
        for label, annotation in features.first_by_label().items()
        if annotation.centroid is not None and label in stats.position_median and label not in skip
    }
    deviation = {}
    for label, annotation in placed.items():
        distance = _distance(annotation, label, frame, stats)
        deviation[label] = (distance / stats.position_spread[label], distance)
    swapped = set()
    candidates = sorted(label for label, (z, _) in deviation.items() if z > SWAP_Z)
    for k, a in enumerate(candidates):
        for b in candidates[k + 1 :]:
            z_as_b = _distance(placed[a], b, frame, stats) / stats.position_spread[b]
            z_as_a = _distance(placed[b], a, frame, stats) / stats.position_spread[a]
            before = deviation[a][0] + deviation[b][0]
            if max(z_as_b, z_as_a) < SWAP_Z and z_as_b + z_as_a < 0.3 * before:
                findings.append(("label_swap", round(float(before / (z_as_b + z_as_a + 1e-6)), 2), f"{a}<->{b}"))
                swapped.update((a, b))
    for label, (z, distance) in deviation.items():
        if label not in swapped and z > POSITION_Z and distance > POSITION_MIN_DISTANCE:
            findings.append(
                ("position_outlier", round(z, 2), f"{label} {distance:.2f} hand units from its usual place")
            )
    return findings


def _forearm_findings(features: ImageFeatures) -> list[tuple[str, float, str]]:
    positions = features.canonical_centroids()
    if all(name in positions for name in FOREARM) and positions["Radius"][0] > positions["Ulna"][0]:
        # In the canonical (right-hand) frame the radius lies on the thumb's
        # side, however much of the forearm the border cuts off.
        gap = float(positions["Radius"][0] - positions["Ulna"][0])
        return [("label_swap", round(1 + gap, 2), "Radius<->Ulna")]
    return []


def _overlap_findings(features: ImageFeatures, stats: DatasetStats) -> list[tuple[str, float, str]]:
    findings = []
    if stats.images < 10:
        return findings
    for (i, j), iou in features.overlaps.items():
        a, b = features.annotations[i].label, features.annotations[j].label
        pair = tuple(sorted((a, b)))
        if (
            a != b
            and iou > OVERLAP_MIN_IOU
            and stats.pair_frequency.get(pair, 0) <= OVERLAP_MAX_FREQUENCY + 1 / stats.images
        ):
            findings.append(("impossible_overlap", round(iou, 3), f"{a} overlaps {b} (IoU {iou:.2f})"))
    return findings


def _truncation_findings(features: ImageFeatures, stats: DatasetStats) -> list[tuple[str, float, str]]:
    """One finding listing the bones cut by the border (where their class
    usually is not) and the classes out of view, and what was not tested."""
    by_border: dict[str, list] = {}
    for label, annotation in features.first_by_label().items():
        if annotation.truncated and stats.truncated_rate.get(label, 0.0) < USUALLY_CUT:
            by_border.setdefault(" and ".join(annotation.borders), []).append(label)
    hidden = out_of_view(features, stats)
    parts = [f"{', '.join(labels)} cut by the {border} border" for border, labels in by_border.items()]
    if hidden:
        parts.append(f"{', '.join(hidden)} out of view")
    frame = features.frame
    if frame is not None and frame["cut"]:
        parts.append(f"the hand's frame rests on cut bones ({', '.join(frame['cut'])}): areas and positions not tested")
    elif frame is not None and by_border:
        parts.append("cut bones tested only for a larger area than usual and for lying outside their usual place")
        if frame["left_out"] and frame["corrected"]:
            parts.append("the hand's frame placed from the uncut carpals and knuckles' usual places")
        elif set(frame["left_out"]) & set(OSSIFICATION_AGE):
            parts.append("carpals' positions not tested (the wrist's centre rests on the uncut ones)")
    if not parts:
        return []
    count = sum(len(labels) for labels in by_border.values()) + len(hidden)
    return [("truncated", float(count), "; ".join(parts))]


def _pose_findings(frame: dict | None) -> list[tuple[str, float, str]]:
    findings = []
    if frame is None:
        return findings
    if abs(frame["wrist_bend"]) > BENT_WRIST_DEGREES:
        findings.append(
            ("bent_wrist", round(abs(frame["wrist_bend"]), 1), f"wrist bent {frame['wrist_bend']:.0f} degrees")
        )
    if abs(frame["rotation"]) > ROTATED_HAND_DEGREES:
        findings.append(
            ("rotated_hand", round(abs(frame["rotation"]), 1), f"hand rotated {frame['rotation']:.0f} degrees")
        )
    return findings


def detect_statistical(features: ImageFeatures, stats: DatasetStats) -> list[tuple[str, float, str]]:
    """Findings that compare the image with the rest of the data set."""
    findings = []
    frame = features.frame
    if frame is not None and not frame["cut"]:
        # A frame built on cut carpals or knuckles is biased, and areas and
        # positions measured in it would be too (said in the truncated finding).
        findings += _area_findings(features, stats) + _position_findings(features, stats)
    findings += _forearm_findings(features)
    findings += _overlap_findings(features, stats)
    findings += _truncation_findings(features, stats)
    return findings + _pose_findings(frame)


def with_corrected_frame(features: ImageFeatures, stats: DatasetStats) -> ImageFeatures:
    """The image with its hand's frame corrected, when it rests on only some
    of the carpals or knuckles, for their offset from the centre of all
    (``pose.corrected_frame``, from the usual places in ``stats``)."""
    frame = corrected_frame(features.frame, stats.position_median)
    return features if frame is features.frame else replace(features, frame=frame)


def detect(all_features: list[ImageFeatures]) -> list[dict]:
    """All findings of all images: rows of image_name, reason, score, detail."""
    stats = fit_stats(all_features)
    # The references are those of adults: children's carpals are smaller and
    # fewer (carpal_stage), and are judged against adults' as such.
    adults = [
        features for features in all_features if carpal_stage(with_corrected_frame(features, stats), stats) is None
    ]
    if MIN_ADULTS <= len(adults) < len(all_features):
        stats = fit_stats(adults)
    rows = []
    for features in (with_corrected_frame(features, stats) for features in all_features):
        try:
            findings = detect_structure(features, stats) + detect_statistical(features, stats)
        except Exception as error:  # a bug: keep its traceback, but say which image
            error.add_note(f"while looking for outliers in {features.image_name}")
            raise
        for reason, score, detail in findings:
            rows.append({"image_name": features.image_name, "reason": reason, "score": score, "detail": detail})
    return rows


def excluded_images(outliers, train_names, exclude_reasons, exclude=(), include=()) -> dict[str, str]:
    """Images left out of training: {image_name: why}.

    An image is excluded when it has a finding whose reason is in
    ``exclude_reasons`` or is listed in ``exclude``; ``include`` overrides both.
    """
    unknown = set(exclude_reasons) - set(REASONS)
    if unknown:
        raise ConfigError(f"unknown outlier reason(s) {sorted(unknown)}; known: {list(REASONS)}")
    names = set(train_names)
    for listed in list(exclude) + list(include):
        if listed not in names:
            raise ConfigError(f"outliers include/exclude list names {listed!r}, which is not a training image")
    why: dict[str, list] = {}
    for row in outliers:
        if row["reason"] in exclude_reasons:
            why.setdefault(row["image_name"], []).append(row["reason"])
    result = {name: ",".join(sorted(set(reasons))) for name, reasons in why.items()}
    for name in exclude:
        result[name] = "manual"
    for name in include:
        result.pop(name, None)
    return result
