"""A synthetic hand X-ray data set in the exact competition layout.

The real data is private, so the demo runs on this. Each person gets a
right and a left hand (mirror images with small differences); each hand is a
skeleton of the 29 bones built from anatomical proportions, posed (finger
spread, whole-hand rotation, wrist bending, size), drawn as polygons in the
competition's JSON format and rendered into an X-ray-like picture: soft
tissue, a bright cortex around darker marrow, brighter where bones overlap,
a smooth background gradient, noise and varying contrast.

Optional artifacts (ring, nail polish, metal pin) are drawn into images, and
optional annotation faults (ring annotated as bone, swapped labels, a grossly
wrong polygon) are written into the training labels. Every injected artifact
and fault is listed in ``ground_truth/manifest.csv``, outside the training
data, together with the correct labels of the test images.

Coordinates of the skeleton are in units of hand length (wrist to the tip of
the middle finger is about 1), origin at the wrist, x to the little-finger
side of a right hand, y pointing down as in images.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import config
from .atomic import atomic_path
from .classes import CLASSES
from .errors import ConfigError

# Per ray: metacarpal base (x, y), metacarpal direction in degrees from
# "straight up" (positive towards the little finger), extra fan-out angle
# per unit of finger spread, and bone lengths from metacarpal to distal.
RAYS = {
    "thumb": dict(base=(-0.115, -0.150), angle=-38.0, fan=-14.0, lengths=(0.24, 0.17, 0.12)),
    "index": dict(base=(-0.055, -0.168), angle=-7.0, fan=-6.0, lengths=(0.36, 0.21, 0.13, 0.09)),
    "middle": dict(base=(0.000, -0.172), angle=0.0, fan=0.0, lengths=(0.34, 0.235, 0.15, 0.10)),
    "ring": dict(base=(0.048, -0.166), angle=7.0, fan=5.0, lengths=(0.31, 0.22, 0.14, 0.095)),
    "little": dict(base=(0.090, -0.152), angle=15.0, fan=11.0, lengths=(0.28, 0.17, 0.10, 0.085)),
}
# Class names of each ray's bones from metacarpal to distal phalanx.
RAY_CLASSES = {
    "thumb": ("finger-3", "finger-2", "finger-1"),
    "index": ("finger-7", "finger-6", "finger-5", "finger-4"),
    "middle": ("finger-11", "finger-10", "finger-9", "finger-8"),
    "ring": ("finger-15", "finger-14", "finger-13", "finger-12"),
    "little": ("finger-19", "finger-18", "finger-17", "finger-16"),
}
# Widths (base, shaft, head) per kind of finger bone.
BONE_WIDTHS = {
    "metacarpal": (0.076, 0.050, 0.082),
    "proximal": (0.074, 0.046, 0.064),
    "middle": (0.062, 0.041, 0.054),
    "distal": (0.054, 0.031, 0.040),
}
# Carpals: centre (x, y), semi-axes (a, b), angle in degrees. The pisiform
# sits on the triquetrum and the trapezoid overlaps the trapezium, as the
# annotations of the real data do.
CARPALS = {
    "Scaphoid": ((-0.082, -0.048), (0.060, 0.036), -55.0),
    "Lunate": ((-0.012, -0.040), (0.042, 0.038), 10.0),
    "Triquetrum": ((0.056, -0.060), (0.040, 0.033), 30.0),
    "Pisiform": ((0.072, -0.047), (0.029, 0.027), 0.0),
    "Trapezium": ((-0.108, -0.120), (0.042, 0.033), 35.0),
    "Trapezoid": ((-0.066, -0.130), (0.032, 0.030), 0.0),
    "Capitate": ((-0.006, -0.112), (0.034, 0.056), 5.0),
    "Hamate": ((0.054, -0.118), (0.036, 0.048), -10.0),
}
# Forearm: distal end centre, widths (distal end, shaft), length downwards.
FOREARM = {
    "Radius": ((-0.045, 0.020), (0.130, 0.070), 0.7),
    "Ulna": ((0.075, 0.038), (0.064, 0.048), 0.7),
}
JOINT_GAP = 0.008
ARTIFACTS = ("ring", "nail_polish", "pin")
FAULTS = ("ring_annotated", "swapped_labels", "wrong_polygon")
SWAP_PAIRS = (("Radius", "Ulna"), ("Trapezium", "Hamate"), ("finger-8", "finger-12"), ("finger-7", "finger-11"))


_DEFAULTS = config.default("synthetic")


@dataclass
class SyntheticConfig:
    """Options of the generator: the ``synthetic`` section of config.yaml,
    which holds their defaults."""

    train_people: int = _DEFAULTS["train_people"]
    test_people: int = _DEFAULTS["test_people"]
    image_size: int = _DEFAULTS["image_size"]
    seed: int = _DEFAULTS["seed"]
    artifact_rate: float = _DEFAULTS["artifact_rate"]
    fault_rate: float = _DEFAULTS["fault_rate"]
    bent_wrist_rate_train: float = _DEFAULTS["bent_wrist_rate_train"]
    bent_wrist_rate_test: float = _DEFAULTS["bent_wrist_rate_test"]


@dataclass
class Bone:
    label: str
    points: np.ndarray  # (N, 2) in skeleton units
    is_hand: bool = True  # bones that move with the wrist (all but the forearm)


@dataclass
class Hand:
    bones: list[Bone]
    tissue: list[np.ndarray] = field(default_factory=list)  # soft-tissue polygons
    rays: dict = field(default_factory=dict)  # ray name -> list of (start, end) per bone


def _rotation(degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def _direction(degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    return np.array([math.sin(angle), -math.cos(angle)])


def long_bone(start, end, widths, points_per_side: int = 14) -> np.ndarray:
    """Outline of a long bone from ``start`` to ``end``: wider ends, a narrower
    shaft and rounded caps."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    length = float(np.linalg.norm(axis))
    along = axis / length
    normal = np.array([-along[1], along[0]])
    base, shaft, head = widths
    t = np.linspace(0.0, 1.0, points_per_side)
    width = (
        shaft + (base - shaft) * np.clip(1 - t / 0.3, 0, 1) ** 2 + (head - shaft) * np.clip((t - 0.7) / 0.3, 0, 1) ** 2
    )
    centre = start + t[:, None] * axis
    left = centre + normal * (width[:, None] / 2)
    right = centre - normal * (width[:, None] / 2)
    arc = np.linspace(0, math.pi, 7)[1:-1]

    def cap(point, half_width, outward):
        depth = 0.45 * half_width
        return np.array([point + normal * half_width * math.cos(a) + outward * depth * math.sin(a) for a in arc])

    head_cap = cap(end, head / 2, along)
    base_cap = cap(start, base / 2, -along)[::-1]
    return np.concatenate([left, head_cap, right[::-1], base_cap])


