"""The run's summary on the report's front page, as reStructuredText.

The front page (``workflow/report/workflow.rst``, the Snakefile's global
``report:``) is rendered by ``snakemake --report``, which reads it then and
lets docutils include this file into it; every number here is read from the
run's own result files, none is typed in.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .data import read_folds, read_index
from .errors import DataError, MissingInput
from .fitting import MODEL_STEP, UNIFORM_STEP
from .frames import LOW_SIDE_CONFIDENCE, SIDE_CHECKS, SIDE_METHODS, disagreeing_sides, labels_inside_crop, unsure_sides

log = logging.getLogger("handbone")

# The files the summary reads, by the name of their command-line option.
FILES = {
    "index": "index CSV",
    "folds": "folds CSV (with the excluded images and why)",
    "outliers": "the EDA's outliers.csv",
    "frames": "frames/frames.csv (each image's side and crop)",
    "cv_metrics": "cv/metrics.json",
    "ensemble_weights": "ensemble/weights.json",
    "ensemble_table": "ensemble/oof_scores.csv",
    "postprocess_params": "postprocess/params.json",
    "postprocess_table": "postprocess/oof_scores.csv",
    "holdout": "scores/holdout.json",
    "analysis_per_class": "analysis/per_class.csv",
    "added_last": "analysis/added_last.csv",
}
# Folders, several per option: (option, help).
FOLDERS = {
    "test_predictions": "each model's predictions/{model}/test folder (with side_checks.csv where sides were checked)"
}
MODES = {
    "uniform": "the uniform mean of the maps",
    "weighted": "a weighted mean of the maps (one weight per model)",
    "classwise": "a weighted mean of the maps (weights per class)",
    "hard": "a majority vote of the masks",
}
SHOWN_EXCLUDED = 10  # excluded images listed by name; the rest are counted


def escape(text) -> str:
    """``text`` as literal reStructuredText: image and model names may hold
    characters that rst reads as markup (``*``, a trailing ``_``)."""
    return re.sub(r"([\\`*_|])", r"\\\1", str(text))


def table(header: list[str], rows: list[list]) -> str:
    """An rst list-table (each cell escaped)."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines += [f"   {'*' if number == 0 else ' '} - {escape(cell)}" for number, cell in enumerate(row)]
    return "\n".join(lines) + "\n"


