"""The frame a network sees an image in: left hands mirrored to right ones
(``preprocess.unify_side: right``) and the hand's region cut out
(``preprocess.crop: hand``).

Both are estimated from the pixels alone (test images have no labels, and
real file names carry no reliable side), by one function, ``frame_of``, for
training, out-of-fold, test, pseudo-label and extra images alike. The
training cache holds images and masks in this frame; every predicted map is
brought back to the original image (``to_original``: mirrored back, pasted
into a map of the image's size) before it is stored, so the ensemble, the
post-processing and the submission never see the frame.

The crop is a square (resize mode keeps the hand's proportions) around the
body part's bounding box, widened by a margin; where it reaches past the
image it is padded with black, the background of a radiograph.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config
from .arguments import progress, section_argument
from .atomic import write_table
from .data import mask_for_row, read_image, read_index
from .errors import DataError
from .pose import SKEW_WEIGHT, foreground_mask, pixel_pose

log = logging.getLogger("handbone")

FRAME_FIELDS = ("flip", "top", "bottom", "left", "right")


@dataclass(frozen=True)
class Frame:
    """Where the network's input lies in an image of ``height`` x ``width``:
    rows ``top:bottom`` and columns ``left:right`` (which may reach past
    the image), mirrored left to right when ``flip``."""

    height: int
    width: int
    flip: bool
    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def whole(cls, height: int, width: int) -> Frame:
        return cls(height, width, False, 0, height, 0, width)

    @property
    def is_whole(self) -> bool:
        return not self.flip and (self.top, self.bottom, self.left, self.right) == (0, self.height, 0, self.width)

    def _overlap(self) -> tuple[slice, slice, slice, slice]:
        """(rows, columns) of the image and (rows, columns) of the crop that show the same pixels."""
        top, bottom = max(self.top, 0), min(self.bottom, self.height)
        left, right = max(self.left, 0), min(self.right, self.width)
        return (
            slice(top, bottom),
            slice(left, right),
            slice(top - self.top, bottom - self.top),
            slice(left - self.left, right - self.left),
        )


def hand_box(image: np.ndarray, margin: float, body: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a square around the body part
    (``body``: the image's ``pose.foreground_mask``), its side the box's
    longer side plus ``margin`` of it on each side, at most the image's
    longer side; the whole image when no body part is found."""
    height, width = image.shape[:2]
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    if rows.size == 0:
        return 0, height, 0, width
    # The mask is found at a smaller scale: back to pixels, rounding outwards.
    scale_y, scale_x = height / body.shape[0], width / body.shape[1]
    top, bottom = rows[0] * scale_y, (rows[-1] + 1) * scale_y
    left, right = cols[0] * scale_x, (cols[-1] + 1) * scale_x
    side = min(max(bottom - top, right - left) * (1 + 2 * margin), max(height, width))
    side = int(np.ceil(side))
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    top, left = int(round(centre_y - side / 2)), int(round(centre_x - side / 2))
    return top, top + side, left, left + side


def frame_of(image: np.ndarray, options: dict, side: str | None = None) -> Frame:
    """The frame of a raw (not yet preprocessed) image under the preprocess
    ``options`` (the config's preprocess section); ``side``: the pixel
    pose's side of the image, when already known."""
    height, width = image.shape[:2]
    unify, crop = options["unify_side"] == "right", options["crop"] == "hand"
    # The pose and the box both start from the body part: found once.
    body = foreground_mask(image) if crop or (unify and side is None) else None
    if unify and side is None:
        side = pixel_pose(image, body)["side"]
    top, bottom, left, right = 0, height, 0, width
    if crop:
        top, bottom, left, right = hand_box(image, float(options["crop_margin"]), body)
    return Frame(height, width, unify and side == "left", top, bottom, left, right)


def to_network(array: np.ndarray, frame: Frame) -> np.ndarray:
    """An image-shaped array (rows and columns first: an image, a packed
    mask) in the frame: cropped, padded with zeros, mirrored."""
    if frame.is_whole:
        return array
    if array.shape[:2] != (frame.height, frame.width):
        raise DataError(
            f"array of shape {array.shape} does not match its frame's image ({frame.height}, {frame.width})"
        )
    image_rows, image_cols, crop_rows, crop_cols = frame._overlap()
    crop = np.zeros((frame.bottom - frame.top, frame.right - frame.left) + array.shape[2:], array.dtype)
    crop[crop_rows, crop_cols] = array[image_rows, image_cols]
    return np.ascontiguousarray(crop[:, ::-1]) if frame.flip else crop