def carpal_bone(centre, axes, degrees, rng, points: int = 28) -> np.ndarray:
    """An irregular, roundish outline: an ellipse with a little wobble."""
    theta = np.linspace(0, 2 * math.pi, points, endpoint=False)
    wobble = 1 + rng.uniform(0.02, 0.07) * np.cos(2 * theta + rng.uniform(0, 6.3))
    wobble += rng.uniform(0.01, 0.05) * np.cos(3 * theta + rng.uniform(0, 6.3))
    local = np.stack([axes[0] * np.cos(theta), axes[1] * np.sin(theta)], axis=1) * wobble[:, None]
    return np.asarray(centre) + local @ _rotation(degrees).T


@dataclass
class Person:
    """What both hands of one person share."""

    proportions: dict  # ray -> length multipliers
    width_scale: float
    spread: float
    size: float
    carpal_jitter: dict


def make_person(rng: np.random.Generator) -> Person:
    return Person(
        proportions={ray: rng.normal(1.0, 0.04, size=len(spec["lengths"])) for ray, spec in RAYS.items()},
        width_scale=rng.uniform(0.9, 1.12),
        spread=rng.uniform(0.2, 1.3),
        size=rng.uniform(0.88, 1.04),
        carpal_jitter={name: rng.normal(0, 0.005, size=2) for name in CARPALS},
    )


