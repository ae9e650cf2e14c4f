"""Scores the EDA's outlier detection and pixel-based pose on synthetic data.

Generates a synthetic set with injected annotation faults and artifacts and,
at the generator's default rates, the correct-but-unusual cases (hands cut
by the border, children, collimation, black borders, off-centre hands,
scales from min_fill to max_fill), runs the EDA, and prints, against the
generator's manifest:
- recall per injected fault kind (share of faulty images excluded by the
  default exclusion reasons) and precision per reason and overall;
- how many correct images were excluded, per case (an image counts under
  every case it has; images with a fault are left out), with the reasons
  that excluded them. Hands cut by the border must not be excluded;
- agreement of hand side and rotation (within 10 degrees) estimated from the
  pixels alone with the label-based estimate, overall and per case;
- the pixel-based estimate on the real radiographs in shared/ (must not fail).

Usage: python benchmarks/outliers.py [--people 150] [--size 256] [--seed 0] [--plain]
(--plain: whole adult hands, centred, no borders, as before the cases existed)
"""

import argparse
import glob
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from handbone import config
from handbone.data import index_data_root, read_image
from handbone.eda import run_eda
from handbone.outliers import excluded_images
from handbone.pose import angle_difference, pixel_pose
from handbone.synthetic import SyntheticConfig, detail_fields, generate

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_radiographs"
PLAIN = dict(off_centre_rate=0.0, cut_rate=0.0, collimation_rate=0.0, black_border_rate=0.0, child_rate=0.0)