def count(number: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{number} {noun}{'' if number == 1 else 'es' if noun.endswith('s') else 's'}"


def _reasons(values) -> str:
    """'a,b' cells counted per reason: 'a (2), b (1)', most frequent first."""
    counts = pd.Series([reason for value in values for reason in str(value).split(",") if reason]).value_counts()
    return ", ".join(f"{reason.replace('_', ' ')} ({count})" for reason, count in counts.items())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def _data(files: dict) -> str:
    index = read_index(files["index"])
    train, test = index[index["split"] == "train"], index[index["split"] == "test"]
    folds = read_folds(files["folds"])
    excluded = folds[folds["excluded"]]
    outliers = pd.read_csv(files["outliers"], keep_default_na=False)
    people = train["person_id"].nunique()
    text = (
        f"**Data.** {count(len(train), 'training image')} of {people} {'person' if people == 1 else 'people'} "
        f"and {count(len(test), 'test image')}. "
    )
    if len(outliers):
        text += (
            f"The EDA reported {count(len(outliers), 'finding')} on {count(outliers['image_name'].nunique(), 'image')}: "
            f"{_reasons(outliers['reason'])}; only the reasons of ``outliers.exclude_reasons`` (and "
            "``outliers.exclude``) exclude an image. "
        )
    if excluded.empty:
        return text + "No training image is excluded.\n"
    text += (
        f"{count(len(excluded), 'training image')} {'is' if len(excluded) == 1 else 'are'} excluded from training "
        "and from every fit: "
        f"{_reasons(excluded['exclusion_reason'])}.\n\n"
    )
    rows = [[row["image_name"], row["exclusion_reason"].replace(",", ", ")] for _, row in excluded.iterrows()]
    if len(rows) > SHOWN_EXCLUDED:
        rows = rows[:SHOWN_EXCLUDED] + [[f"and {len(rows) - SHOWN_EXCLUDED} more", "see excluded.csv"]]
    return text + "\n" + table(["excluded image", "why"], [[name, reason.replace("_", " ")] for name, reason in rows])


def _folds(files: dict) -> str:
    folds = read_folds(files["folds"])
    rows = [
        [fold, len(group), group["person_id"].nunique(), int(group["excluded"].sum())]
        for fold, group in folds.groupby("fold")
    ]
    return f"**Folds.** {len(rows)} folds grouped by person (both hands of a person fall in one fold):\n\n" + table(
        ["fold", "images", "people", "excluded"], rows
    )


def _frames(files: dict) -> str:
    """What the networks saw: mirrored hands, crops, and where the pixels and the labels disagree on a side."""
    frames = pd.read_csv(files["frames"], keep_default_na=False)
    flipped = frames["flip"].astype(str) == "True"
    disagree = disagreeing_sides(frames)["image_name"]
    labelled = (frames["sides_agree"].astype(str) != "").sum()
    text = (
        f"**Frames.** {count(int(flipped.sum()), 'image')} of {len(frames)} mirrored into right hands "
        "(``preprocess.unify_side``); "
    )
    side = (frames["bottom"] - frames["top"]) / frames[["height", "width"]].max(axis=1)
    if (side < 1).any():
        text += f"the networks see a square around the hand of {side.mean():.0%} of the image's side on average "
        text += f"(``preprocess.crop``; smallest {side.min():.0%}). "
    else:
        text += "the networks see the whole image. "
    text += (
        f"The side from the pixels agrees with the side from the labels on {labelled - len(disagree)} of "
        f"{labelled} training images"
    )
    if len(disagree):
        text += f" (not on {', '.join(escape(name) for name in disagree[:SHOWN_EXCLUDED])})"
    inside = labels_inside_crop(frames)
    if (inside < 1).any():
        text += f"; {count(int((inside < 1).sum()), 'crop')} cut labelled pixels (the least kept: {inside.min():.1%})"
    text += ". " + _unsure_sides(frames) + _network_sides(files.get("test_predictions") or [])
    return text + "\n"


def _network_sides(folders: list[Path]) -> str:
    """The sentence naming the test images whose unsure side the models checked, and what they decided."""
    checks = [
        pd.read_csv(folder / SIDE_CHECKS).assign(model=folder.parent.name)
        for folder in folders
        if (folder / SIDE_CHECKS).is_file()
    ]
    if not checks:
        return ""
    checks = pd.concat(checks)
    changed = checks[checks["changed"].astype(str) == "True"]
    text = (
        f" The models checked the unsure sides of {count(checks['image_name'].nunique(), 'test image')} "
        "in both orientations"
    )
    if not len(changed):
        return text + " and kept every one."
    named = ", ".join(f"{escape(row.image_name)} ({row.side}, {escape(row.model)})" for row in changed.itertuples())
    return text + f" and turned {count(len(changed), 'decision')}: {named}."


def _unsure_sides(frames: pd.DataFrame) -> str:
    """The sentence naming every image whose side is unsure or came from the pair rule."""
    if "side_method" not in frames.columns:
        return ""
    decided = frames["side_method"].astype(str).value_counts()
    text = "Sides: " + ", ".join(
        f"{decided[method]} from the {method if method != 'pair' else 'other hand of the person'}"
        for method in SIDE_METHODS
        if method in decided
    )
    unsure = unsure_sides(frames)
    if not len(unsure):
        return text + f"; none below a confidence of {LOW_SIDE_CONFIDENCE:.2f}."
    named = ", ".join(
        f"{escape(row.image_name)} ({row.side}, {row.side_method}, {float(row.side_confidence):.2f})"
        for row in unsure.itertuples()
    )
    return text + f"; unsure (below {LOW_SIDE_CONFIDENCE:.2f}) or decided by the pair rule: {named}."


def _cross_validation(files: dict) -> str:
    metrics = _read_json(files["cv_metrics"]).get("cv_dice")
    if not metrics:
        raise DataError(f"{files['cv_metrics']}: no 'cv_dice' (written by `handbone cv-combine`)")
    folds = sorted({fold for model in metrics.values() for fold in model["folds"]}, key=str)
    rows = [
        [model, f"{values['mean_dice']:.4f}", *(f"{values['folds'].get(fold, float('nan')):.4f}" for fold in folds)]
        for model, values in metrics.items()
    ]
    return "**Cross-validation.** Validation Dice of each model (competition metric):\n\n" + table(
        ["model", "mean", *(f"fold {fold}" for fold in folds)], rows
    )


def _ensemble(files: dict) -> str:
    weights = _read_json(files["ensemble_weights"])
    params = _read_json(files["postprocess_params"])
    ensemble_table = pd.read_csv(files["ensemble_table"])
    steps = pd.read_csv(files["postprocess_table"])
    if list(steps["step"][: len(ensemble_table)]) != list(ensemble_table["step"]):
        raise DataError(f"{files['postprocess_table']} does not begin with the rows of {files['ensemble_table']}")
    models = ensemble_table[ensemble_table["step"].str.startswith(MODEL_STEP.format(""))]
    best = models.loc[models["mean_dice"].idxmax()]
    rows = [[f"best model alone ({best['step'].removeprefix(MODEL_STEP.format(''))})", best["mean_dice"], None]]
    previous = best["mean_dice"]
    for number, (_, row) in enumerate(steps.iloc[len(ensemble_table) :].iterrows()):
        # A post-processing step that was not kept repeats the row before it.
        label = row["step"] if number == 0 or row["mean_dice"] != previous else f"{row['step']} (not kept)"
        rows.append([label, row["mean_dice"], row["mean_dice"] - previous])
        previous = row["mean_dice"]
    thresholds, min_area = np.asarray(params["thresholds"]), np.asarray(params["min_area"])
    mode = weights["mode"]
    members = ", ".join(escape(model) for model in weights["models"])
    text = (
        f"**Ensemble and post-processing.** The ensemble (``ensemble.mode: {mode}``) is {MODES.get(mode, mode)} "
        f"of {count(len(weights['models']), 'model')} ({members}); "
        "the post-processing, fitted like it on the "
        f"out-of-fold maps of {count(params['fitted_on_images'], 'training image')}, {_smoothing(params)}uses thresholds "
        f"{thresholds.min():.2f} to {thresholds.max():.2f}, removes small pieces in "
        f"{count(int((min_area > 0).sum()), 'class')} and keeps only the largest piece in "
        f"{count(int(np.sum(params['largest'])), 'class')}. Out-of-fold Dice after each step and its gain:\n\n"
    )
    return text + table(
        ["step", "OOF Dice", "gain"],
        [[label, f"{dice:.4f}", "" if gain is None else f"{gain:+.4f}"] for label, dice, gain in rows],
    )


def _smoothing(params: dict) -> str:
    """The smoothing the frozen post-processing applies, as a clause (params
    written before the step have none)."""
    sigma = np.asarray(params.get("sigma", [0.0]), dtype=float)
    smoothed = sigma[sigma > 0]
    if not smoothed.size:
        return "smooths no map, "
    spread = f"{smoothed.min():g}" if smoothed.min() == smoothed.max() else f"{smoothed.min():g} to {smoothed.max():g}"
    return f"smooths the maps of {count(smoothed.size, 'class')} (Gaussian sigma {spread} px), "


def _holdout(files: dict) -> str:
    holdout = _read_json(files["holdout"])
    if holdout.get("mean_dice") is None:
        return f"**Held-out score.** None: {escape(holdout.get('note', 'no test labels'))}.\n"
    return (
        f"**Held-out score (demo).** The submission's mean Dice on the {count(holdout['images'], 'test image')}, against the "
        f"generator's labels, which no choice saw: **{holdout['mean_dice']:.4f}**.\n"
    )


def _analysis(files: dict) -> str:
    per_class = pd.read_csv(files["analysis_per_class"]).set_index("model")
    if UNIFORM_STEP not in per_class.index:
        raise DataError(f"{files['analysis_per_class']}: no row '{UNIFORM_STEP}'")
    hardest = per_class.loc[UNIFORM_STEP].drop("mean_dice").sort_values().head(3)
    text = (
        "**Prediction analysis.** The hardest classes out of fold (uniform ensemble, threshold 0.5): "
        + ", ".join(f"{escape(name)} {value:.4f}" for name, value in hardest.items())
        + ". "
    )
    added = pd.read_csv(files["added_last"]).dropna(subset=["gain"])
    if added.empty:
        return text + "With one model there is no ensemble member to weigh.\n"
    first, last = added.iloc[0], added.iloc[-1]
    return (
        text + f"Added last to the uniform ensemble, {escape(first['model'])} adds the most "
        f"({first['gain']:+.4f} OOF Dice) and {escape(last['model'])} the least ({last['gain']:+.4f}).\n"
    )


def run_summary(files: dict) -> str:
    """The summary as rst paragraphs and tables, from ``files`` (paths by
    the names of ``FILES``)."""
    paths = {name: Path(files[name]) for name in FILES}
    for name, path in paths.items():
        if not path.is_file():
            raise MissingInput(f"{path}: {FILES[name]} does not exist (the summary is written after the whole run)")
    paths.update({name: [Path(folder) for folder in files.get(name) or []] for name in FOLDERS})
    sections = [_data, _frames, _folds, _cross_validation, _ensemble, _holdout, _analysis]
    return "\n".join(section(paths) for section in sections)


def write_run_summary(files: dict, out: str | Path) -> Path:
    """``handbone run-summary``: ``run_summary`` written to ``out``."""
    text = run_summary(files)
    with atomic_path(out) as temporary:
        temporary.write_text(text)
    return Path(out)


# -- the command line: `handbone run-summary` (cli.py dispatches) --


def run_summary_command(args) -> None:
    write_run_summary({name: getattr(args, name) for name in (*FILES, *FOLDERS)}, args.out)
    log.info("run summary written to %s", args.out)


def run_summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=run_summary_command)
    for name, help_text in FILES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, help=help_text)
    for name, help_text in FOLDERS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", nargs="*", default=[], help=help_text)
    parser.add_argument("--out", required=True, help="reStructuredText file to write")