def to_original(maps: np.ndarray, frame: Frame) -> np.ndarray:
    """(C, h, w) maps predicted in the frame, back on the image: mirrored
    back and pasted into maps of the image's size, zero outside the crop."""
    if frame.is_whole:
        return maps
    expected = (frame.bottom - frame.top, frame.right - frame.left)
    if maps.shape[1:] != expected:
        raise DataError(f"maps of shape {maps.shape} do not match their frame's crop {expected}")
    if frame.flip:
        maps = maps[:, :, ::-1]
    image_rows, image_cols, crop_rows, crop_cols = frame._overlap()
    full = np.zeros((maps.shape[0], frame.height, frame.width), maps.dtype)
    full[:, image_rows, image_cols] = maps[:, crop_rows, crop_cols]
    return full


def frame_record(frame: Frame) -> dict:
    return {field: getattr(frame, field) for field in FRAME_FIELDS}


def frame_from_record(record, height: int, width: int) -> Frame:
    """The frame written by ``frame_record`` (a row of frames.csv or cache.csv)."""
    flip = record["flip"]
    flip = flip if isinstance(flip, (bool, np.bool_)) else str(flip).strip().lower() == "true"
    return Frame(height, width, bool(flip), *(int(record[field]) for field in FRAME_FIELDS[1:]))


def read_frames(path: str | Path) -> dict[str, Frame]:
    """{image name: frame} of a frames table (``write_frames``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: frames table does not exist (rule frames writes it)")
    table = pd.read_csv(path, keep_default_na=False)
    missing = [column for column in ("image_name", "height", "width", *FRAME_FIELDS) if column not in table.columns]
    if missing:
        raise DataError(f"{path}: frames table lacks column(s) {missing}")
    return {
        row["image_name"]: frame_from_record(row, int(row["height"]), int(row["width"])) for _, row in table.iterrows()
    }


def frame_for(name: str, image: np.ndarray, options: dict, known: dict[str, Frame] | None) -> Frame:
    """The frame of a raw image: from ``known`` (a frames table) when it
    lists the image, else estimated now the same way."""
    if known is not None and name in known:
        frame = known[name]
        if (frame.height, frame.width) != image.shape[:2]:
            raise DataError(
                f"{name}: the frames table was made for an image of {frame.height} x {frame.width}, "
                f"this one is {image.shape[0]} x {image.shape[1]}; rerun the frames rule"
            )
        return frame
    return frame_of(image, options)


def _label_share_inside(row, frame: Frame) -> float:
    """The share of a training image's labelled pixels inside its crop."""
    labelled = mask_for_row(row).any(axis=0)
    total = int(labelled.sum())
    image_rows, image_cols, _, _ = frame._overlap()
    return float(labelled[image_rows, image_cols].sum()) / total if total else 1.0


# The side from the pixels is a logistic model of two cues of
# pose.pixel_pose (SIDE_CUES): P(left) = logistic(weights . cues). Without
# labels the weights are pose.side_score's rule, (1, pose.SKEW_WEIGHT),
# times DEFAULT_SIDE_SCALE (fitted the same way on benchmarks/sides.py's
# images). With at least MIN_LABELLED_SIDES labelled images of each side,
# the rule's scale is fitted on them, and so are free weights, which
# replace the rule only if, cross-validated over people, they are right on
# MORE_RIGHT_NEEDED more of the labelled images than the rule (and at least
# that share of them): the images to be judged are of the same kind as the
# labelled ones, but a handful of them must not overturn a rule measured on
# real radiographs.
SIDE_CUES = ("finger_gap", "skew")
DEFAULT_SIDE_SCALE = 4.3
MIN_LABELLED_SIDES = 5
MORE_RIGHT_NEEDED = 2, 0.02
# Sides decided with less confidence than this, or by the pair rule, are
# named in the frames log and on the report's front page, and the
# predictions try both orientations of them.
LOW_SIDE_CONFIDENCE = 0.9
SIDE_METHODS = ("labels", "pixels", "pair")
# Written beside a prediction's maps: the images whose unsure side the
# models checked in both orientations (predict.surer_orientation).
SIDE_CHECKS = "side_checks.csv"
# The networks' evidence on an unsure side, as log-odds: this scale times
# the margin of the other orientation's confidence over the framed one's
# (metrics.orientation_confidence). Fitted by maximum likelihood on
# generated images of seeds the demo's models never saw, each predicted in
# both orientations (benchmarks/side_margins.py, 2026-12-04: 14.5 on 40
# images). A margin within the models' own spread then cannot overturn a
# side the pixels were fairly sure of.
NETWORK_SIDE_SCALE = 14.5
OTHER_SIDE = {"left": "right", "right": "left"}