def build_hand(person: Person, rng: np.random.Generator, wrist_bend: float) -> Hand:
    """The 29 bones of a right hand in skeleton units, the wrist bent by
    ``wrist_bend`` degrees (positive towards the little finger)."""
    bones: list[Bone] = []
    rays: dict = {}
    spread = float(np.clip(person.spread + rng.normal(0, 0.1), 0, 1.6))
    for ray, spec in RAYS.items():
        direction_degrees = spec["angle"] + rng.normal(0, 1.0)
        start = np.asarray(spec["base"]) + rng.normal(0, 0.003, size=2)
        kinds = (
            ("metacarpal", "proximal", "distal") if ray == "thumb" else ("metacarpal", "proximal", "middle", "distal")
        )
        segments = []
        for number, (label, kind, length) in enumerate(zip(RAY_CLASSES[ray], kinds, spec["lengths"])):
            if number == 1:
                # Fingers fan out from the metacarpophalangeal joints.
                direction_degrees += spec["fan"] * spread
            elif number > 1:
                direction_degrees += rng.normal(0, 1.5)
            length = length * person.proportions[ray][number] * (1.08 if ray == "thumb" and kind != "metacarpal" else 1)
            end = start + _direction(direction_degrees) * length
            widths = np.asarray(BONE_WIDTHS[kind]) * person.width_scale * (1.15 if ray == "thumb" else 1)
            bones.append(Bone(label, long_bone(start, end, widths)))
            segments.append((start, end, widths))
            start = end + _direction(direction_degrees) * JOINT_GAP
        rays[ray] = segments
    for name, (centre, axes, degrees) in CARPALS.items():
        centre = np.asarray(centre) + person.carpal_jitter[name]
        axes = np.asarray(axes) * person.width_scale
        bones.append(Bone(name, carpal_bone(centre, axes, degrees + rng.normal(0, 4), rng)))
    # Bending the wrist turns the hand about the radiocarpal joint.
    bend = _rotation(wrist_bend)
    for bone in bones:
        bone.points = bone.points @ bend.T
    for ray, segments in rays.items():
        rays[ray] = [(s @ bend.T, e @ bend.T, w) for s, e, w in segments]
    for name, (end, (distal_width, shaft_width), length) in FOREARM.items():
        end = np.asarray(end)
        start = end + np.array([rng.normal(0, 0.01), length])
        widths = np.array([shaft_width, shaft_width, distal_width]) * person.width_scale
        bones.append(Bone(name, long_bone(start, end, widths, points_per_side=18), is_hand=False))
    bones.sort(key=lambda bone: CLASSES.index(bone.label))
    tissue = _soft_tissue(rays, person.width_scale)
    return Hand(bones=bones, tissue=tissue, rays=rays)


def _soft_tissue(rays: dict, width_scale: float) -> list[np.ndarray]:
    polygons = []
    for ray, segments in rays.items():
        start, end = segments[0][0], segments[-1][1]
        along = (end - start) / np.linalg.norm(end - start)
        tip = end + along * 0.025
        width = (0.115 if ray == "thumb" else 0.095) * width_scale
        polygons.append(long_bone(start, tip, (width * 1.1, width, width * 0.9)))
    knuckles = np.array([segments[0][1] for segments in rays.values()])
    bases = np.array([segments[0][0] for segments in rays.values()])
    palm = np.concatenate([knuckles, bases, [[-0.14, 0.0], [0.13, 0.0], [-0.15, 0.05], [0.14, 0.05]]])
    polygons.append(cv2.convexHull(palm.astype(np.float32)).reshape(-1, 2).astype(float))
    polygons.append(np.array([[-0.16, 0.0], [0.15, 0.0], [0.17, 0.9], [-0.18, 0.9]]))
    return polygons


