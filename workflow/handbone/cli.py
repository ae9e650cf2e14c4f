"""The ``handbone`` command: one subcommand per stage of the workflow.

The Snakemake rules call these subcommands; a person can run any stage by
hand with the same code (``snakemake -n -p`` prints the exact commands).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("handbone")


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None


def _progress(args) -> bool:
    return not args.quiet


def cmd_demo_data(args) -> None:
    from .synthetic import SyntheticConfig, generate

    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(SyntheticConfig)}
    out = generate(args.out, SyntheticConfig(**values), progress=_progress(args))
    log.info("synthetic data set written to %s (data root: %s)", out, out / "data")


def cmd_index(args) -> None:
    from .atomic import atomic_path
    from .data import index_data_root

    index = index_data_root(args.data_root)
    with atomic_path(args.out) as temporary:
        index.to_csv(temporary, index=False)
    counts = index["split"].value_counts().to_dict()
    log.info("indexed %s: %d train, %d test images -> %s", args.data_root, counts.get("train", 0), counts.get("test", 0), args.out)


def cmd_eda(args) -> None:
    from .data import read_index
    from .eda import run_eda

    summary = run_eda(read_index(args.index), args.out_dir, progress=_progress(args))
    log.info("EDA written to %s; outlier findings: %s", args.out_dir, summary["outlier_findings"] or "none")


def cmd_split(args) -> None:
    import pandas as pd

    from .atomic import atomic_path
    from .data import read_index
    from .outliers import excluded_images
    from .splits import make_folds, pose_strata

    strata = pose_strata(pd.read_csv(args.image_stats)) if args.stratify == "pose" else None
    folds = make_folds(read_index(args.index), args.folds, strata)
    excluded = {}
    if args.outliers:
        findings = pd.read_csv(args.outliers, keep_default_na=False).to_dict("records")
        excluded = excluded_images(findings, folds["image_name"], args.exclude_reasons, args.exclude, args.include)
    folds["excluded"] = folds["image_name"].isin(list(excluded))
    folds["exclusion_reason"] = folds["image_name"].map(excluded).fillna("")
    with atomic_path(args.out) as temporary:
        folds.to_csv(temporary, index=False)
    if args.excluded_out:
        listed = folds[folds["excluded"]].drop(columns="excluded")
        with atomic_path(args.excluded_out) as temporary:
            listed.to_csv(temporary, index=False)
    log.info(
        "%d folds over %d people -> %s; %d of %d training images excluded",
        args.folds, folds["person_id"].nunique(), args.out, len(excluded), len(folds),
    )


def cmd_preprocess(args) -> None:
    from .cache import build_cache

    build_cache(args.index, args.out, args.options, progress=_progress(args))
    log.info("preprocessing cache written to %s", args.out)


FETCH_COMMAND = "handbone fetch-weights --configfile config.yaml [--configfile <this run's config file>]"


def _model_sizes(options: dict, scales) -> tuple[int, list[int], int]:
    """A model's input size, every side its network sees (the input size,
    and in resize mode each test-time scale of it) and its batch size."""
    from .inference import scaled_size
    from .train import DEFAULT_TRAIN

    options = {**DEFAULT_TRAIN, **options}
    size = int(options["input_size"])
    sides = [size] + ([scaled_size(size, scale) for scale in scales] if options["input_mode"] == "resize" else [])
    return size, sides, int(options["batch_size"])


def cmd_check_models(args) -> None:
    from .atomic import atomic_path
    from .model import check_model, missing_weights, weights_cache_folder

    problems, missing, sizes = [], [], {}
    for name, spec in args.models.items():
        try:
            absent = missing_weights(spec)
            if absent:
                missing.append(f"models.{name}: {absent}")
                continue
            size, sides, batch_size = _model_sizes(args.options.get(name, {}), args.scales)
            sizes[name] = check_model(spec, size, sides, batch_size)
        except (ValueError, FileNotFoundError) as error:
            problems.append(f"models.{name}: {error}")
    if missing:
        problems.append(
            f"pretrained weights missing from the weights cache {weights_cache_folder()}: {'; '.join(missing)}. "
            f"Fetch them once on a machine with network: `{FETCH_COMMAND}`, "
            "then copy that folder to this machine (or `dvc add` it); training reads only the cache"
        )
    if problems:
        raise ValueError("; ".join(problems))
    with atomic_path(args.out) as temporary:
        temporary.write_text(json.dumps({"parameters": sizes}, indent=2) + "\n")
    for name, size in sizes.items():
        log.info("models.%s builds: %.1f M parameters", name, size / 1e6)


def cmd_fetch_weights(args) -> None:
    from .atomic import atomic_path
    from .config import load_config, model_specs, train_options

    config = load_config(args.configfile)
    use_weights_cache(args.weights_cache or config["weights"]["cache_dir"], online=True)
    from .model import build_model, hub_weights, weights_cache_folder

    fetched = {}
    for name, spec in model_specs(config).items():
        source = hub_weights(spec)
        if source is None:
            log.info("models.%s: no pretrained weights to fetch", name)
            continue
        # Building the model with its weights is the fetch: the library
        # downloads them into the hub cache the way it always does.
        build_model(spec, int(train_options(config, name)["input_size"]))
        if not source.cached():
            raise ValueError(f"models.{name}: {source.describe()} was loaded but is not in {weights_cache_folder()}")
        fetched[name] = {"encoder": spec["encoder"], "hub": source.describe()}
        log.info("models.%s: %s in %s", name, source.describe(), weights_cache_folder())
    with atomic_path(Path(weights_cache_folder()) / "handbone-fetched.json") as temporary:
        temporary.write_text(json.dumps({"config_files": args.configfile, "models": fetched}, indent=2) + "\n")


def cmd_train(args) -> None:
    from .devices import torch_device
    from .train import train_fold

    device = torch_device(args.threads)
    log.info("training fold %d of %s on %s", args.fold, args.model_spec, device)
    workers = max(0, args.threads - 1) if device.type == "cuda" else 0
    metrics = train_fold(
        args.cache, args.folds, args.fold, args.model_spec, args.options, args.out_dir, device, workers, _progress(args),
        pseudo_dir=args.pseudo_labels,
    )
    log.info("fold %d: best validation Dice %.4f at epoch %d", args.fold, metrics["val_dice"], metrics["best_epoch"])


def _images(args):
    """The images a predict or overlays command works on."""
    from .predict import folder_images, split_images, validation_images

    if args.images_dir:
        return folder_images(args.images_dir)
    if not args.index:
        raise ValueError("give --index (with --split) or --images-dir")
    if args.fold is not None:
        if not args.folds:
            raise ValueError("--fold needs --folds (the folds CSV)")
        return validation_images(args.index, args.folds, args.fold)
    return split_images(args.index, args.split)


def cmd_predict(args) -> None:
    from .devices import torch_device
    from .predict import predict_images

    device = torch_device(args.threads)
    images = _images(args)
    predict_images(
        images, args.checkpoints, args.out_dir, args.preprocess, device, args.hflip, _progress(args),
        args.scales, args.overlap, args.batch_size, description=f"predict {len(images)} images",
    )
    log.info("probability maps of %d images written to %s", len(images), args.out_dir)


def cmd_pseudo_label(args) -> None:
    from .devices import torch_device
    from .pseudo import write_pseudo_labels

    device = torch_device(args.threads)
    write_pseudo_labels(
        args.index, args.checkpoints, args.out_dir, args.preprocess, device, args.confidence, args.pixel_confidence,
        args.ignore_uncertain, _progress(args),
        hflip=args.hflip, scales=args.scales, overlap=args.overlap, batch_size=args.batch_size,
    )


def cmd_compare_rounds(args) -> None:
    from .atomic import atomic_path
    from .classes import CLASSES
    from .figures import per_class_dice
    from .rounds import compare_rounds

    table = compare_rounds(args.oof_tables, args.holdout_tables, args.labels)
    with atomic_path(args.out) as temporary:
        table.to_csv(temporary, index=False, float_format="%.6f")
    if args.figure:
        scores = table[table["scored_on"].isin(["OOF", "held-out"])].dropna(subset=CLASSES)
        rows = {f"round {row['round']}, {row['scored_on']}": row[CLASSES].to_numpy(dtype=float) for _, row in scores.iterrows()}
        per_class_dice(rows, Path(args.figure), "Dice per class of each pseudo-labelling round")
    for _, row in table.iterrows():
        log.info("round %d, %s: mean Dice %.4f", row["round"], row["scored_on"], row["mean_dice"])


def _postprocess_params(args):
    """The frozen post-processing of --params, or one --threshold."""
    from .postprocess import PostprocessParams

    return PostprocessParams.load(args.params) if args.params else PostprocessParams.plain(args.threshold)


def cmd_overlays(args) -> None:
    from .overlays import write_overlays
    from .probmaps import map_filename

    images = _images(args)
    if args.limit:
        images = images[: args.limit]
    items = []
    for name, path in images:
        map_paths = [Path(directory) / map_filename(name) for directory in args.maps]
        missing = [str(map_path) for map_path in map_paths if not map_path.is_file()]
        if missing:
            raise FileNotFoundError(f"no probability map for {name}: {', '.join(missing)}")
        items.append((name, path, map_paths))
    write_overlays(items, args.out_dir, _postprocess_params(args), args.max_side, _progress(args))
    log.info("%d overlay pictures written to %s", len(items), args.out_dir)


def cmd_ensemble(args) -> None:
    from .ensemble import ensemble_maps

    ensemble_maps(args.inputs, args.out_dir, args.weights, progress=_progress(args), workers=args.threads)
    log.info("ensemble of %d model(s) written to %s", len(args.inputs), args.out_dir)


def _oof_images(args):
    from .fitting import oof_maps

    model_dirs = {Path(folder).parent.name: Path(folder) for folder in args.oof}
    return list(model_dirs), oof_maps(args.folds, model_dirs)


def cmd_fit_ensemble(args) -> None:
    from .atomic import atomic_path
    from .fitting import fit_ensemble

    models, images = _oof_images(args)
    chosen, table = fit_ensemble(images, models, args.cache, args.mode, args.weight_step, _progress(args))
    with atomic_path(args.out) as temporary:
        temporary.write_text(json.dumps(chosen, indent=2) + "\n")
    with atomic_path(args.table) as temporary:
        table.to_csv(temporary, index=False, float_format="%.6f")
    for _, row in table.iterrows():
        log.info("OOF Dice %-22s %.4f", row["step"], row["mean_dice"])


def cmd_fit_postprocess(args) -> None:
    import pandas as pd

    from .atomic import atomic_path
    from .fitting import fit_postprocess

    models, images = _oof_images(args)
    ensemble = json.loads(Path(args.ensemble).read_text())
    params, table, kept = fit_postprocess(images, models, args.cache, ensemble, args.options, _progress(args))
    if args.ensemble_table:
        table = pd.concat([pd.read_csv(args.ensemble_table), table], ignore_index=True)
    with atomic_path(args.out) as temporary:
        temporary.write_text(json.dumps({**params.to_dict(), "steps_kept": kept, "fitted_on_images": len(images)}, indent=2) + "\n")
    with atomic_path(args.table) as temporary:
        table.to_csv(temporary, index=False, float_format="%.6f")
    for _, row in table.iterrows():
        log.info("OOF Dice %-45s %.4f", row["step"], row["mean_dice"])
    if args.figure:
        from .classes import CLASSES
        from .figures import per_class_dice

        shown = [step for step in table["step"] if step.startswith("model ")] + [table["step"].iloc[-1]]
        if "uniform ensemble" in set(table["step"]) and len(shown) > 2:
            shown.insert(-1, "uniform ensemble")
        rows = {step: table.set_index("step").loc[step, CLASSES].to_numpy(dtype=float) for step in shown}
        per_class_dice(rows, Path(args.figure), "Out-of-fold Dice per class: models, ensemble, after post-processing")
    log.info("post-processing steps kept: %s", ", ".join(name for name, value in kept.items() if value) or "none")


def cmd_submit(args) -> None:
    from .ensemble import write_submission

    write_submission(
        args.probabilities, args.index, args.out, _postprocess_params(args), progress=_progress(args), workers=args.threads
    )
    _validate(args.out, args.index)


def _validate(path, index_path) -> None:
    from .data import read_index
    from .submission import validate

    sizes = None
    if index_path:
        test = read_index(index_path, "test")
        sizes = {name: (int(h), int(w)) for name, h, w in zip(test["image_name"], test["height"], test["width"])}
    images = validate(path, sizes)
    log.info("%s is a valid submission (%d images, %d rows)", path, images, images * 29)


def cmd_validate_submission(args) -> None:
    _validate(args.submission, args.index)


def cmd_cv_summary(args) -> None:
    import pandas as pd

    from .atomic import atomic_path
    from .figures import learning_curves
    from .metrics import cv_table

    table = cv_table(args.metrics)
    with atomic_path(args.out) as temporary:
        table.to_csv(temporary, index=False, float_format="%.6f")
    for model, group in table[table["fold"] != "mean"].groupby("model"):
        log.info("%s: cross-validation Dice %.4f over %d fold(s)", model, group["val_dice"].mean(), len(group))
    if args.history:
        history = pd.concat(
            [pd.read_csv(path).assign(fold=Path(path).parent.name.removeprefix("fold")) for path in args.history],
            ignore_index=True,
        )[["fold", "epoch", "train_loss", "lr", "val_dice"]]
        if args.history_out:
            with atomic_path(args.history_out) as temporary:
                history.to_csv(temporary, index=False, float_format="%.6f")
        if args.figure:
            learning_curves(history, Path(args.figure), f"Learning curves of {', '.join(table['model'].unique())}")


def cmd_cv_combine(args) -> None:
    import pandas as pd

    from .atomic import atomic_path
    from .classes import CLASSES
    from .figures import per_class_dice

    table = pd.concat([pd.read_csv(path, dtype={"fold": str}) for path in args.tables], ignore_index=True)
    with atomic_path(args.out) as temporary:
        table.to_csv(temporary, index=False, float_format="%.6f")
    means = table[table["fold"] == "mean"].set_index("model")
    metrics = {
        model: {
            "mean_dice": float(means.loc[model, "val_dice"]),
            "folds": {row["fold"]: float(row["val_dice"]) for _, row in group[group["fold"] != "mean"].iterrows()},
        }
        for model, group in table.groupby("model", sort=False)
    }
    with atomic_path(args.metrics_out) as temporary:
        temporary.write_text(json.dumps({"cv_dice": metrics}, indent=2) + "\n")
    if args.figure:
        rows = {model: means.loc[model, CLASSES].to_numpy(dtype=float) for model in means.index}
        per_class_dice(rows, Path(args.figure), "Cross-validation Dice per class (mean over folds)")


def cmd_score(args) -> None:
    import pandas as pd

    from .atomic import atomic_path
    from .classes import CLASSES
    from .data import read_index
    from .metrics import score_submission, summarize

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.ground_truth:
        per_image = score_submission(args.submission, args.ground_truth, read_index(args.index, "test"))
        per_class, mean = summarize(per_image)
        summary = {"mean_dice": mean, "images": len(per_image)}
        log.info("held-out mean Dice %.4f over %d images", mean, len(per_image))
    else:
        # Real data: the test labels are the competition's secret. The files
        # still exist (DVC tracks them) and say so instead of holding a number.
        per_image = pd.DataFrame(columns=["image_name", *CLASSES]).set_index("image_name")
        per_class = pd.DataFrame({"class": CLASSES, "dice": [float("nan")] * len(CLASSES)})
        summary = {"mean_dice": None, "images": 0, "note": "no test labels (not the synthetic demo): no held-out score"}
        log.info("no test labels: no held-out score")
    with atomic_path(out / "holdout_per_image.csv") as temporary:
        per_image.to_csv(temporary, float_format="%.6f")
    with atomic_path(out / "holdout_per_class.csv") as temporary:
        per_class.to_csv(temporary, index=False, float_format="%.6f")
    with atomic_path(out / "holdout.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    from .synthetic import SyntheticConfig

    parser = argparse.ArgumentParser(prog="handbone", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--weights-cache", help="Hugging Face Hub cache folder of pretrained encoder weights "
                        "(default: the hub's own, HF_HUB_CACHE); only fetch-weights goes online, every other command reads it offline")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, function, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(function=function)
        return sub

    sub = command("demo-data", cmd_demo_data, "write the synthetic hand X-ray data set")
    sub.add_argument("--out", required=True, help="output folder (gets data/ and ground_truth/)")
    for field in dataclasses.fields(SyntheticConfig):
        sub.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=type(field.default), default=field.default)

    sub = command("index", cmd_index, "index and validate a data root in the competition layout")
    sub.add_argument("--data-root", required=True)
    sub.add_argument("--out", required=True, help="index CSV to write")

    sub = command("eda", cmd_eda, "per-class and per-image statistics")
    sub.add_argument("--index", required=True)
    sub.add_argument("--out-dir", required=True)

    sub = command("split", cmd_split, "cross-validation folds grouped by person ID, and the images left out of training")
    sub.add_argument("--index", required=True)
    sub.add_argument("--folds", type=int, default=5)
    sub.add_argument("--stratify", choices=["none", "pose"], default="none", help="also balance folds for bent/rotated hands")
    sub.add_argument("--image-stats", help="image_stats.csv written by eda (needed by --stratify pose)")
    sub.add_argument("--outliers", help="outliers.csv written by eda; without it no image is excluded")
    sub.add_argument("--exclude-reasons", type=_json, default=[], help="JSON list of outlier reasons that exclude an image")
    sub.add_argument("--exclude", type=_json, default=[], help="JSON list of image names always excluded")
    sub.add_argument("--include", type=_json, default=[], help="JSON list of image names never excluded (wins)")
    sub.add_argument("--out", required=True, help="folds CSV: image_name, person_id, fold, excluded, exclusion_reason")
    sub.add_argument("--excluded-out", help="also write the excluded images alone to this CSV")

    sub = command("preprocess", cmd_preprocess, "build the preprocessing cache of the training images")
    sub.add_argument("--index", required=True)
    sub.add_argument("--options", type=_json, default={}, help='preprocessing options as JSON, e.g. \'{"clahe": {"enabled": true}}\'')
    sub.add_argument("--out", required=True, help="cache folder")

    sub = command("check-models", cmd_check_models,
                  "build every configured model once with its weights and check its input sizes, before any training")
    sub.add_argument("--models", type=_json, required=True, help="JSON {name: {arch, encoder, encoder_weights, kwargs}}")
    sub.add_argument("--options", type=_json, default={},
                     help="JSON {name: training options}: input size and mode, batch size (default: the train defaults)")
    sub.add_argument("--scales", type=float, nargs="+", default=[1.0], help="test-time scales (resize-mode models see each)")
    sub.add_argument("--out", required=True)

    sub = command("fetch-weights", cmd_fetch_weights,
                  "download the configured models' pretrained encoder weights into the weights cache "
                  "(the one command that uses the network)")
    sub.add_argument("--configfile", action="append", required=True,
                     help="config file; several are merged in order as Snakemake merges them (e.g. config.yaml, "
                          "then configs/competition.yaml). The cache is weights.cache_dir unless --weights-cache is given")

    sub = command("train", cmd_train, "train one model on one fold")
    sub.add_argument("--cache", required=True)
    sub.add_argument("--folds", required=True, help="folds CSV")
    sub.add_argument("--fold", type=int, required=True)
    sub.add_argument("--model-spec", type=_json, required=True, help='JSON, e.g. \'{"arch": "Unet", "encoder": "resnet18"}\'')
    sub.add_argument("--options", type=_json, default={}, help="training options as JSON (config.yaml's train section)")
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--pseudo-labels", help="pseudo-label cache (written by pseudo-label) added to the training part")

    def image_source(sub):
        sub.add_argument("--index", help="index CSV; the images of --split (or of --fold's validation part)")
        sub.add_argument("--split", default="test", choices=["train", "test"])
        sub.add_argument("--folds", help="folds CSV (with --fold)")
        sub.add_argument("--fold", type=int, help="the training images of this fold (out-of-fold prediction)")
        sub.add_argument("--images-dir", help="instead of the index: every PNG under this folder (no labels needed)")

    def predict_options(sub):
        sub.add_argument("--preprocess", type=_json, default={}, help="preprocessing options as JSON (as for training)")
        sub.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True, help="horizontal-flip TTA")
        sub.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale TTA, e.g. 0.8 1.0 1.5")
        sub.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (patch-mode models)")
        sub.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")

    sub = command("predict", cmd_predict, "probability maps of images from one or more checkpoints (their mean)")
    image_source(sub)
    sub.add_argument("--checkpoints", nargs="+", required=True)
    predict_options(sub)
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1)

    sub = command("pseudo-label", cmd_pseudo_label,
                  "label the test images with the mean of checkpoints; write the confident ones as a training cache")
    sub.add_argument("--index", required=True, help="index CSV (its test images are labelled)")
    sub.add_argument("--checkpoints", nargs="+", required=True, help="the previous round's models of one fold")
    sub.add_argument("--confidence", type=float, default=0.85,
                     help="keep an image if the Dice the models expect of their own mask (mean over classes) is at least this")
    sub.add_argument("--pixel-confidence", type=float, default=0.9,
                     help="a pixel is sure if its probability is >= this or <= 1 - this")
    sub.add_argument("--ignore-uncertain", action=argparse.BooleanOptionalAction, default=True,
                     help="mark unsure pixels so that training leaves them out of the loss")
    predict_options(sub)
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1)

    sub = command("compare-rounds", cmd_compare_rounds, "OOF and held-out Dice per class of each pseudo-labelling round")
    sub.add_argument("--oof-tables", nargs="+", required=True, help="each round's postprocess/oof_scores.csv, round 1 first")
    sub.add_argument("--holdout-tables", nargs="+", required=True, help="each round's scores/holdout_per_class.csv")
    sub.add_argument("--labels", nargs="*", default=[], help="the pseudo-label caches (round*/labels/fold*)")
    sub.add_argument("--out", required=True)
    sub.add_argument("--figure", help="PNG of the Dice per class and round")

    sub = command("overlays", cmd_overlays, "pictures of predicted bones on their images")
    image_source(sub)
    sub.add_argument("--maps", nargs="+", required=True, help="folders of .npz maps (one per model; their mean is drawn)")
    sub.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    sub.add_argument("--params", help="params.json written by fit-postprocess (the submission's masks)")
    sub.add_argument("--threshold", type=float, default=0.5, help="without --params: one threshold, nothing removed")
    sub.add_argument("--max-side", type=int, default=1024, help="longest side of a picture in pixels")
    sub.add_argument("--out-dir", required=True)

    sub = command("ensemble", cmd_ensemble, "combine several models' probability maps, image by image")
    sub.add_argument("--inputs", nargs="+", required=True, help="folders of .npz maps, one per model (.../{model}/test)")
    sub.add_argument("--weights", help="weights.json written by fit-ensemble; without it, the uniform mean")
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1, help="images processed at once")

    def oof_source(sub):
        sub.add_argument("--oof", nargs="+", required=True, help="per model, its folder of fold*/ out-of-fold maps (.../{model}/oof)")
        sub.add_argument("--folds", required=True, help="folds CSV (excluded images are left out of the fit)")
        sub.add_argument("--cache", required=True, help="preprocessing cache (the labels)")

    sub = command("fit-ensemble", cmd_fit_ensemble, "fit ensemble weights on out-of-fold maps")
    oof_source(sub)
    sub.add_argument("--mode", choices=["uniform", "weighted", "classwise", "hard"], default="uniform")
    sub.add_argument("--weight-step", type=float, default=0.1, help="spacing of the weight grid")
    sub.add_argument("--out", required=True, help="weights.json to write")
    sub.add_argument("--table", required=True, help="CSV of OOF Dice per model and ensemble")

    sub = command("fit-postprocess", cmd_fit_postprocess, "fit thresholds and component filters on out-of-fold maps")
    oof_source(sub)
    sub.add_argument("--ensemble", required=True, help="weights.json written by fit-ensemble")
    sub.add_argument("--ensemble-table", help="fit-ensemble's CSV, put in front of this step's rows")
    sub.add_argument("--options", type=_json, default={}, help="config.yaml's postprocess section as JSON")
    sub.add_argument("--out", required=True, help="params.json to write")
    sub.add_argument("--table", required=True, help="CSV of OOF Dice after each step")
    sub.add_argument("--figure", help="PNG of the OOF Dice per class of the models and the final ensemble")

    sub = command("submit", cmd_submit, "post-process probability maps and write a validated submission CSV")
    sub.add_argument("--probabilities", required=True, help="folder of .npz maps")
    sub.add_argument("--index", required=True)
    sub.add_argument("--params", help="params.json written by fit-postprocess")
    sub.add_argument("--threshold", type=float, default=0.5, help="without --params: one threshold, nothing removed")
    sub.add_argument("--out", required=True)
    sub.add_argument("--threads", type=int, default=1, help="images processed at once")

    sub = command("validate-submission", cmd_validate_submission, "check a submission CSV")
    sub.add_argument("submission")
    sub.add_argument("--index", help="index CSV: also check every test image is present and runs fit its size")

    sub = command("cv-summary", cmd_cv_summary, "table of the folds' validation Dice per model and class")
    sub.add_argument("--metrics", nargs="+", required=True, help="metrics.json files written by train")
    sub.add_argument("--out", required=True)
    sub.add_argument("--history", nargs="*", default=[], help="history.csv files written by train (fold{k}/history.csv)")
    sub.add_argument("--history-out", help="the histories in one CSV with a fold column")
    sub.add_argument("--figure", help="PNG of the learning curves")

    sub = command("cv-combine", cmd_cv_combine, "the models' cross-validation tables in one, with metrics JSON")
    sub.add_argument("--tables", nargs="+", required=True, help="per-model tables written by cv-summary")
    sub.add_argument("--out", required=True)
    sub.add_argument("--metrics-out", required=True, help="JSON of the mean and per-fold Dice per model (DVC metrics)")
    sub.add_argument("--figure", help="PNG of the Dice per class and model")

    sub = command("score", cmd_score, "Dice of a submission against ground-truth labels")
    sub.add_argument("--submission", required=True)
    sub.add_argument("--index", required=True)
    sub.add_argument("--ground-truth", help="folder with outputs_json/ID###/<stem>.json; without it, record that there is no score")
    sub.add_argument("--out-dir", required=True)
    return parser


def use_weights_cache(folder: str | None, online: bool) -> None:
    """Point the Hugging Face Hub (through which segmentation-models-pytorch
    and timm load pretrained weights) at ``folder`` and take it offline
    unless ``online``: no job may hang on a network call. The hub reads
    these once, when first imported, so this runs before any model code;
    a caller that imported it already (main() called in-process) gets its
    read values updated too."""
    import os

    if folder:
        os.environ["HF_HUB_CACHE"] = str(Path(folder).resolve())
    os.environ["HF_HUB_OFFLINE"] = "0" if online else "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = online is False
        if folder:
            constants.HF_HUB_CACHE = os.environ["HF_HUB_CACHE"]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    use_weights_cache(args.weights_cache, online=args.command == "fetch-weights")
    from .data import DataError
    from .submission import SubmissionError

    try:
        args.function(args)
    except (DataError, SubmissionError, ValueError, FileNotFoundError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
