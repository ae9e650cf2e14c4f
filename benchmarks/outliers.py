"""Scores the EDA's outlier detection and pixel-based pose on synthetic data.

Generates a synthetic set with injected annotation faults and artifacts, runs
the EDA, and prints, against the generator's manifest:
- recall per injected fault kind (share of faulty images excluded by the
  default exclusion reasons) and precision per reason and overall;
- how many hard-but-correct images (artifacts only, bent or rotated hands)
  were excluded;
- agreement of hand side and rotation (within 10 degrees) estimated from the
  pixels alone with the label-based estimate;
- the pixel-based estimate on the real radiographs in shared/ (must not fail).

Usage: python benchmarks/outliers.py [--people 150] [--size 256] [--seed 0]
"""

import argparse
import glob
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from handbone.data import index_data_root, read_image
from handbone.eda import run_eda
from handbone.outliers import ANNOTATION_FAULTS, excluded_images
from handbone.pose import angle_difference, pixel_pose
from handbone.synthetic import SyntheticConfig, generate

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_radiographs"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=150)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = SyntheticConfig(
            train_people=args.people,
            test_people=max(10, args.people // 5),
            image_size=args.size,
            seed=args.seed,
            artifact_rate=0.3,
            fault_rate=0.3,
            bent_wrist_rate_train=0.2,
            bent_wrist_rate_test=0.4,
        )
        root = generate(Path(folder) / "set", config, progress=False)
        index = index_data_root(root / "data")
        started = time.monotonic()
        summary = run_eda(index, Path(folder) / "eda", progress=False)
        seconds = time.monotonic() - started
        outliers = pd.read_csv(Path(folder) / "eda" / "outliers.csv")
        images = pd.read_csv(Path(folder) / "eda" / "image_stats.csv")
        manifest = pd.read_csv(root / "ground_truth" / "manifest.csv")
    train = images[images["split"] == "train"]
    excluded = excluded_images(outliers.to_dict("records"), train["image_name"], ANNOTATION_FAULTS)
    faults = manifest[manifest["kind"] == "fault"]
    faulty = set(faults["image_name"])
    print(f"{len(train)} train images ({args.size} px), {len(faulty)} with an injected fault; EDA took {seconds:.1f} s")
    print("\nrecall per injected fault kind (image excluded):")
    for code, group in faults.groupby("code"):
        found = sum(name in excluded for name in group["image_name"])
        print(f"  {code:16s} {found:3d}/{len(group):3d} = {found / len(group):.3f}")
    found = len(faulty & set(excluded))
    print(f"  {'all':16s} {found:3d}/{len(faulty):3d} = {found / max(1, len(faulty)):.3f}")
    print("\nprecision per reason (flagged images that have an injected fault):")
    for reason in ANNOTATION_FAULTS:
        flagged = set(outliers.loc[outliers["reason"] == reason, "image_name"])
        if flagged:
            right = len(flagged & faulty)
            print(f"  {reason:18s} {right:3d}/{len(flagged):3d} = {right / len(flagged):.3f}")
    right = len(set(excluded) & faulty)
    print(f"  {'excluded (any)':18s} {right:3d}/{len(excluded):3d} = {right / max(1, len(excluded)):.3f}")
    hard = set(manifest.loc[manifest["kind"] == "artifact", "image_name"]) - faulty
    bent = set(outliers.loc[outliers["reason"].isin(["bent_wrist", "rotated_hand"]), "image_name"]) - faulty
    print(
        f"\nhard-but-correct images excluded: artifacts only {len(hard & set(excluded))}/{len(hard)}, "
        f"bent or rotated {len(bent & set(excluded))}/{len(bent)}"
    )
    labelled = train[train["side_from_labels"].notna()]
    side = (labelled["side_from_labels"] == labelled["side_from_pixels"]).mean()
    difference = np.abs(
        [angle_difference(a, b) for a, b in zip(labelled["rotation_from_pixels"], labelled["rotation_from_labels"])]
    )
    print(
        f"\npixels versus labels on {len(labelled)} train images: side agrees {side:.3f}, "
        f"rotation within 10 degrees {np.mean(difference <= 10):.3f} (median {np.median(difference):.1f}, max {difference.max():.1f})"
    )
    print(f"train/test rotation shift: {summary.get('warnings') or 'no warning'}")
    real = sorted(glob.glob(str(REAL / "*" / "*.png")))
    poses = [pixel_pose(read_image(path)) for path in real]
    sides = pd.Series([pose["side"] for pose in poses]).value_counts().to_dict()
    print(
        f"\nreal radiographs: pixel pose on {len(poses)} images without error; sides {sides}, "
        f"|rotation| median {np.median([abs(p['rotation']) for p in poses]):.1f} degrees"
    )


if __name__ == "__main__":
    main()
