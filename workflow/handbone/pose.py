"""Hand side and rotation, from the labels and from the pixels alone.

Conventions (as in posterior-anterior radiographs): fingers point up, a right
hand has its thumb on the image's left, a left hand on the right. Rotation is
the angle in degrees of the hand's axis (wrist to knuckles) from straight up,
positive clockwise. Wrist bend is the angle between the forearm's axis and
the hand's axis, positive clockwise.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .classes import CLASS_GROUPS

CARPALS = tuple(CLASS_GROUPS["carpals"])
KNUCKLES = ("finger-7", "finger-11", "finger-15")  # index, middle, ring metacarpals
THUMB = ("finger-1", "finger-2", "finger-3")
LITTLE = ("finger-16", "finger-17", "finger-18", "finger-19")
FOREARM = ("Radius", "Ulna")


def angle_of(vector: np.ndarray) -> float:
    """Degrees from straight up (image y points down), positive clockwise."""
    return math.degrees(math.atan2(vector[0], -vector[1]))


def angle_difference(first: float, second: float) -> float:
    return (first - second + 180.0) % 360.0 - 180.0


def _mean(centroids: dict, names) -> np.ndarray | None:
    points = [centroids[name] for name in names if name in centroids]
    return np.mean(points, axis=0) if points else None


# Subsets of the knuckles whose mean is about that of all three (within a
# degree of the hand's axis; the middle metacarpal lies between the other
# two), in order of preference, for when the border cuts one of them.
KNUCKLE_SUBSETS = (("finger-7", "finger-15"), ("finger-11",))


def _group_centre(centroids: dict, names, cut, subsets=()) -> tuple[np.ndarray | None, list[str], list[str]]:
    """The mean of a group's centroids; when the border cuts some of them
    (which moves their centroids), the mean of the first of ``subsets`` that
    has no cut bone, or else of the uncut ones. Also returns the bones that
    mean is of, and the cut bones it still rests on, for when every bone of
    the group is cut."""
    present = [name for name in names if name in centroids]
    whole = [name for name in present if name not in cut]
    if len(whole) == len(present):
        return _mean(centroids, present), present, []
    for subset in (*subsets, whole):
        if subset and all(name in whole for name in subset):
            return _mean(centroids, list(subset)), list(subset), []
    return _mean(centroids, present), present, present


# Below this distance from the carpals' centre (in units of the hand's
# scale) the visible stub of a forearm cut by the border is too short to
# tell its direction.
FOREARM_MIN_LEVER = 0.3


def label_frame(centroids: dict, cut=()) -> dict | None:
    """The hand's frame from class centroids ({class: (x, y)} in pixels).

    Returns wrist (carpal centre), axis (unit vector wrist -> knuckles),
    scale (that distance), side ("left"/"right"), rotation and wrist_bend in
    degrees; None when the needed bones are missing. Averages over groups of
    bones keep the frame stable when two labels of a group are swapped.

    A bone cut by the image's border (in ``cut``) has a centroid moved by
    the cut, so cut carpals and knuckles are left out of the frame while
    uncut ones remain (``left_out``: every cut carpal and knuckle; a frame
    without some is a little less exact); ``cut`` lists those the frame
    still rests on, their whole group being cut.
    """
    wrist, carpals, wrist_cut = _group_centre(centroids, CARPALS, cut)
    knuckles, knuckle_names, knuckles_cut = _group_centre(centroids, KNUCKLES, cut, KNUCKLE_SUBSETS)
    thumb, little = _mean(centroids, THUMB), _mean(centroids, LITTLE)
    if wrist is None or knuckles is None or thumb is None or little is None:
        return None
    if float(np.linalg.norm(knuckles - wrist)) == 0:
        return None
    axis = (knuckles - wrist) / float(np.linalg.norm(knuckles - wrist))
    right_of_axis = np.array([-axis[1], axis[0]])  # image-right when the hand points up
    side = "right" if float(np.dot(thumb - little, right_of_axis)) < 0 else "left"
    # The forearm leaves the image in almost every radiograph, so its
    # centroid is that of the visible part; it still lies on the forearm's
    # axis, unless so little is visible that it sits on the wrist, or only
    # one of its two bones is (one lies to the side of the axis).
    forearm = _mean(centroids, FOREARM) if all(name in centroids for name in FOREARM) else None
    frame = {
        "side": side,
        "left_out": [name for name in CARPALS + KNUCKLES if name in cut and name in centroids],
        "cut": wrist_cut + knuckles_cut,
        "carpals": carpals,  # the bones the wrist's centre is the mean of
        "knuckles": knuckle_names,  # and those the knuckles' centre is
        "forearm": forearm,
        "corrected": False,
    }
    return _placed(frame, wrist, knuckles)


def _placed(frame: dict, wrist: np.ndarray, knuckles: np.ndarray) -> dict:
    """``frame`` with its wrist and knuckles' centres at these points."""
    axis = knuckles - wrist
    scale = float(np.linalg.norm(axis))
    axis = axis / scale
    forearm = frame["forearm"]
    bend = float("nan")
    if forearm is not None and np.linalg.norm(wrist - forearm) >= FOREARM_MIN_LEVER * scale:
        bend = angle_difference(angle_of(axis), angle_of(wrist - forearm))
    return {
        **frame,
        "wrist": wrist,
        "axis": axis,
        "scale": scale,
        "rotation": angle_of(axis),
        "wrist_bend": bend,
    }


