"""A synthetic hand X-ray data set in the exact competition layout.

The real data is private, so the demo runs on this. Each person gets a
right and a left hand (mirror images with small differences); each hand is a
skeleton of the 29 bones built from anatomical proportions (each phalanx and
metacarpal with its own length spread), posed (finger spread, whole-hand
rotation, wrist bending), drawn as polygons in the competition's JSON format
and rendered into an X-ray-like picture: soft tissue, a bright cortex around
darker marrow, brighter where bones overlap, a smooth background gradient,
noise and varying contrast.

The images vary as real radiographs do (see the real examples in
../shared/data/real_radiographs/):
- scale: the hand (its bones' bounding box, forearm left out) fills
  ``min_fill`` to ``max_fill`` of the image side;
- placement: off-centre hands, and hands partly out of the field, with
  fingertips, the thumb or little finger, or the forearm just below the
  wrist cut by the border. A cut bone's annotation is its polygon clipped to
  the exposed field, as an annotator would draw it; a bone entirely outside
  gets no annotation (the competition format has no "absent" marker: the
  class is simply not in the JSON, and its mask is empty);
- children: open growth plates (the epiphyses of the phalanges,
  metacarpals, radius and ulna rendered as separate bright pieces beyond a
  dark cartilage gap; the annotation still covers the whole bone, as in the
  competition), small round carpals, and the carpals that ossify later than
  the child's age missing from the picture and from the labels;
- black borders (digital padding) and collimation (a bright, unexposed area
  beyond straight, slightly tilted edges); nothing is annotated there.

Optional artifacts (ring, nail polish, metal pin) are drawn into images, and
optional annotation faults (ring annotated as bone, swapped labels, a grossly
wrong polygon) are written into the training labels. Every injected artifact
and fault, and every unusual but correctly labelled case, is listed in
``ground_truth/manifest.csv``, outside the training data, together with the
correct labels of the test images. Its columns: image_name, split,
person_id, hand, kind (artifact, fault or case), code and detail. The cases
(kind ``case``), with ``detail`` as ``key=value`` pairs separated by ``; ``
(``detail_fields`` reads them; bone lists are space-separated):
- ``scale`` (every image): ``fill``, the share of the side the hand fills;
- ``off_centre``: ``dx``, the hand's offset from the image centre in image
  sides, when at least OFF_CENTRE;
- ``cut_border``: ``side`` (top, left, right or bottom, where the hand was
  pushed out; ``none`` when cut without that), ``clipped`` (bones whose
  annotation is clipped; Radius and Ulna, which leave every image, are named
  only in these rows) and ``absent`` (bones entirely outside: no annotation);
- ``too_small``: ``absent``, bones in the field but too small to draw at
  this image size (a child's just-ossified carpal in a small image);
- ``child``: ``age`` in years and ``absent`` (carpals not yet ossified: no
  annotation);
- ``collimation``: ``sides`` with a collimator edge;
- ``black_border``: ``sides`` and their ``widths`` in pixels.

Coordinates of the skeleton are in units of hand length (wrist to the tip of
the middle finger is about 1), origin at the wrist, x to the little-finger
side of a right hand, y pointing down as in images.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import config
from .arguments import progress
from .atomic import atomic_path
from .classes import CLASSES, OSSIFICATION_AGE
from .data import polygon_area
from .errors import ConfigError

log = logging.getLogger("handbone")

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
CASES = ("scale", "off_centre", "cut_border", "too_small", "child", "collimation", "black_border")
# Where a cut hand leaves the field, and how often.
CUT_SIDES = ("top", "left", "right", "bottom")
CUT_SIDE_SHARES = (0.35, 0.2, 0.2, 0.25)
SIDES = ("left", "top", "right", "bottom")
# A hand whose centre is this share of the side away from the image centre
# is listed as off-centre.
OFF_CENTRE = 0.1
# Placement, in image sides: the least space around the hand's bones inside
# the field, and the least forearm shown beyond its distal ends.
MARGIN = 0.02
FOREARM_SHOWN = 0.02
# The distal ends of the radius and ulna (their points with a skeleton y
# less than this, about 0.08 of hand length) stay in the field unless the
# forearm is cut.
WRIST_SHOWN = 0.1


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
    length_spread: float = _DEFAULTS["length_spread"]
    min_fill: float = _DEFAULTS["min_fill"]
    max_fill: float = _DEFAULTS["max_fill"]
    off_centre_rate: float = _DEFAULTS["off_centre_rate"]
    cut_rate: float = _DEFAULTS["cut_rate"]
    collimation_rate: float = _DEFAULTS["collimation_rate"]
    black_border_rate: float = _DEFAULTS["black_border_rate"]
    child_rate: float = _DEFAULTS["child_rate"]
    child_age_min: float = _DEFAULTS["child_age_min"]
    child_age_max: float = _DEFAULTS["child_age_max"]

    def variety(self) -> Variety:
        return Variety(
            min_fill=self.min_fill,
            max_fill=self.max_fill,
            off_centre_rate=self.off_centre_rate,
            cut_rate=self.cut_rate,
            collimation_rate=self.collimation_rate,
            black_border_rate=self.black_border_rate,
        )


@dataclass
class Variety:
    """How one image is framed. The defaults give a plain image: a centred
    hand of about the same size every time, nothing cut, no borders."""

    min_fill: float = 0.55
    max_fill: float = 0.65
    off_centre_rate: float = 0.0
    cut_rate: float = 0.0
    collimation_rate: float = 0.0
    black_border_rate: float = 0.0


@dataclass
class Bone:
    label: str
    points: np.ndarray  # (N, 2) in skeleton units: the annotated outline
    is_hand: bool = True  # bones that move with the wrist (all but the forearm)
    pieces: list[np.ndarray] = field(default_factory=list)  # what is rendered: the outline, or shaft and epiphysis


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


def clip_polygon(points: np.ndarray, planes) -> np.ndarray:
    """The part of a polygon on the inner side of every half-plane
    ``(origin, normal)`` (where ``(p - origin) . normal >= 0``), by
    Sutherland and Hodgman's method; shape (0, 2) when nothing is left."""
    polygon = np.asarray(points, float).reshape(-1, 2)
    for origin, normal in planes:
        side = (polygon - origin) @ normal
        inside = side >= 0
        if inside.all():
            continue
        following, following_side = np.roll(polygon, -1, axis=0), np.roll(side, -1)
        kept = []
        for point, after, here, there in zip(polygon, following, side, following_side):
            if here >= 0:
                kept.append(point)
            if (here >= 0) != (there >= 0):
                kept.append(point + (after - point) * (here / (here - there)))
        polygon = np.array(kept, float).reshape(-1, 2)
        if len(polygon) == 0:
            break
    return polygon


