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

CARPALS = ("Trapezium", "Trapezoid", "Capitate", "Hamate", "Scaphoid", "Lunate", "Triquetrum", "Pisiform")
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


def label_frame(centroids: dict) -> dict | None:
    """The hand's frame from class centroids ({class: (x, y)} in pixels).

    Returns wrist (carpal centre), axis (unit vector wrist -> knuckles),
    scale (that distance), side ("left"/"right"), rotation and wrist_bend in
    degrees; None when the needed bones are missing. Averages over groups of
    bones keep the frame stable when two labels of a group are swapped.
    """
    wrist, knuckles = _mean(centroids, CARPALS), _mean(centroids, KNUCKLES)
    thumb, little = _mean(centroids, THUMB), _mean(centroids, LITTLE)
    if wrist is None or knuckles is None or thumb is None or little is None:
        return None
    axis = knuckles - wrist
    scale = float(np.linalg.norm(axis))
    if scale == 0:
        return None
    axis = axis / scale
    right_of_axis = np.array([-axis[1], axis[0]])  # image-right when the hand points up
    side = "right" if float(np.dot(thumb - little, right_of_axis)) < 0 else "left"
    forearm = _mean(centroids, FOREARM)
    bend = angle_difference(angle_of(axis), angle_of(wrist - forearm)) if forearm is not None else float("nan")
    return {
        "wrist": wrist,
        "axis": axis,
        "scale": scale,
        "side": side,
        "rotation": angle_of(axis),
        "wrist_bend": bend,
    }


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


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """The body part (soft tissue and bone) as the largest bright region."""
    size = max(image.shape)
    scale = 256.0 / size
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if size > 256 else image.copy()
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    _, mask = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def _principal_axis(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, -1]


HAND_PERCENTILE = 40
WRIST_PERCENTILE = 30


def pixel_pose(image: np.ndarray) -> dict:
    """Side and rotation estimated from the image alone.

    The forearm is where the body part touches the image border; the hand is
    the part of the silhouette farther from it. The hand's principal axis
    gives the rotation; the thumb, sticking out on one side of that axis,
    makes the silhouette skewed towards its side.
    """
    mask = foreground_mask(image)
    ys, xs = np.nonzero(mask)
    if xs.size < 50:
        return {"side": "unknown", "rotation": float("nan")}
    points = np.stack([xs, ys], axis=1).astype(float)
    centre = points.mean(axis=0)
    height, width = mask.shape
    on_border = (xs == 0) | (ys == 0) | (xs == width - 1) | (ys == height - 1)
    # Without border contact, assume the usual orientation: forearm below.
    anchor = points[on_border].mean(axis=0) if on_border.any() else np.array([centre[0], height])
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
    return {"side": "right" if skew < 0 else "left", "rotation": angle_of(hand_axis), "skew": skew}
