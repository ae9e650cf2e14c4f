"""Scores the hand's side from the pixels (pose.pixel_pose) on real
radiographs and on the generator.

- Real: every image of shared/data/real_radiographs (all left hands: the
  thumb on the image's right) and its mirror image (a right hand); a
  table of each image's cues (finger_gap, skew), score and side.
- Generated: the generator's images (train and test, at its default
  variety) against the side it drew; the frames rule's time per image.
- The accuracy of the finger gap alone, the skew alone and the shipped mix
  (pose.SKEW_WEIGHT), and of other weights, on both; on the generated
  images also with the pair rule (frames.decide_sides: a person's two
  images are two hands), as the frames rule decides test images.

Usage: python benchmarks/sides.py [--people 40] [--size 384] [--seeds 11 12] [--table sides.csv]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from handbone.data import read_image
from handbone.frames import DEFAULT_SIDE_SCALE, decide_sides
from handbone.pose import SKEW_WEIGHT, pixel_pose
from handbone.synthetic import SyntheticConfig, generate

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_radiographs"


def cues(image: np.ndarray) -> dict:
    pose = pixel_pose(image)
    return {
        "finger_gap": pose["finger_gap"],
        "skew": pose["skew"],
        "side_score": pose["side_score"],
        "side": pose["side"],
    }


def real_images():
    """(name, image, true side) of every real radiograph here (all left
    hands: the thumb on the image's right) and of its mirror (a right hand)."""
    for path in sorted(REAL.glob("*/*.png")):
        image = read_image(path)
        name = f"{path.parent.name}/{path.name}"
        yield name, image, "left"
        yield name + " (mirrored)", np.ascontiguousarray(image[:, ::-1]), "right"


def generated_images(people: int, size: int, seed: int, folder: Path):
    """(name, image, true side, person) of a generated set (train and test)
    at the generator's default variety."""
    root = generate(
        folder / f"seed{seed}",
        SyntheticConfig(train_people=people, test_people=max(1, people // 4), image_size=size, seed=seed),
        False,
    )
    manifest = pd.read_csv(root / "ground_truth" / "manifest.csv").drop_duplicates("image_name")
    truth = manifest.set_index("image_name")["hand"]
    person = manifest.set_index("image_name")["person_id"]
    for path in sorted((root / "data").glob("*/DCM/*/*.png")):
        yield path.name, read_image(path), truth[path.name], f"{seed}-{person[path.name]}"


def real_rows() -> tuple[list[dict], float]:
    rows, seconds = [], 0.0
    for name, image, truth in real_images():
        start = time.perf_counter()
        found = cues(image)
        seconds += time.perf_counter() - start
        rows.append({"set": "real", "image": name, "truth": truth, **found})
    return rows, seconds / max(len(rows), 1)


def generated_rows(people: int, size: int, seed: int, folder: Path) -> tuple[list[dict], float]:
    rows, seconds = [], 0.0
    for name, image, truth, person in generated_images(people, size, seed, folder):
        start = time.perf_counter()
        found = cues(image)
        seconds += time.perf_counter() - start
        rows.append({"set": f"generated (seed {seed})", "image": name, "person_id": person, "truth": truth, **found})
    return rows, seconds / max(len(rows), 1)


def accuracy(table: pd.DataFrame, weight: float) -> pd.Series:
    score = table["finger_gap"] + weight * table["skew"]
    right = (score > 0) == (table["truth"] == "left")
    return right.groupby(table["set"].str.startswith("generated").map({True: "generated", False: "real"})).agg(
        lambda column: f"{int(column.sum())} of {len(column)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=40, help="people per generated set (two hands each)")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--table", type=Path, help="write every image's cues and side here (CSV)")
    args = parser.parse_args()
    rows = []
    if REAL.is_dir():
        rows, seconds = real_rows()
        print(f"real radiographs: {seconds * 1000:.0f} ms per image for the side (pose.pixel_pose)")
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            generated, seconds = generated_rows(args.people, args.size, seed, Path(folder))
            rows += generated
            print(f"seed {seed}: {seconds * 1000:.0f} ms per image for the side at {args.size} px")
    table = pd.DataFrame(rows)
    table["right"] = table["side"] == table["truth"]
    if args.table:
        table.to_csv(args.table, index=False)
    real = table[table["set"] == "real"]
    if len(real):
        print(real[["image", "truth", "finger_gap", "skew", "side_score", "side"]].round(3).to_markdown(index=False))
        print("misjudged:", ", ".join(real.loc[~real["right"], "image"]) or "none")
    weights = sorted({0.0, 0.2, 0.5, SKEW_WEIGHT, 1.0, 2.0, 1e6})
    summary = pd.DataFrame({("skew alone" if w == 1e6 else f"skew weight {w:g}"): accuracy(table, w) for w in weights})
    print(summary.T.to_markdown())
    generated = table[table["set"] != "real"].assign(side_from_labels="")
    paired = decide_sides(generated.assign(side_logit=DEFAULT_SIDE_SCALE * generated["side_score"]))
    right = int((paired["side"] == paired["truth"]).sum())
    print(f"generated, shipped mix with the pair rule: {right} of {len(paired)}")
    print(f"shipped: pose.SKEW_WEIGHT = {SKEW_WEIGHT}")


if __name__ == "__main__":
    main()