def run(args) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict, float]:
    """Generate, index and run the EDA; the outliers, image statistics,
    manifest, EDA summary and the EDA's seconds."""
    with tempfile.TemporaryDirectory() as folder:
        synthetic = SyntheticConfig(
            train_people=args.people,
            test_people=max(10, args.people // 5),
            image_size=args.size,
            seed=args.seed,
            artifact_rate=0.3,
            fault_rate=0.3,
            bent_wrist_rate_train=0.2,
            bent_wrist_rate_test=0.4,
            **(PLAIN if args.plain else {}),
        )
        root = generate(Path(folder) / "set", synthetic, progress=False)
        index = index_data_root(root / "data")
        started = time.monotonic()
        summary = run_eda(index, Path(folder) / "eda", progress=False)
        seconds = time.monotonic() - started
        outliers = pd.read_csv(Path(folder) / "eda" / "outliers.csv", keep_default_na=False)
        images = pd.read_csv(Path(folder) / "eda" / "image_stats.csv")
        manifest = pd.read_csv(root / "ground_truth" / "manifest.csv", keep_default_na=False)
    return outliers, images, manifest, summary, seconds


def case_groups(manifest: pd.DataFrame, names) -> dict[str, set]:
    """Image names per correct-but-unusual case (an image may be in several)."""
    cases = manifest[(manifest["kind"] == "case") & manifest["image_name"].isin(set(names))]
    groups: dict[str, set] = {}
    for _, row in cases.iterrows():
        fields = detail_fields(row["detail"])
        code = row["code"]
        if code == "cut_border":
            code = f"cut_border ({fields['side']})"
            if fields["absent"]:
                groups.setdefault("cut_border, bone out of view", set()).add(row["image_name"])
        elif code == "child":
            code = "child, carpals not yet ossified" if fields["absent"] else "child, all carpals"
        elif code == "scale":
            fill = float(fields["fill"])
            code = "small hand (fill < 0.5)" if fill < 0.5 else "large hand (fill > 0.8)" if fill > 0.8 else None
        if code:
            groups.setdefault(code, set()).add(row["image_name"])
    unusual = set(cases.loc[cases["code"] != "scale", "image_name"])
    artifacts = set(manifest.loc[manifest["kind"] == "artifact", "image_name"]) & set(names)
    groups["artifact only"] = artifacts - unusual
    groups["no case, no artifact"] = set(names) - unusual - artifacts
    return groups


def report_faults(outliers, manifest, train_names, excluded, exclude_reasons) -> set:
    faults = manifest[manifest["kind"] == "fault"]
    faulty = set(faults["image_name"])
    print("\nrecall per injected fault kind (image excluded):")
    for code, group in faults.groupby("code"):
        found = sum(name in excluded for name in group["image_name"])
        print(f"  {code:16s} {found:3d}/{len(group):3d} = {found / len(group):.3f}")
    found = len(faulty & set(excluded))
    print(f"  {'all':16s} {found:3d}/{len(faulty):3d} = {found / max(1, len(faulty)):.3f}")
    print("\nprecision per reason (flagged train images that have an injected fault):")
    for reason in exclude_reasons:
        flagged = set(outliers.loc[outliers["reason"] == reason, "image_name"]) & set(train_names)
        if flagged:
            right = len(flagged & faulty)
            print(f"  {reason:18s} {right:3d}/{len(flagged):3d} = {right / len(flagged):.3f}")
    right = len(set(excluded) & faulty)
    print(f"  {'excluded (any)':18s} {right:3d}/{len(excluded):3d} = {right / max(1, len(excluded)):.3f}")
    return faulty


def report_cases(manifest, train_names, excluded, faulty) -> None:
    correct = set(train_names) - faulty
    groups = case_groups(manifest, correct)
    print(f"\ncorrect train images excluded, per case ({len(correct)} correct images; excluded/all, reasons):")
    for code in sorted(groups, key=lambda code: (code.startswith(("artifact", "no case")), code)):
        names = groups[code]
        if not names:
            continue
        hit = sorted(names & set(excluded))
        reasons = Counter(reason for name in hit for reason in excluded[name].split(","))
        why = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        print(f"  {code:34s} {len(hit):3d}/{len(names):3d}  {why}")
    # Children may be excluded for their missing carpals; an adult's cut hand
    # has no other reason to be. A collimator edge cuts like the border.
    cut = {name for code, names in groups.items() if code.startswith("cut_border") for name in names}
    children = {name for code, names in groups.items() if code.startswith("child") for name in names}
    adults = cut - children
    at_collimator = adults & groups.get("collimation", set())
    print(
        f"  cut, adults: {len(adults & set(excluded))}/{len(adults)} excluded (must be 0), "
        f"of them cut where collimated: {len(at_collimator & set(excluded))}/{len(at_collimator)}"
    )


def report_pose(images, manifest, summary) -> None:
    train = images[images["split"] == "train"]
    labelled = train[train["side_from_labels"].notna()].set_index("image_name")
    side = labelled["side_from_labels"] == labelled["side_from_pixels"]
    within = pd.Series(
        [
            abs(angle_difference(a, b)) <= 10
            for a, b in zip(labelled["rotation_from_pixels"], labelled["rotation_from_labels"])
        ],
        index=labelled.index,
    )
    print(
        f"\npixels versus labels on {len(labelled)} train images: side agrees {side.mean():.3f}, "
        f"rotation within 10 degrees {within.mean():.3f}; per case (side, rotation):"
    )
    for code, names in sorted(case_groups(manifest, labelled.index).items()):
        names = sorted(names)
        if names:
            print(f"  {code:34s} {len(names):3d} images  {side[names].mean():.3f}  {within[names].mean():.3f}")
    print(f"train/test rotation shift: {summary.get('warnings') or 'no warning'}")
    real = sorted(glob.glob(str(REAL / "*" / "*.png")))
    poses = [pixel_pose(read_image(path)) for path in real]
    sides = pd.Series([pose["side"] for pose in poses]).value_counts().to_dict()
    print(
        f"\nreal radiographs: pixel pose on {len(poses)} images without error; sides {sides}, "
        f"|rotation| median {np.median([abs(p['rotation']) for p in poses]):.1f} degrees"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=150)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="no cut, child, border or off-centre cases")
    args = parser.parse_args()
    outliers, images, manifest, summary, seconds = run(args)
    exclude_reasons = config.default("outliers.exclude_reasons")  # what the workflow excludes by default
    train = images.loc[images["split"] == "train", "image_name"]
    excluded = excluded_images(outliers.to_dict("records"), train, exclude_reasons)
    train_manifest = manifest[manifest["split"] == "train"]
    print(
        f"{len(train)} train images ({args.size} px, {'plain' if args.plain else 'with every case'}), "
        f"{train_manifest.loc[train_manifest['kind'] == 'fault', 'image_name'].nunique()} with an injected fault; "
        f"EDA took {seconds:.1f} s"
    )
    faulty = report_faults(outliers, train_manifest, train, excluded, exclude_reasons)
    report_cases(train_manifest, train, excluded, faulty)
    report_pose(images, train_manifest, summary)


if __name__ == "__main__":
    main()
