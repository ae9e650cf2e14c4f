"""Outlier detection on the training annotations.

Each detector returns findings ``(reason, score, detail)`` for one image.
Reasons that mean the annotation is wrong (``ANNOTATION_FAULTS``) exclude an
image from training by default; the others mark hard but correctly labelled
images and are reported only.

Features of one image come from ``image_features``: per annotation its
label, polygon, area, centroid and problems; per image the hand's frame
(see ``pose.label_frame``) and the overlaps between annotations. The
statistical detectors compare an image with ``DatasetStats`` fitted on all
training images with robust statistics (medians), so a few faults do not
move the reference.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from .classes import CLASSES
from .errors import ConfigError
from .pose import label_frame, to_canonical

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
HARD_CASES = ("bent_wrist", "rotated_hand")
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


@dataclass
class Annotation:
    label: str
    points: np.ndarray
    area: float = 0.0
    centroid: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class ImageFeatures:
    image_name: str
    height: int
    width: int
    annotations: list[Annotation]
    frame: dict | None
    overlaps: dict  # (i, j) annotation indices -> IoU, only pairs that touch

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
    count = len(points)
    edges = [(points[i], points[(i + 1) % count]) for i in range(count)]
    for i in range(count):
        for j in range(i + 2, count):
            if i == 0 and j == count - 1:
                continue  # adjacent through the closing edge
            if _segments_cross(*edges[i], *edges[j]):
                return True
    return False


def _local_mask(points: np.ndarray):
    rounded = np.round(points).astype(np.int32)
    x0, y0 = rounded.min(axis=0)
    x1, y1 = rounded.max(axis=0)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [(rounded - [x0, y0]).reshape(-1, 1, 2)], 1)
    return mask.astype(bool), (x0, y0, x1, y1)


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


def image_features(image_name: str, annotations: list[dict], height: int, width: int) -> ImageFeatures:
    """Features of one image's annotations (raw dicts from the label file)."""
    parsed: list[Annotation] = []
    masks = []
    for raw in annotations:
        try:
            points = np.asarray(raw["points"], dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            parsed.append(Annotation(raw["label"], np.zeros((0, 2)), problems=["points are not numbers"]))
            masks.append(None)
            continue
        annotation = Annotation(raw["label"], points)
        if len(points) < 3:
            annotation.problems.append(f"{len(points)} points")
        else:
            if (points < -0.5).any() or (points[:, 0] > width - 0.5).any() or (points[:, 1] > height - 0.5).any():
                annotation.problems.append("outside the image")
            if self_intersects(points):
                annotation.problems.append("self-intersecting")
        if len(points) >= 3:
            mask = _local_mask(points)
            annotation.area = float(mask[0].sum())
            moments = cv2.moments(points.astype(np.float32))
            if moments["m00"] > 0:
                annotation.centroid = np.array([moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]])
            if annotation.area == 0 or annotation.centroid is None:
                annotation.problems.append("zero area")
            masks.append(mask)
        else:
            masks.append(None)
        parsed.append(annotation)
    overlaps = {}
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if masks[i] is not None and masks[j] is not None:
                iou = _iou(masks[i], masks[j])
                if iou > 0:
                    overlaps[(i, j)] = iou
    centroids = {a.label: a.centroid for a in reversed(parsed) if a.centroid is not None}
    return ImageFeatures(image_name, height, width, parsed, label_frame(centroids), overlaps)


@dataclass
class DatasetStats:
    """Robust per-class references fitted on all training images."""

    log_area_median: dict
    log_area_spread: dict
    position_median: dict
    position_spread: dict
    pair_frequency: dict  # (class, class) sorted -> share of images where they overlap
    images: int


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


def fit_stats(all_features: list[ImageFeatures]) -> DatasetStats:
    areas: dict[str, list] = {name: [] for name in CLASSES}
    positions: dict[str, list] = {name: [] for name in CLASSES}
    pair_counts: Counter = Counter()
    for features in all_features:
        for label, annotation in features.first_by_label().items():
            value = _normalised_log_area(annotation, features.frame)
            if value is not None and label in areas:
                areas[label].append(value)
        for label, point in features.canonical_centroids().items():
            if label in positions:
                positions[label].append(point)
        pair_counts.update(_class_pairs(features))
    log_area_median, log_area_spread, position_median, position_spread = {}, {}, {}, {}
    for name in CLASSES:
        if areas[name]:
            values = np.asarray(areas[name])
            log_area_median[name] = float(np.median(values))
            log_area_spread[name] = float(1.4826 * np.median(np.abs(values - np.median(values))) + 0.05)
        if positions[name]:
            points = np.asarray(positions[name])
            centre = np.median(points, axis=0)
            position_median[name] = centre
            position_spread[name] = float(np.median(np.linalg.norm(points - centre, axis=1)) + 0.01)
    images = max(1, len(all_features))
    return DatasetStats(
        log_area_median,
        log_area_spread,
        position_median,
        position_spread,
        {pair: count / images for pair, count in pair_counts.items()},
        len(all_features),
    )