def corrected_frame(frame: dict | None, places: dict) -> dict | None:
    """The frame of the whole hand when its wrist (or knuckles') centre is
    the mean of only some of the carpals (or knuckles), the others cut by
    the border or missing.

    The mean of a subset lies off the centre of the whole group by the
    subset's offset, which ``places`` ({class: usual canonical (x, y)}, as
    fitted on whole hands) gives: the subset's mean is at the mean of its
    bones' usual places, the knuckles' centre used at that of its bones. Two
    points with known places in the hand's frame fix the frame (a
    similarity, mirrored for a left hand), whose origin is the wrist's
    centre of the whole group and (0, -1) the knuckles'. Returned unchanged
    when it rests on every carpal and knuckle, on cut bones, or on a bone
    without a usual place.
    """
    if frame is None or frame["cut"]:
        return frame
    used = frame["carpals"] + frame["knuckles"]
    if (len(frame["carpals"]), len(frame["knuckles"])) == (len(CARPALS), len(KNUCKLES)):
        return frame
    if any(name not in places for name in used):
        return frame

    def as_complex(point) -> complex:
        return complex(float(point[0]), float(point[1]))

    def canonical(names) -> complex:
        # In the frame's coordinates (see to_canonical), a left hand mirrored.
        x, y = np.mean([places[name] for name in names], axis=0)
        return complex(-x if frame["side"] == "left" else x, y)

    # Pixels from the frame's (mirrored) coordinates: p = wrist + c * (i x - y) = wrist + c * i * z.
    wrist_place, knuckle_place = canonical(frame["carpals"]), canonical(frame["knuckles"])
    if wrist_place == knuckle_place:
        return frame
    wrist_seen = as_complex(frame["wrist"])
    knuckles_seen = wrist_seen + as_complex(frame["axis"]) * frame["scale"]
    c = (knuckles_seen - wrist_seen) / (1j * (knuckle_place - wrist_place))
    wrist = wrist_seen - c * 1j * wrist_place
    knuckles = wrist + c * 1j * complex(0.0, -1.0)
    placed = _placed(frame, np.array([wrist.real, wrist.imag]), np.array([knuckles.real, knuckles.imag]))
    return {**placed, "corrected": True}


def to_canonical(points: np.ndarray, frame: dict) -> np.ndarray:
    """Points in the hand's frame: origin at the wrist, knuckles at (0, -1),
    every hand mirrored to a right hand (thumb at negative x)."""
    axis = frame["axis"]
    right_of_axis = np.array([-axis[1], axis[0]])
    relative = (np.asarray(points, float) - frame["wrist"]) / frame["scale"]
    x = relative @ right_of_axis
    y = -(relative @ axis)
    if frame["side"] == "left":
        x = -x
    return np.stack([x, y], axis=-1)


def from_canonical(points: np.ndarray, frame: dict) -> np.ndarray:
    """Pixel coordinates of points in the hand's frame (to_canonical undone)."""
    axis = frame["axis"]
    right_of_axis = np.array([-axis[1], axis[0]])
    canonical = np.asarray(points, float)
    x, y = canonical[..., 0], canonical[..., 1]
    if frame["side"] == "left":
        x = -x
    relative = x[..., None] * right_of_axis - y[..., None] * axis
    return frame["wrist"] + relative * frame["scale"]