def _box_planes(x0: float, y0: float, x1: float, y1: float) -> list:
    return [
        (np.array([x0, 0.0]), np.array([1.0, 0.0])),
        (np.array([0.0, y0]), np.array([0.0, 1.0])),
        (np.array([x1, 0.0]), np.array([-1.0, 0.0])),
        (np.array([0.0, y1]), np.array([0.0, -1.0])),
    ]


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


def growth_plate(outline: np.ndarray, start, end, at_start: bool, maturity: float) -> list[np.ndarray]:
    """A child's long bone as two pieces, shaft and epiphysis, with a gap of
    cartilage (soft-tissue density) between them; the younger the child
    (``maturity`` 0 to 1), the wider the gap and the smaller the epiphysis."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    length = float(np.linalg.norm(end - start))
    along = (end - start) / length
    tip, inward = (start, along) if at_start else (end, -along)
    plate = tip + inward * float(np.clip(0.17 * length, 0.015, 0.045))
    gap = 0.009 + 0.006 * (1 - maturity)
    epiphysis = clip_polygon(outline, [(plate - inward * gap / 2, -inward)])
    shaft = clip_polygon(outline, [(plate + inward * gap / 2, inward)])
    centre = epiphysis.mean(axis=0)
    return [shaft, centre + (epiphysis - centre) * (0.78 + 0.17 * maturity)]


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
    carpal_jitter: dict
    age: float | None = None  # years, for a child; None: an adult, growth plates closed
    ossification_delay: float = 0.0  # years this child's carpals appear later than typical

    @property
    def maturity(self) -> float:
        """0 for a toddler, 1 for a skeletally mature hand."""
        return 1.0 if self.age is None else float(np.clip((self.age - 2.0) / 12.0, 0.0, 1.0))

    def ossified(self, carpal: str) -> bool:
        return self.age is None or self.age >= OSSIFICATION_AGE[carpal] + self.ossification_delay


def make_person(
    rng: np.random.Generator,
    child_rate: float = 0.0,
    child_ages: tuple[float, float] = (_DEFAULTS["child_age_min"], _DEFAULTS["child_age_max"]),
    length_spread: float = _DEFAULTS["length_spread"],
) -> Person:
    """A person: an adult, or with ``child_rate`` a child of an age drawn
    from ``child_ages``. Bone lengths vary by ``length_spread`` (relative
    standard deviation), half of it shared along a ray, as finger length
    ratios differ between people."""
    ray_factors = {ray: rng.normal(1.0, length_spread / 2) for ray in RAYS}
    person = Person(
        proportions={
            ray: ray_factors[ray] * rng.normal(1.0, length_spread, size=len(spec["lengths"]))
            for ray, spec in RAYS.items()
        },
        width_scale=rng.uniform(0.9, 1.12),
        spread=rng.uniform(0.2, 1.3),
        carpal_jitter={name: rng.normal(0, 0.005, size=2) for name in CARPALS},
    )
    if child_rate > 0 and rng.random() < child_rate:
        person.age = float(rng.uniform(*child_ages))
        person.ossification_delay = float(rng.normal(0, 0.7))
    return person


def _rays(person: Person, rng, spread: float) -> tuple[list[Bone], dict]:
    """The metacarpals and phalanges, and each ray's (start, end, widths) per
    bone."""
    bones, rays = [], {}
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
            outline = long_bone(start, end, widths)
            pieces = [outline]
            if person.age is not None:
                # Epiphyses: at the base of every phalanx and of the thumb's
                # metacarpal, at the head of the other metacarpals.
                at_start = kind != "metacarpal" or ray == "thumb"
                pieces = growth_plate(outline, start, end, at_start, person.maturity)
            bones.append(Bone(label, outline, pieces=pieces))
            segments.append((start, end, widths))
            start = end + _direction(direction_degrees) * JOINT_GAP
        rays[ray] = segments
    return bones, rays


def _carpals(person: Person, rng) -> list[Bone]:
    """The ossified carpals; a child's are small and round where they have
    only lately appeared."""
    bones = []
    for name, (centre, axes, degrees) in CARPALS.items():
        centre = np.asarray(centre) + person.carpal_jitter[name]
        axes = np.asarray(axes) * person.width_scale
        if person.age is not None:
            grown = float(np.clip((person.age - OSSIFICATION_AGE[name] - person.ossification_delay) / 6.0, 0.0, 1.0))
            axes = (axes.mean() * (1 - grown) + axes * grown) * (0.45 + 0.55 * grown)
        outline = carpal_bone(centre, axes, degrees + rng.normal(0, 4), rng)
        if person.ossified(name):
            bones.append(Bone(name, outline, pieces=[outline]))
    return bones


def build_hand(person: Person, rng: np.random.Generator, wrist_bend: float) -> Hand:
    """The bones of a right hand in skeleton units (all 29, less a young
    child's unossified carpals), the wrist bent by ``wrist_bend`` degrees
    (positive towards the little finger)."""
    spread = float(np.clip(person.spread + rng.normal(0, 0.1), 0, 1.6))
    bones, rays = _rays(person, rng, spread)
    bones += _carpals(person, rng)
    # Bending the wrist turns the hand about the radiocarpal joint.
    bend = _rotation(wrist_bend)
    for bone in bones:
        bone.points = bone.points @ bend.T
        bone.pieces = [piece @ bend.T for piece in bone.pieces]
    for ray, segments in rays.items():
        rays[ray] = [(s @ bend.T, e @ bend.T, w) for s, e, w in segments]
    for name, (end, (distal_width, shaft_width), length) in FOREARM.items():
        end = np.asarray(end)
        start = end + np.array([rng.normal(0, 0.01), length])
        widths = np.array([shaft_width, shaft_width, distal_width]) * person.width_scale
        outline = long_bone(start, end, widths, points_per_side=18)
        pieces = [outline] if person.age is None else growth_plate(outline, start, end, False, person.maturity)
        bones.append(Bone(name, outline, is_hand=False, pieces=pieces))
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


@dataclass
class Field:
    """The exposed part of an image: inside the black bands (digital
    padding) and the collimator's edges, where the hand can be seen."""

    size: int
    bands: tuple = (0, 0, 0, 0)  # black band widths in pixels, per SIDES
    edges: list = field(default_factory=list)  # collimator edges: (side, inset at one end, at the other), pixels

    def content(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the image inside the black bands."""
        left, top, right, bottom = self.bands
        return left, top, self.size - 1 - right, self.size - 1 - bottom

    def edge_lines(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each collimator edge as a half-plane (origin, inward normal)."""
        x0, y0, x1, y1 = self.content()
        last = self.size - 1
        planes = []
        for side, first, second in self.edges:
            a, b = {
                "left": ((x0 + first, 0), (x0 + second, last)),
                "top": ((0, y0 + first), (last, y0 + second)),
                "right": ((x1 - first, 0), (x1 - second, last)),
                "bottom": ((0, y1 - first), (last, y1 - second)),
            }[side]
            a, b = np.asarray(a, float), np.asarray(b, float)
            normal = np.array([-(b - a)[1], (b - a)[0]])
            if (np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - a) @ normal < 0:
                normal = -normal
            planes.append((a, normal / np.linalg.norm(normal)))
        return planes

    def planes(self) -> list:
        """Half-planes whose intersection is the exposed field."""
        return _box_planes(*self.content()) + self.edge_lines()

    def inner(self) -> np.ndarray:
        """(x0, y0, x1, y1) of the largest upright box inside the field."""
        box = np.array(self.content(), float)
        for side, first, second in self.edges:
            number = SIDES.index(side)
            box[number] += max(first, second) * (1 if number < 2 else -1)
        return box

    def expose(self, image: np.ndarray, rng) -> np.ndarray:
        """The image with the collimated area bright (unexposed) and the
        bands black; the collimator's edge slightly blurred."""
        if self.edges:
            unit = self.size / 256.0
            square = np.array([[0, 0], [self.size - 1, 0], [self.size - 1, self.size - 1], [0, self.size - 1]], float)
            exposed = np.zeros(image.shape, np.float32)
            polygon = np.round(clip_polygon(square, self.edge_lines()) * 16).astype(np.int32)
            cv2.fillPoly(exposed, [polygon.reshape(-1, 1, 2)], 1.0, lineType=cv2.LINE_AA, shift=4)
            exposed = cv2.GaussianBlur(exposed, (0, 0), 0.6 * unit)
            yy = np.arange(self.size, dtype=np.float32)[:, None] / self.size
            shutter = rng.uniform(175, 235) + rng.uniform(-15, 15) * yy
            shutter = shutter + rng.normal(0, rng.uniform(1.5, 4), size=image.shape).astype(np.float32)
            image = np.clip(np.round(exposed * image + (1 - exposed) * shutter), 0, 255).astype(np.uint8)
        left, top, right, bottom = self.bands
        image = image.copy()
        image[:, :left] = 0
        image[:top, :] = 0
        image[:, self.size - right :] = 0
        image[self.size - bottom :, :] = 0
        return image


def _make_field(size: int, rng, variety: Variety, width: float, height: float) -> Field:
    """Black bands and collimator edges that leave room for a hand of
    ``width`` x ``height`` pixels (and some forearm below it)."""
    horizontal, vertical = size * (1 - 2 * MARGIN) - width, size * (1 - MARGIN - FOREARM_SHOWN) - height
    slack = np.array([horizontal, vertical]).clip(0)
    bands = [0, 0, 0, 0]
    if rng.random() < variety.black_border_rate:
        # Mostly left and right, as a portrait radiograph padded to a square.
        pattern = rng.choice(3, p=[0.6, 0.2, 0.2])
        chosen = (0, 2) if pattern == 0 else (1, 3) if pattern == 1 else (int(rng.integers(4)),)
        for number in chosen:
            width_px = int(min(rng.uniform(0.03, 0.12) * size, 0.5 * slack[number % 2] / len(chosen)))
            bands[number] = width_px if width_px >= 2 else 0
        slack -= [bands[0] + bands[2], bands[1] + bands[3]]
    edges = []
    if rng.random() < variety.collimation_rate:
        chosen = [number for number in range(4) if rng.random() < 0.5] or [int(rng.integers(4))]
        for number in chosen:
            inset = min(rng.uniform(0.02, 0.12) * size, 0.25 * slack[number % 2])
            other = inset - rng.uniform(0, min(inset, 0.08 * size))  # tilted up to about 5 degrees
            if inset >= 0.02 * size:  # less would be a sliver, not a visible edge
                edges.append((SIDES[number], *((inset, other) if rng.random() < 0.5 else (other, inset))))
    return Field(size, tuple(bands), edges)


def _fit_pose(hand: Hand, size: int, rng, mirror: bool, fill: float, variety: Variety, off_centre: bool, cut):
    """Place the hand in the image: its bones' bounding box ``fill`` of the
    side, the wrist low in the frame, the forearm leaving through the bottom
    edge; centred, pushed towards a side (``off_centre``) or partly out of
    the field on the ``cut`` side. Returns the pose and the field."""
    rotation = rng.normal(0, 6)
    if rng.random() < 0.08:
        rotation += rng.choice([-1, 1]) * rng.uniform(12, 25)
    unit_pose = Pose(rotation, 1.0, np.zeros(2), mirror)
    hand_points = np.concatenate([unit_pose.apply(bone.points) for bone in hand.bones if bone.is_hand])
    hand_low, hand_high = hand_points.min(axis=0), hand_points.max(axis=0)
    scale = fill * size / float((hand_high - hand_low).max())
    # The box to keep in the field: the hand and the distal ends of the
    # radius and ulna, which every radiograph of a hand shows.
    wrist = [bone.points[bone.points[:, 1] < WRIST_SHOWN] for bone in hand.bones if not bone.is_hand]
    box_points = np.concatenate([hand_points, *(unit_pose.apply(points) for points in wrist)]) * scale
    low, high = box_points.min(axis=0), box_points.max(axis=0)
    width, height = high - low
    field_ = _make_field(size, rng, variety, width, height)
    x0, y0, x1, y1 = field_.inner()
    margin = MARGIN * size
    left_range = (x0 + margin, max(x0 + margin, x1 - margin - width))
    top_range = (y0 + margin, max(y0 + margin, y1 - FOREARM_SHOWN * size - height))
    middle = sum(left_range) / 2
    if off_centre:
        left = middle + rng.choice([-1, 1]) * rng.uniform(0.6, 1.0) * (left_range[1] - left_range[0]) / 2
    else:
        left = float(np.clip(middle + rng.normal(0, 0.02 * size), *left_range))
    # The wrist low in the frame, as radiographers place it.
    top = top_range[0] + rng.uniform(0.3, 1.0) * (top_range[1] - top_range[0])
    if cut == "top":
        top = y0 - rng.uniform(0.03, 0.25) * height
    elif cut == "left":
        left = x0 - rng.uniform(0.03, 0.2) * width
    elif cut == "right":
        left = x1 - width + rng.uniform(0.03, 0.2) * width
    elif cut == "bottom":
        # The field ends just below the hand's bones: little or no forearm left.
        top = y1 - (hand_high[1] * scale - low[1]) - rng.uniform(-0.005, 0.06) * scale
    centre = np.array([left, top]) - low
    return Pose(rotation, scale, centre, mirror), field_


def _pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Integer pixel coordinates of a rendered outline, clipped to a band
    around the image: far enough out that the cut edge leaves no trace."""
    pad = 12 * size / 256.0
    clipped = clip_polygon(points, _box_planes(-pad, -pad, size - 1 + pad, size - 1 + pad))
    return np.round(clipped).astype(np.int32)


def _to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    return np.clip(np.round(points), 0, size - 1).astype(np.int32)


def _crosses(points: np.ndarray, planes) -> bool:
    """Whether part of an outline lies outside the field."""
    return any(((points - origin) @ normal < -1e-6).any() for origin, normal in planes)


def _annotated(points: np.ndarray, planes, size: int) -> np.ndarray | None:
    """The polygon an annotator draws of what is visible of an outline
    (image pixels): clipped to the field, integer points; None when nothing
    or only a sliver of it is visible, or when a whole bone is too small to
    draw at this image size (no area left after rounding)."""
    visible = _to_pixels(clip_polygon(points, planes), size)
    visible = visible[np.any(visible != np.roll(visible, 1, axis=0), axis=1)]
    least = max(2.0, 0.01 * polygon_area(points)) if _crosses(points, planes) else 1e-9
    if len(visible) < 3 or polygon_area(visible) < least:
        return None
    return visible


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
    bone_polygons: list[np.ndarray],
    tissue_polygons: list[np.ndarray],
    metal_polygons: list[np.ndarray],
    polish_polygons: list[np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """An X-ray-like 8-bit image of the given pixel polygons (which may
    reach beyond the image): each bone polygon is drawn with its own cortex."""
    unit = size / 256.0
    tissue = np.zeros((size, size), np.float32)
    for polygon in tissue_polygons:
        if len(polygon) >= 3:
            cv2.fillPoly(tissue, [polygon.reshape(-1, 1, 2)], 1.0)
    tissue = cv2.GaussianBlur(tissue, (0, 0), sigmaX=2.5 * unit)

    bone = np.zeros((size, size), np.float32)
    cortex_width = rng.uniform(1.0, 1.6) * unit
    marrow_level = rng.uniform(0.45, 0.6)
    for polygon in bone_polygons:
        if len(polygon) < 3:
            continue
        x0, y0 = polygon.min(axis=0)
        x1, y1 = polygon.max(axis=0) + 1
        if x1 <= 0 or y1 <= 0 or x0 >= size or y0 >= size:
            continue
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
    for polygons, density in ((metal_polygons, 3.0), (polish_polygons, 1.2)):
        for polygon in polygons:
            if len(polygon) >= 3:  # an outline beyond the image's surroundings is clipped away
                cv2.fillPoly(metal, [polygon.reshape(-1, 1, 2)], density)

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


@dataclass
class Scene:
    """What is rendered into one image, in image pixels (floats)."""

    size: int
    field: Field
    pieces: list[np.ndarray]
    tissue: list[np.ndarray]
    metal: list[np.ndarray] = field(default_factory=list)
    polish: list[np.ndarray] = field(default_factory=list)

    def visible(self, polygon: np.ndarray) -> bool:
        return _annotated(polygon, self.field.planes(), self.size) is not None

    def render(self, rng) -> np.ndarray:
        pixels = [_pixels(polygon, self.size) for polygon in self.pieces]
        tissue, metal, polish = (
            [_pixels(p, self.size) for p in group] for group in (self.tissue, self.metal, self.polish)
        )
        return self.field.expose(render(self.size, pixels, tissue, metal, polish, rng), rng)


def _add_artifact(scene: Scene, hand: Hand, pose: Pose, rng, events: list):
    """Draw a ring, nail polish or pin into the scene; returns the ring
    (annotated class, outline) if one was drawn."""
    kind = ARTIFACTS[rng.integers(len(ARTIFACTS))]
    ring = None
    if kind == "ring":
        ring = _ring_band(hand, pose, rng)
        polygon, group = ring[1], scene.metal
    elif kind == "nail_polish":
        polygon, group = _nail_polish(hand, pose, rng), scene.polish
    else:
        polygon, group = _pin(hand, pose, rng), scene.metal
    group.append(polygon)
    if scene.visible(polygon):  # one outside the field is not in the picture
        events.append(("artifact", kind, ""))
    return ring


def _inject_fault(scene: Scene, hand: Hand, pose: Pose, rng, labelled: list, ring, events: list) -> bool:
    """Write one annotation fault into ``labelled``; returns whether a ring
    had to be drawn for it (the image is then rendered again)."""
    fault = FAULTS[rng.integers(len(FAULTS))]
    added = False
    if fault == "ring_annotated" and ring is None:
        # A ring must be in the picture to be annotated as bone.
        ring, added = _ring_band(hand, pose, rng), True
        scene.metal.append(ring[1])
        if scene.visible(ring[1]):
            events.append(("artifact", "ring", ""))
    present = {annotation["label"] for annotation in labelled}
    pairs = [pair for pair in SWAP_PAIRS if set(pair) <= present]
    ring_outline = _annotated(ring[1], scene.field.planes(), scene.size) if fault == "ring_annotated" else None
    if (fault == "ring_annotated" and ring_outline is None) or (fault == "swapped_labels" and not pairs):
        fault = "wrong_polygon"  # the ring or a bone of every pair is outside the field
    if fault == "ring_annotated":
        labelled.append(_annotation(len(labelled), ring[0], ring_outline))
        detail = f"ring annotated as {ring[0]}"
    elif fault == "swapped_labels":
        first, second = pairs[rng.integers(len(pairs))]
        for annotation in labelled:
            if annotation["label"] in (first, second):
                annotation["label"] = second if annotation["label"] == first else first
        detail = f"{first}<->{second}"
    else:
        number = int(rng.integers(len(labelled)))
        points = np.asarray(labelled[number]["points"], float)
        centre = points.mean(axis=0)
        moved = (points - centre) * rng.uniform(1.6, 2.4) + centre + rng.uniform(-0.15, 0.15, 2) * scene.size
        labelled[number]["points"] = _to_pixels(moved, scene.size).tolist()
        detail = f"{labelled[number]['label']} polygon displaced and enlarged"
    events.append(("fault", fault, detail))
    return added


def _case_events(person: Person, hand: Hand, pose: Pose, field_: Field, cut, polygons: dict) -> list:
    """The manifest rows (kind ``case``) of one image; ``polygons`` maps each
    bone's label to its annotated polygon or None (outside the field)."""
    size = field_.size
    planes = field_.planes()
    outlines = {bone.label: pose.apply(bone.points) for bone in hand.bones}
    hand_points = np.concatenate([outlines[bone.label] for bone in hand.bones if bone.is_hand])
    low, high = hand_points.min(axis=0), hand_points.max(axis=0)
    events = [("case", "scale", f"fill={(high - low).max() / size:.3f}")]
    dx = ((low[0] + high[0]) / 2 - (size - 1) / 2) / size
    if abs(dx) >= OFF_CENTRE:
        events.append(("case", "off_centre", f"dx={dx:+.3f}"))
    crossing = {label for label, outline in outlines.items() if _crosses(outline, planes)}
    absent = [label for label in outlines if label in crossing and polygons[label] is None]
    clipped = [label for label in outlines if label in crossing and polygons[label] is not None]
    is_hand = {bone.label: bone.is_hand for bone in hand.bones}
    if cut or absent or any(is_hand[label] for label in clipped):
        events.append(
            ("case", "cut_border", f"side={cut or 'none'}; clipped={' '.join(clipped)}; absent={' '.join(absent)}")
        )
    too_small = [label for label in outlines if label not in crossing and polygons[label] is None]
    if too_small:
        events.append(("case", "too_small", f"absent={' '.join(too_small)}"))
    if person.age is not None:
        unossified = [name for name in CLASSES if name in CARPALS and not person.ossified(name)]
        events.append(("case", "child", f"age={person.age:.1f}; absent={' '.join(unossified)}"))
    if field_.edges:
        events.append(("case", "collimation", f"sides={' '.join(side for side, _, _ in field_.edges)}"))
    if any(field_.bands):
        sides = [(side, width) for side, width in zip(SIDES, field_.bands) if width]
        detail = f"sides={' '.join(side for side, _ in sides)}; widths={' '.join(str(width) for _, width in sides)}"
        events.append(("case", "black_border", detail))
    return events


def detail_fields(detail: str) -> dict[str, str]:
    """The ``key=value`` pairs of a manifest row's detail (of a case)."""
    pairs = (item.split("=", 1) for item in str(detail).split("; ") if "=" in item)
    return {key: value for key, value in pairs}


def generate_image(
    person: Person,
    rng,
    size: int,
    mirror: bool,
    bent_wrist_rate: float,
    artifact_rate: float,
    fault_rate: float,
    variety: Variety | None = None,
):
    """One hand: the image, the correct annotations, the annotations as they
    are written into the training labels (with faults) and the manifest rows
    as (kind, code, detail). ``variety`` frames it (default: plainly)."""
    variety = variety or Variety()
    bend = rng.normal(0, 4)
    if rng.random() < bent_wrist_rate:
        bend += rng.choice([-1, 1]) * rng.uniform(15, 30)
    hand = build_hand(person, rng, bend)
    fill = rng.uniform(variety.min_fill, variety.max_fill)
    off_centre = rng.random() < variety.off_centre_rate
    cut = CUT_SIDES[rng.choice(len(CUT_SIDES), p=CUT_SIDE_SHARES)] if rng.random() < variety.cut_rate else None
    pose, field_ = _fit_pose(hand, size, rng, mirror, fill, variety, off_centre, cut)
    planes = field_.planes()
    polygons = {bone.label: _annotated(pose.apply(bone.points), planes, size) for bone in hand.bones}
    scene = Scene(
        size,
        field_,
        pieces=[pose.apply(piece) for bone in hand.bones for piece in bone.pieces],
        tissue=[pose.apply(polygon) for polygon in hand.tissue],
    )
    events = []
    ring = _add_artifact(scene, hand, pose, rng, events) if rng.random() < artifact_rate else None
    image = scene.render(rng)
    truth = [
        _annotation(number, label, points)
        for number, (label, points) in enumerate((label, p) for label, p in polygons.items() if p is not None)
    ]
    labelled = [dict(a) for a in truth]
    if rng.random() < fault_rate and _inject_fault(scene, hand, pose, rng, labelled, ring, events):
        image = scene.render(rng)
    events += _case_events(person, hand, pose, field_, cut, polygons)
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


def _check(config: SyntheticConfig) -> None:
    if config.image_size < 64:
        raise ConfigError(f"synthetic image_size must be at least 64, got {config.image_size}")
    if config.train_people < 1 or config.test_people < 1:
        raise ConfigError("synthetic train_people and test_people must be at least 1")
    if not 0 < config.min_fill <= config.max_fill <= 1:
        raise ConfigError(f"synthetic needs 0 < min_fill <= max_fill <= 1, got {config.min_fill}, {config.max_fill}")
    if config.child_age_min > config.child_age_max:
        raise ConfigError(
            f"synthetic child_age_min ({config.child_age_min}) is above child_age_max ({config.child_age_max})"
        )


def generate(out: str | Path, config: SyntheticConfig, progress: bool = True) -> Path:
    """Write the data set to ``out``: ``data/`` (the competition layout) and
    ``ground_truth/`` (test labels and the manifest of injected cases).

    The same seed gives the same bytes; each person's images depend only on
    the seed and the person's number, not on how many people are generated.
    """
    _check(config)
    out = Path(out)
    with atomic_path(out) as staging:
        manifest = []
        total = config.train_people + config.test_people
        for number in tqdm(range(total), desc="synthetic people", disable=not progress):
            split = "train" if number < config.train_people else "test"
            person_id = f"ID{number + 1:03d}"
            rng = np.random.default_rng([config.seed, number])
            person = make_person(
                rng, config.child_rate, (config.child_age_min, config.child_age_max), config.length_spread
            )
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
                    config.variety(),
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


# -- the command line: `handbone demo-data` (cli.py dispatches) --


def demo_data_command(args) -> None:
    values = {option.name: getattr(args, option.name) for option in dataclasses.fields(SyntheticConfig)}
    out = generate(args.out, SyntheticConfig(**values), progress=progress(args))
    log.info("synthetic data set written to %s (data root: %s)", out, out / "data")


def demo_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=demo_data_command)
    parser.add_argument("--out", required=True, help="output folder (gets data/ and ground_truth/)")
    # The annotations, not the defaults' types: a float option may default to a whole number in config.yaml.
    types = typing.get_type_hints(SyntheticConfig)
    for option in dataclasses.fields(SyntheticConfig):
        parser.add_argument(
            f"--{option.name.replace('_', '-')}",
            dest=option.name,
            type=types[option.name],
            default=option.default,
            help=f"synthetic.{option.name} (default: %(default)s)",
        )