@dataclass
class Pose:
    rotation: float
    scale: float
    centre: np.ndarray
    mirror: bool

    def apply(self, points: np.ndarray) -> np.ndarray:
        points = points * np.array([-1.0, 1.0]) if self.mirror else points
        return self.centre + (points @ _rotation(self.rotation).T) * self.scale


def _fit_pose(hand: Hand, size: int, rng, mirror: bool, person_size: float) -> Pose:
    """Place the hand in the image: the wrist low in the frame, the forearm
    leaving through the bottom edge, every hand bone inside the image."""
    rotation = rng.normal(0, 6)
    if rng.random() < 0.08:
        rotation += rng.choice([-1, 1]) * rng.uniform(12, 25)
    scale = size * 0.64 * person_size
    centre = np.array([size * (0.5 + rng.normal(0, 0.02)), size * (0.74 + rng.normal(0, 0.015))])
    margin = size * 0.02
    for _ in range(40):
        pose = Pose(rotation, scale, centre, mirror)
        hand_points = np.concatenate([pose.apply(b.points) for b in hand.bones if b.is_hand])
        low, high = hand_points.min(axis=0), hand_points.max(axis=0)
        if (low >= margin).all() and (high <= size - 1 - margin).all():
            return pose
        # Shift towards the middle, then shrink, until everything fits.
        centre = centre + np.clip(size / 2 - (low + high) / 2, -size * 0.05, size * 0.05) * np.array([1.0, 0.3])
        scale *= 0.96
    return pose


def _to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    return np.clip(np.round(points), 0, size - 1).astype(np.int32)


def _annotation(number: int, label: str, points: np.ndarray) -> dict:
    return {
        "id": f"{number:08x}-0000-4000-8000-{number:012x}",
        "type": "poly_seg",
        "attributes": {},
        "points": points.tolist(),
        "label": label,
    }