def _fit_logistic(cues: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Weights w of P(sign = +1) = logistic(w . cue), no intercept (a
    mirrored hand has every cue negated and must get the other side), by
    maximum likelihood with a little L2 so separable data stay finite."""
    from scipy.optimize import minimize

    def loss(weights: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -signs * (cues @ weights)).sum() + 0.01 * weights @ weights)

    return minimize(loss, np.ones(cues.shape[1]), method="BFGS").x


def side_model(cues: np.ndarray, labels: np.ndarray, people: np.ndarray) -> tuple[np.ndarray, str]:
    """The weights of SIDE_CUES for the side from the pixels, from labelled
    images (``cues``: their SIDE_CUES, ``labels``: "left"/"right",
    ``people``: their person IDs, the groups of the cross-validation); and
    how they were chosen, with the accuracies measured, for the log."""
    from sklearn.model_selection import GroupKFold

    rule = np.array([1.0, SKEW_WEIGHT])
    signs = np.where(labels == "left", 1.0, -1.0)
    if min((signs > 0).sum(), (signs < 0).sum()) < MIN_LABELLED_SIDES:
        return DEFAULT_SIDE_SCALE * rule, (
            f"the rule (finger gap + {SKEW_WEIGHT:g} x skew) with its default confidence scale "
            f"({len(signs)} labelled images, fewer than {MIN_LABELLED_SIDES} of a side)"
        )
    count = len(signs)
    rule_right = int((np.sign(cues @ rule) == signs).sum())
    splits = GroupKFold(n_splits=min(5, len(set(people)))).split(cues, signs, people)
    free_right = sum(
        int((np.sign(cues[held] @ _fit_logistic(cues[fit], signs[fit])) == signs[held]).sum()) for fit, held in splits
    )
    measured = (
        f"on the {count} labelled training images the rule (finger gap + {SKEW_WEIGHT:g} x skew) is right on "
        f"{rule_right} (it has no parameter fitted on them), weights fitted on them on {free_right} "
        "(cross-validated over people)"
    )
    more, share = MORE_RIGHT_NEEDED
    if free_right >= rule_right + max(more, share * count):
        weights = _fit_logistic(cues, signs)
        return weights, f"{measured}: the fitted weights {np.round(weights, 3).tolist()} are used"
    scale = float(_fit_logistic((cues @ rule)[:, None], signs)[0])
    return scale * rule, f"{measured}: the rule is kept, with a confidence scale of {scale:.2f} fitted on them"


def side_confidence(score, scale: float = DEFAULT_SIDE_SCALE):
    """The confidence of the side a pixel ``side_score`` gives (0.5 to 1)."""
    return 1.0 / (1.0 + np.exp(-scale * np.abs(score)))


def decide_sides(table: pd.DataFrame) -> pd.DataFrame:
    """Each image's side (``side``, ``side_confidence``, ``side_method``)
    from a table of ``image_name``, ``person_id``, ``side_logit`` (from the
    pixels: the log-odds of a left hand, ``side_model``'s weights times the
    cues) and ``side_from_labels`` (empty where there are none).

    - labels: a labelled image's side is its labels' (confidence 1).
    - pixels: the sign of the logit, confidence logistic(|logit|).
    - pair: a person has two hands. Where both images of a person got the
      same side from the pixels, the less sure one is the other hand (its
      confidence becomes the surer one's); an unlabelled image whose
      person's other image is labelled is the other hand of that one.
    """
    decided = table.copy()
    labelled = decided["side_from_labels"].astype(str) != ""
    logit = decided["side_logit"].astype(float)
    decided["side"] = np.where(labelled, decided["side_from_labels"], np.where(logit > 0, "left", "right"))
    decided["side_confidence"] = np.where(labelled, 1.0, side_confidence(logit, 1.0))
    decided["side_method"] = np.where(labelled, "labels", "pixels")
    for _, person in decided.groupby("person_id", sort=False):
        if len(person) != 2 or labelled[person.index].all():
            continue
        first, second = person.index
        if decided.at[first, "side"] != decided.at[second, "side"]:
            continue
        # The one to change: an unlabelled one, the less sure if both are.
        unsure, sure = (
            (first, second)
            if decided.at[first, "side_confidence"] <= decided.at[second, "side_confidence"]
            else (second, first)
        )
        if labelled[unsure]:
            unsure, sure = sure, unsure
        decided.at[unsure, "side"] = OTHER_SIDE[decided.at[sure, "side"]]
        decided.at[unsure, "side_confidence"] = decided.at[sure, "side_confidence"]
        decided.at[unsure, "side_method"] = "pair"
    return decided


def write_frames(index_path, image_stats_path, options: dict, out, progress: bool = True) -> pd.DataFrame:
    """The frame of every image of the index, in which its side is decided
    by ``decide_sides`` (a training image's from its labels, the others'
    from the pixels, ``pose.pixel_pose``, and the pair rule), with the
    EDA's sides from the pixels and from the labels side by side and the
    share of each training image's labelled pixels that its crop keeps; a
    disagreement, an unsure side or a crop that cuts labels is logged."""
    options = config.section("preprocess", options, "preprocess options")
    index = read_index(index_path)
    stats = pd.read_csv(image_stats_path, keep_default_na=False).set_index("image_name")
    missing = [name for name in index["image_name"] if name not in stats.index]
    if missing:
        raise DataError(f"{image_stats_path} has no row for {missing[0]} ({len(missing)} in all); rerun the EDA")
    columns = [f"{cue}_from_pixels" for cue in SIDE_CUES]
    if any(column not in stats.columns for column in columns):
        raise DataError(f"{image_stats_path} lacks column(s) {columns} (an older EDA); rerun the EDA")
    sides = index[["image_name", "person_id"]].copy()
    cues = stats.loc[sides["image_name"], columns].astype(float).to_numpy()
    sides["side_from_labels"] = stats.loc[sides["image_name"], "side_from_labels"].astype(str).to_numpy()
    labelled = (sides["side_from_labels"] != "").to_numpy()
    weights, how = side_model(
        cues[labelled], sides["side_from_labels"].to_numpy()[labelled], sides["person_id"].to_numpy()[labelled]
    )
    log.info("side from the pixels: %s", how)
    sides["side_logit"] = cues @ weights
    sides = decide_sides(sides).set_index("image_name")
    rows = []
    for _, row in tqdm(index.iterrows(), total=len(index), desc="frames", disable=not progress):
        side_from_pixels, side_from_labels = stats.loc[row["image_name"], ["side_from_pixels", "side_from_labels"]]
        decided = sides.loc[row["image_name"]]
        frame = frame_of(read_image(row["image_path"]), options, decided["side"])
        rows.append(
            {
                "image_name": row["image_name"],
                "split": row["split"],
                "height": frame.height,
                "width": frame.width,
                "side": decided["side"],
                "side_confidence": round(float(decided["side_confidence"]), 4),
                "side_method": decided["side_method"],
                "side_from_pixels": side_from_pixels,
                "side_from_labels": side_from_labels,
                "sides_agree": "" if not side_from_labels else side_from_pixels == side_from_labels,
                **frame_record(frame),
                "labels_inside_crop": _label_share_inside(row, frame) if row["label_path"] else "",
            }
        )
    table = pd.DataFrame(rows)
    _log_findings(table)
    write_table(table, out)
    return table


def unsure_sides(table: pd.DataFrame) -> pd.DataFrame:
    """The images of a frames table whose side was decided with less than
    LOW_SIDE_CONFIDENCE or by the pair rule."""
    confidence = pd.to_numeric(table["side_confidence"], errors="coerce")
    return table[(confidence < LOW_SIDE_CONFIDENCE) | (table["side_method"].astype(str) == "pair")]


def unsure_side_confidence(
    name: str, image: np.ndarray, known: dict[str, Frame] | None, unsure: dict[str, float]
) -> float | None:
    """The confidence of a raw image's side when it is unsure, else None: as
    the frames table says (``known``, with ``unsure`` its ``unsure_sides``)
    when it lists the image, else from its pixels now (``side_confidence``
    below LOW_SIDE_CONFIDENCE)."""
    if known is not None and name in known:
        return unsure.get(name)
    confidence = float(side_confidence(pixel_pose(image)["side_score"]))
    return confidence if confidence < LOW_SIDE_CONFIDENCE else None


def read_unsure_sides(path: str | Path) -> dict[str, float]:
    """{name: side confidence} of ``unsure_sides`` in a frames table (none in
    a table written before sides had a confidence)."""
    table = pd.read_csv(path, keep_default_na=False)
    if "side_confidence" not in table.columns:
        return {}
    unsure = unsure_sides(table)
    # A side with no confidence written counts as a coin toss.
    confidence = pd.to_numeric(unsure["side_confidence"], errors="coerce").fillna(0.5)
    return dict(zip(unsure["image_name"], confidence.astype(float)))


def networks_overrule(margin, confidence, scale: float = NETWORK_SIDE_SCALE):
    """Whether the networks' margin for the other orientation (its
    orientation confidence minus the framed one's) outweighs a side decided
    with ``confidence``: both as log-odds (``scale``), added. Numbers or
    arrays of them (benchmarks/side_margins.py tries other scales)."""
    confidence = np.clip(confidence, 0.5, 1.0 - 1e-9)
    return scale * np.asarray(margin) > np.log(confidence / (1.0 - confidence))


def disagreeing_sides(table: pd.DataFrame) -> pd.DataFrame:
    """The training images of a frames table (as written, or read back from
    CSV) whose side from the pixels differs from the side from the labels."""
    return table[table["sides_agree"].astype(str) == "False"]


def labels_inside_crop(table: pd.DataFrame) -> pd.Series:
    """A frames table's ``labels_inside_crop`` as numbers (NaN for test images)."""
    return pd.to_numeric(table["labels_inside_crop"], errors="coerce")


def _log_findings(table: pd.DataFrame) -> None:
    disagree = disagreeing_sides(table)
    if len(disagree):
        log.warning(
            "%d training image(s) whose side from the pixels differs from the side from the labels: %s",
            len(disagree),
            ", ".join(disagree["image_name"][:10]),
        )
    unsure = unsure_sides(table)
    if len(unsure):
        log.warning(
            "%d image(s) whose side is unsure (confidence below %.2f) or was decided by the pair rule: %s",
            len(unsure),
            LOW_SIDE_CONFIDENCE,
            ", ".join(
                f"{row.image_name} ({row.side}, {row.side_method}, {float(row.side_confidence):.2f})"
                for row in unsure.itertuples()
            ),
        )
    inside = labels_inside_crop(table)
    cut = table[inside < 1.0]
    if len(cut):
        log.warning(
            "%d training image(s) whose hand crop leaves labelled pixels out (the least kept: %.3f of %s)",
            len(cut),
            inside.min(),
            table.loc[inside.idxmin(), "image_name"],
        )
    log.info("%d of %d images mirrored", int(table["flip"].sum()), len(table))


# -- the command line: `handbone frames` (cli.py dispatches) --


def frames_command(args) -> None:
    table = write_frames(args.index, args.image_stats, args.options, args.out, progress=progress(args))
    log.info("frames of %d images written to %s (%d mirrored)", len(table), args.out, int(table["flip"].sum()))


def frames_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=frames_command)
    parser.add_argument("--index", required=True)
    parser.add_argument("--image-stats", required=True, help="the EDA's image_stats.csv (the side from the labels)")
    section_argument(parser, "preprocess")
    parser.add_argument("--out", required=True, help="frames CSV")