def foreground_mask(image: np.ndarray, level: float = 1.0) -> np.ndarray:
    """The body part (soft tissue and bone) as the largest bright region,
    at 256 pixels on the longer side. ``level`` places the threshold
    between the background's mean (0) and Otsu's threshold (1): below 1
    it keeps faint soft tissue (fingertips before a grey background) that
    Otsu's threshold cuts off."""
    size = max(image.shape)
    scale = 256.0 / size
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if size > 256 else image.copy()
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    otsu, mask = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    below = small[small <= otsu]
    if level != 1.0 and below.size:  # an image with no pixel at or below Otsu's level has no background to lower to
        background = float(below.mean())
        mask = (small > background + level * (otsu - background)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def _principal_axis(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, -1]


# The forearm meets the border over about 0.4 x the square root of the
# silhouette's area, a finger cut by the border over about 0.1.
FOREARM_MIN_CONTACT = 0.2


def _forearm_contact(mask: np.ndarray) -> np.ndarray:
    """(x, y) of the longest unbroken stretch of the body part along the
    image's border: the forearm, which is wider than any finger or thumb
    that the border also cuts; none when no stretch is that wide."""
    height, width = mask.shape
    # The border walked clockwise from the top-left corner, each pixel once.
    sides = max(height - 2, 0)
    xs = np.concatenate([np.arange(width), np.full(sides, width - 1), np.arange(width)[::-1], np.zeros(sides)])
    ys = np.concatenate(
        [np.zeros(width), np.arange(1, height - 1), np.full(width, height - 1), np.arange(height - 2, 0, -1)]
    )
    xs, ys = xs.astype(int), ys.astype(int)
    inside = mask[ys, xs]
    if inside.all() or not inside.any():
        return np.stack([xs[inside], ys[inside]], axis=1).astype(float)
    start = int(np.argmin(inside))  # walk from a gap, so that no stretch wraps around
    inside, xs, ys = np.roll(inside, -start), np.roll(xs, -start), np.roll(ys, -start)
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    longest = int(np.argmax(ends - starts))
    if ends[longest] - starts[longest] < FOREARM_MIN_CONTACT * np.sqrt(mask.sum()):
        return np.zeros((0, 2))  # only fingers reach the border
    run = slice(starts[longest], ends[longest])
    return np.stack([xs[run], ys[run]], axis=1).astype(float)


HAND_PERCENTILE = 40
WRIST_PERCENTILE = 30
# Rings around the palm's centre, in units of the palm's radius (the largest
# distance from the silhouette's edge), that cross the digits; and the arcs
# that count as a digit (degrees of the ring inside the body part; thinner
# ones are noise at the silhouette's edge).
FINGER_RINGS = np.arange(0.9, 3.01, 0.05)
FINGER_MIN_ARC = 1.0
# How far from straight up (the forearm's direction reversed) an arc may lie
# and still be a digit, in degrees; beyond, it is the forearm.
FINGER_MAX_ANGLE = 150.0
# side_score = finger_gap + SKEW_WEIGHT * skew, the finger gap found on the
# body part at SIDE_MASK_LEVEL (foreground_mask). Chosen on the 30 real
# radiographs of shared/data/real_radiographs with their mirror images and
# on 200 generated images (seed 11 at 384 px, seed 12 at 512 px):
# - Otsu's mask (level 1): the finger gap alone right on 56 of 60 real and
#   165 of 200 generated sides, the skew alone on 42 and 185, mixed with
#   weights 0.2 / 0.75 / 1 / 2 on 56 and 165 / 55 and 183 / 54 and 183 /
#   52 and 182;
# - level 0.5 (fingertips kept on grey backgrounds), weight 1: 57 and 184
#   (levels 0.4 / 0.45 / 0.55 / 0.6 / 0.7: 58 / 56 / 56 / 58 / 56 real,
#   183 to 185 generated). The misjudged real hands: rsna_boneage/1706 (an
#   adducted thumb along the palm) and one of 1541's two orientations (a
#   composite image); both with scores near 0, so unsure.
# On generated images not used to choose (`python benchmarks/sides.py
# --seeds 21 22 23`): 281 of 300, 292 with the pair rule.
SIDE_MASK_LEVEL = 0.5
SKEW_WEIGHT = 1.0


def finger_gap(mask: np.ndarray) -> float:
    """The thumb's side from the gaps between the digits: positive when the
    thumb is on the image's right of the hand's axis (a left hand, fingers
    up), negative on its left, 0 when no ring finds the digits.

    Rings around the palm's centre cross the digits as arcs inside the body
    part. The thumb stands apart: the gap between it and the index finger
    is the widest between neighbouring digits. On each ring that crosses
    three to six digits, the difference of the two end gaps (over the span
    of the digits) points to the thumb's end; rings that cross all five
    digits are preferred, and the median over the rings is returned."""
    mask = mask.astype(bool)
    height, width = mask.shape
    if mask.sum() < 50:
        return 0.0
    distance = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    radius, palm = float(distance[row, col]), np.array([col, row], float)
    contact = _forearm_contact(mask)
    anchor = contact.mean(axis=0) if len(contact) else np.array([palm[0], height])
    up = palm - anchor
    up /= np.linalg.norm(up) + 1e-9
    right_of_axis = np.array([-up[1], up[0]])
    angles = np.radians(np.arange(-180.0, 180.0, 0.5))
    directions = np.cos(angles)[:, None] * up + np.sin(angles)[:, None] * right_of_axis
    digit_zone = np.abs(np.degrees(angles)) < FINGER_MAX_ANGLE
    votes = {}
    for ring in FINGER_RINGS:
        points = np.round(palm + ring * radius * directions).astype(int)
        xs, ys = points[:, 0], points[:, 1]
        seen = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        inside = np.zeros(len(angles), bool)
        inside[seen] = mask[ys[seen], xs[seen]]
        inside &= digit_zone
        edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        centres = [
            float(np.degrees(angles[(start + end - 1) // 2]))
            for start, end in zip(starts, ends)
            if (end - start) * 0.5 >= FINGER_MIN_ARC
        ]
        if 3 <= len(centres) <= 6:
            gaps = np.diff(centres)
            votes.setdefault(len(centres), []).append(float((gaps[-1] - gaps[0]) / (centres[-1] - centres[0])))
    if not votes:
        return 0.0
    return float(np.median(votes.get(5) or [vote for ring_votes in votes.values() for vote in ring_votes]))


def pixel_pose(image: np.ndarray, body: np.ndarray | None = None) -> dict:
    """Side and rotation estimated from the image alone (``body``: its
    ``foreground_mask``, when already found).

    The forearm is where the body part touches the image border; the hand is
    the part of the silhouette farther from it. The hand's principal axis
    gives the rotation. The side comes from ``side_score`` (positive: a
    left hand): the thumb stands apart from the other digits
    (``finger_gap``), and sticking out on one side of the axis it makes the
    silhouette skewed towards its side (``skew``).
    """
    mask = foreground_mask(image) if body is None else body
    ys, xs = np.nonzero(mask)
    if xs.size < 50:
        return {"side": "unknown", "rotation": float("nan"), "skew": 0.0, "finger_gap": 0.0, "side_score": 0.0}
    points = np.stack([xs, ys], axis=1).astype(float)
    centre = points.mean(axis=0)
    height, width = mask.shape
    contact = _forearm_contact(mask)
    # Without a forearm at the border, assume the usual orientation: forearm below.
    anchor = contact.mean(axis=0) if len(contact) else np.array([centre[0], height])
    axis = _principal_axis(points)
    if np.dot(axis, centre - anchor) < 0:
        axis = -axis
    along = (points - anchor) @ axis
    cut = np.percentile(along, HAND_PERCENTILE)
    hand = points[along >= cut]
    wrist = points[(along < cut) & (along >= np.percentile(along, WRIST_PERCENTILE))]
    hand_axis = hand.mean(axis=0) - wrist.mean(axis=0)
    hand_axis /= np.linalg.norm(hand_axis) + 1e-9
    right_of_axis = np.array([-hand_axis[1], hand_axis[0]])
    across = (hand - hand.mean(axis=0)) @ right_of_axis
    skew = float(np.mean(across**3) / (np.mean(across**2) ** 1.5 + 1e-9))
    gap = finger_gap(foreground_mask(image, SIDE_MASK_LEVEL))
    score = gap + SKEW_WEIGHT * skew
    return {
        "side": "left" if score > 0 else "right",
        "rotation": angle_of(hand_axis),
        "skew": skew,
        "finger_gap": gap,
        "side_score": score,
    }