def render(
    size: int,
    bone_polygons: list[tuple[str, np.ndarray]],
    tissue_polygons: list[np.ndarray],
    metal_polygons: list[np.ndarray],
    polish_polygons: list[np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """An X-ray-like 8-bit image of the given pixel polygons."""
    unit = size / 256.0
    tissue = np.zeros((size, size), np.float32)
    for polygon in tissue_polygons:
        cv2.fillPoly(tissue, [polygon.reshape(-1, 1, 2)], 1.0)
    tissue = cv2.GaussianBlur(tissue, (0, 0), sigmaX=2.5 * unit)

    bone = np.zeros((size, size), np.float32)
    cortex_width = rng.uniform(1.0, 1.6) * unit
    marrow_level = rng.uniform(0.45, 0.6)
    for _, polygon in bone_polygons:
        x0, y0 = polygon.min(axis=0)
        x1, y1 = polygon.max(axis=0) + 1
        local = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
        cv2.fillPoly(local, [(polygon - [x0 - 1, y0 - 1]).reshape(-1, 1, 2)], 1)
        distance = cv2.distanceTransform(local, cv2.DIST_L2, 3)
        density = (marrow_level + (1 - marrow_level) * np.exp(-distance / cortex_width)) * (local > 0)
        height, width = local.shape
        top, left = y0 - 1, x0 - 1
        crop = bone[max(top, 0) : top + height, max(left, 0) : left + width]
        crop += density[max(-top, 0) : max(-top, 0) + crop.shape[0], max(-left, 0) : max(-left, 0) + crop.shape[1]]
    # Trabecular texture: band-limited noise over bone only.
    texture = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.2 * unit)
    bone *= 1 + 0.6 * texture / (texture.std() + 1e-6) * 0.15

    metal = np.zeros((size, size), np.float32)
    for polygon in metal_polygons:
        cv2.fillPoly(metal, [polygon.reshape(-1, 1, 2)], 3.0)
    for polygon in polish_polygons:
        cv2.fillPoly(metal, [polygon.reshape(-1, 1, 2)], 1.2)

    attenuation = 0.55 * tissue + 1.0 * bone + metal
    gain = rng.uniform(0.75, 1.25)
    signal = 1 - np.exp(-1.1 * gain * attenuation)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    gradient = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)
    background = rng.uniform(15, 40) + rng.uniform(10, 30) * gradient
    image = background + rng.uniform(170, 215) * signal
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.5 * unit)
    image += rng.normal(0, rng.uniform(2, 5), size=image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _ring_band(hand: Hand, pose: Pose, rng) -> tuple[str, np.ndarray]:
    """A ring around the proximal phalanx of the ring (or middle) finger."""
    ray = "ring" if rng.random() < 0.7 else "middle"
    start, end, _ = hand.rays[ray][1]
    along = (end - start) / np.linalg.norm(end - start)
    normal = np.array([-along[1], along[0]])
    centre = start + (end - start) * rng.uniform(0.3, 0.5)
    half_length, half_width = 0.055, 0.012
    corners = np.array(
        [
            centre + normal * half_length + along * half_width,
            centre - normal * half_length + along * half_width,
            centre - normal * half_length - along * half_width,
            centre + normal * half_length - along * half_width,
        ]
    )
    return RAY_CLASSES[ray][1], pose.apply(corners)


def _nail_polish(hand: Hand, pose: Pose, rng) -> np.ndarray:
    ray = rng.choice([r for r in RAYS if r != "thumb"])
    start, end, _ = hand.rays[ray][-1]
    along = (end - start) / np.linalg.norm(end - start)
    centre = end + along * 0.008
    outline = carpal_bone(centre, (0.022, 0.014), math.degrees(math.atan2(along[1], along[0])), rng, points=20)
    return pose.apply(outline)


def _pin(hand: Hand, pose: Pose, rng) -> np.ndarray:
    ray = rng.choice(list(RAYS))
    start, end, _ = hand.rays[ray][0]
    along = (end - start) / np.linalg.norm(end - start)
    angle = math.radians(rng.uniform(-25, 25))
    along = _rotation(math.degrees(angle)) @ along
    normal = np.array([-along[1], along[0]])
    middle = (start + end) / 2
    a, b = middle - along * 0.12, middle + along * 0.12
    return pose.apply(np.array([a + normal * 0.004, b + normal * 0.004, b - normal * 0.004, a - normal * 0.004]))


def generate_image(
    person: Person, rng, size: int, mirror: bool, bent_wrist_rate: float, artifact_rate: float, fault_rate: float
):
    """One hand: the image, the correct annotations, the annotations as they
    are written into the training labels (with faults) and the manifest rows."""
    bend = rng.normal(0, 4)
    if rng.random() < bent_wrist_rate:
        bend += rng.choice([-1, 1]) * rng.uniform(15, 30)
    hand = build_hand(person, rng, bend)
    pose = _fit_pose(hand, size, rng, mirror, person.size)
    polygons = [(bone.label, _to_pixels(pose.apply(bone.points), size)) for bone in hand.bones]
    tissue = [_to_pixels(pose.apply(p), size) for p in hand.tissue]
    metal, polish, events = [], [], []
    ring = None
    if rng.random() < artifact_rate:
        kind = ARTIFACTS[rng.integers(len(ARTIFACTS))]
        if kind == "ring":
            ring = _ring_band(hand, pose, rng)
            metal.append(_to_pixels(ring[1], size))
        elif kind == "nail_polish":
            polish.append(_to_pixels(_nail_polish(hand, pose, rng), size))
        else:
            metal.append(_to_pixels(_pin(hand, pose, rng), size))
        events.append(("artifact", kind, ""))
    image = render(size, polygons, tissue, metal, polish, rng)

    truth = [_annotation(number, label, points) for number, (label, points) in enumerate(polygons)]
    labelled = [dict(a) for a in truth]
    if rng.random() < fault_rate:
        fault = FAULTS[rng.integers(len(FAULTS))]
        if fault == "ring_annotated" and ring is None:
            # A ring must be in the picture to be annotated as bone.
            ring = _ring_band(hand, pose, rng)
            metal.append(_to_pixels(ring[1], size))
            image = render(size, polygons, tissue, metal, polish, rng)
            events.append(("artifact", "ring", ""))
        if fault == "ring_annotated":
            labelled.append(_annotation(len(labelled), ring[0], _to_pixels(ring[1], size)))
            detail = f"ring annotated as {ring[0]}"
        elif fault == "swapped_labels":
            first, second = SWAP_PAIRS[rng.integers(len(SWAP_PAIRS))]
            for annotation in labelled:
                if annotation["label"] in (first, second):
                    annotation["label"] = second if annotation["label"] == first else first
            detail = f"{first}<->{second}"
        else:
            number = int(rng.integers(len(labelled)))
            points = np.asarray(labelled[number]["points"], float)
            centre = points.mean(axis=0)
            moved = (points - centre) * rng.uniform(1.6, 2.4) + centre + rng.uniform(-0.15, 0.15, 2) * size
            labelled[number]["points"] = _to_pixels(moved, size).tolist()
            detail = f"{labelled[number]['label']} polygon displaced and enlarged"
        events.append(("fault", fault, detail))
    return image, truth, labelled, events


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    path.write_bytes(encoded.tobytes())


def _write_json(path: Path, annotations: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"annotations": annotations}))