def detect_structure(features: ImageFeatures) -> list[tuple[str, float, str]]:
    """Missing or repeated classes, extra objects and invalid polygons."""
    findings = []
    counts = Counter(annotation.label for annotation in features.annotations)
    missing = [name for name in CLASSES if counts[name] == 0]
    if missing:
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


def detect_statistical(features: ImageFeatures, stats: DatasetStats) -> list[tuple[str, float, str]]:
    """Findings that compare the image with the rest of the data set."""
    findings = []
    frame = features.frame
    first = features.first_by_label()
    for label, annotation in first.items():
        value = _normalised_log_area(annotation, frame)
        if value is None or label not in stats.log_area_median:
            continue
        z = abs(value - stats.log_area_median[label]) / stats.log_area_spread[label]
        if z > AREA_Z:
            ratio = float(np.exp(value - stats.log_area_median[label]))
            findings.append(("area_outlier", round(z, 2), f"{label} area {ratio:.2f} x typical"))

    positions = features.canonical_centroids()
    deviation = {}
    for label, point in positions.items():
        if label in stats.position_median and label not in FOREARM:
            distance = float(np.linalg.norm(point - stats.position_median[label]))
            deviation[label] = (distance / stats.position_spread[label], distance)
    swapped = set()
    candidates = sorted(label for label, (z, _) in deviation.items() if z > SWAP_Z)
    for k, a in enumerate(candidates):
        for b in candidates[k + 1 :]:
            z_as_b = np.linalg.norm(positions[a] - stats.position_median[b]) / stats.position_spread[b]
            z_as_a = np.linalg.norm(positions[b] - stats.position_median[a]) / stats.position_spread[a]
            before = deviation[a][0] + deviation[b][0]
            if max(z_as_b, z_as_a) < SWAP_Z and z_as_b + z_as_a < 0.3 * before:
                findings.append(("label_swap", round(float(before / (z_as_b + z_as_a + 1e-6)), 2), f"{a}<->{b}"))
                swapped.update((a, b))
    if all(name in positions for name in FOREARM) and positions["Radius"][0] > positions["Ulna"][0]:
        # In the canonical (right-hand) frame the radius lies on the thumb's side.
        gap = float(positions["Radius"][0] - positions["Ulna"][0])
        findings.append(("label_swap", round(1 + gap, 2), "Radius<->Ulna"))
    for label, (z, distance) in deviation.items():
        if label not in swapped and z > POSITION_Z and distance > POSITION_MIN_DISTANCE:
            findings.append(
                ("position_outlier", round(z, 2), f"{label} {distance:.2f} hand units from its usual place")
            )

    if stats.images >= 10:
        for (i, j), iou in features.overlaps.items():
            a, b = features.annotations[i].label, features.annotations[j].label
            pair = tuple(sorted((a, b)))
            if (
                a != b
                and iou > OVERLAP_MIN_IOU
                and stats.pair_frequency.get(pair, 0) <= OVERLAP_MAX_FREQUENCY + 1 / stats.images
            ):
                findings.append(("impossible_overlap", round(iou, 3), f"{a} overlaps {b} (IoU {iou:.2f})"))

    if frame is not None:
        if abs(frame["wrist_bend"]) > BENT_WRIST_DEGREES:
            findings.append(
                ("bent_wrist", round(abs(frame["wrist_bend"]), 1), f"wrist bent {frame['wrist_bend']:.0f} degrees")
            )
        if abs(frame["rotation"]) > ROTATED_HAND_DEGREES:
            findings.append(
                ("rotated_hand", round(abs(frame["rotation"]), 1), f"hand rotated {frame['rotation']:.0f} degrees")
            )
    return findings


def detect(all_features: list[ImageFeatures]) -> list[dict]:
    """All findings of all images: rows of image_name, reason, score, detail."""
    stats = fit_stats(all_features)
    rows = []
    for features in all_features:
        for reason, score, detail in detect_structure(features) + detect_statistical(features, stats):
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