def generate(out: str | Path, config: SyntheticConfig, progress: bool = True) -> Path:
    """Write the data set to ``out``: ``data/`` (the competition layout) and
    ``ground_truth/`` (test labels and the manifest of injected faults).

    The same seed gives the same bytes; each person's images depend only on
    the seed and the person's number, not on how many people are generated.
    """
    if config.image_size < 64:
        raise ConfigError(f"synthetic image_size must be at least 64, got {config.image_size}")
    if config.train_people < 1 or config.test_people < 1:
        raise ConfigError("synthetic train_people and test_people must be at least 1")
    out = Path(out)
    with atomic_path(out) as staging:
        manifest = []
        total = config.train_people + config.test_people
        for number in tqdm(range(total), desc="synthetic people", disable=not progress):
            split = "train" if number < config.train_people else "test"
            person_id = f"ID{number + 1:03d}"
            rng = np.random.default_rng([config.seed, number])
            person = make_person(rng)
            stamp = 1661000000000 + number * 100000 + int(rng.integers(0, 40000))
            for hand_number, mirror in enumerate((False, True)):
                name = f"image{stamp + hand_number * 50000 + int(rng.integers(0, 40000))}"
                image, truth, labelled, events = generate_image(
                    person,
                    rng,
                    config.image_size,
                    mirror,
                    config.bent_wrist_rate_train if split == "train" else config.bent_wrist_rate_test,
                    config.artifact_rate,
                    config.fault_rate if split == "train" else 0.0,
                )
                _write_png(staging / "data" / split / "DCM" / person_id / f"{name}.png", image)
                if split == "train":
                    _write_json(staging / "data" / "train" / "outputs_json" / person_id / f"{name}.json", labelled)
                else:
                    _write_json(staging / "ground_truth" / "test" / "outputs_json" / person_id / f"{name}.json", truth)
                hand = "left" if mirror else "right"
                for kind, code, detail in events:
                    manifest.append([f"{name}.png", split, person_id, hand, kind, code, detail])
        (staging / "ground_truth").mkdir(parents=True, exist_ok=True)
        with open(staging / "ground_truth" / "manifest.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["image_name", "split", "person_id", "hand", "kind", "code", "detail"])
            writer.writerows(manifest)
    return out
