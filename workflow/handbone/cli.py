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
import typing
from pathlib import Path

from . import config
from .errors import ConfigError, HandboneError

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
    from .data import write_index

    write_index(args.data_root, args.out)


def cmd_eda(args) -> None:
    from .data import read_index
    from .eda import run_eda

    summary = run_eda(read_index(args.index), args.out_dir, progress=_progress(args))
    log.info("EDA written to %s; outlier findings: %s", args.out_dir, summary["outlier_findings"] or "none")


def cmd_split(args) -> None:
    from .splits import write_folds

    write_folds(
        args.index,
        args.out,
        args.folds,
        args.stratify,
        args.image_stats,
        args.outliers,
        args.exclude_reasons,
        args.exclude,
        args.include,
        args.excluded_out,
    )


def cmd_frames(args) -> None:
    from .frames import write_frames

    table = write_frames(args.index, args.image_stats, args.options, args.out, progress=_progress(args))
    log.info("frames of %d images written to %s (%d mirrored)", len(table), args.out, int(table["flip"].sum()))


def cmd_preprocess(args) -> None:
    from .cache import build_cache

    build_cache(args.index, args.out, args.options, args.frames, progress=_progress(args))
    log.info("preprocessing cache written to %s", args.out)


def cmd_check_models(args) -> None:
    from .model import check_models

    if (args.models is None) == (not args.configfile):
        raise ConfigError("check-models takes either --configfile or --models (with --options and --scales)")
    if args.configfile:
        values = config.load_config(args.configfile)
        use_weights_cache(args.weights_cache or values["weights"]["cache_dir"], online=False)
        models = config.model_specs(values)
        options = {name: config.train_options(values, name) for name in models}
        scales = values["predict"]["scales"]
    else:
        models = {name: config.model_spec(spec, f"--models: models.{name}") for name, spec in args.models.items()}
        options, scales = args.options, args.scales or config.default("predict.scales")
    check_models(models, options, scales, args.out)


def cmd_check_config(args) -> None:
    config.load_config(args.configfile)  # resolved, checked against the schema and for contradictions
    log.info("%s: valid, no contradictory options", " + ".join(args.configfile))


def cmd_estimate(args) -> None:
    from . import estimate

    images = None
    if args.train_images is not None or args.test_images is not None or args.image_side is not None:
        values = config.load_config(estimate.workflow_configs(args.configfile))
        images = estimate.count_images(values, args.train_images, args.test_images, args.image_side)
    result = estimate.estimate(
        args.configfile,
        args.costs,
        args.gpus,
        args.cores or estimate.default_cores(args.costs, args.gpus),
        pending=args.pending,
        images=images,
        host_path=args.host,
    )
    print(result.text())


def cmd_fetch_weights(args) -> None:
    config_values = config.load_config(args.configfile)
    use_weights_cache(args.weights_cache or config_values["weights"]["cache_dir"], online=True)
    from .model import fetch_weights

    fetch_weights(config_values, args.configfile)


def cmd_train(args) -> None:
    from .devices import torch_device
    from .train import train_fold

    spec = config.model_spec(args.model_spec, "--model-spec")
    device = torch_device(args.threads)
    log.info("training fold %d of %s on %s", args.fold, spec, device)
    workers = max(0, args.threads - 1) if device.type == "cuda" else 0
    metrics = train_fold(
        args.cache,
        args.folds,
        args.fold,
        spec,
        args.options,
        args.out_dir,
        device,
        workers,
        _progress(args),
        pseudo_dir=args.pseudo_labels,
    )
    log.info("fold %d: best validation Dice %.4f at epoch %d", args.fold, metrics["val_dice"], metrics["best_epoch"])


def _images(args):
    """The images a predict or overlays command works on."""
    from .predict import folder_images, split_images, validation_images

    if args.images_dir:
        return folder_images(args.images_dir)
    if not args.index:
        raise ConfigError("give --index (with --split) or --images-dir")
    if args.fold is not None:
        if not args.folds:
            raise ConfigError("--fold needs --folds (the folds CSV)")
        return validation_images(args.index, args.folds, args.fold)
    return split_images(args.index, args.split)


def _prediction_options(args) -> tuple[dict, dict]:
    """The preprocess section of --preprocess and the prediction options
    of --options (the predict section), each completed with config.yaml's
    values and checked, the options' auto values resolved as the workflow
    resolves them (``config.predict_options``). What the flip TTA does, and
    why, is logged."""
    preprocess = config.section("preprocess", args.preprocess, "--preprocess")
    given = config.section("predict", args.options, "--options")
    options = config.predict_options(given, preprocess)
    flip = "on" if options["hflip"] else "off"
    if given["hflip"] == "auto":
        log.info(
            "horizontal-flip TTA %s: predict.hflip auto with preprocess.unify_side %s", flip, preprocess["unify_side"]
        )
    else:
        log.info("horizontal-flip TTA %s: predict.hflip %s", flip, json.dumps(given["hflip"]))
    if options["hflip"] and preprocess["unify_side"] == "right":
        log.warning(
            "flip TTA with one-hand frames (preprocess.unify_side right) shows networks that learnt right hands "
            "left ones; the workflow refuses it unless checks.allow names %s (docs/training.md)",
            config.HFLIP_TTA,
        )
    log.info("prediction options: %s", json.dumps(options, sort_keys=True))
    return preprocess, options


def cmd_predict(args) -> None:
    from .devices import torch_device
    from .predict import predict_images

    preprocess, options = _prediction_options(args)
    device = torch_device(args.threads)
    images = _images(args)
    predict_images(
        images,
        args.checkpoints,
        args.out_dir,
        preprocess,
        device,
        options["hflip"],
        _progress(args),
        options["scales"],
        options["overlap"],
        options["batch_size"],
        description=f"predict {len(images)} images",
        frames_path=args.frames,
        precision=options["precision"],
    )
    log.info("probability maps of %d images written to %s", len(images), args.out_dir)


def cmd_pseudo_label(args) -> None:
    from .devices import torch_device
    from .pseudo import write_pseudo_labels

    preprocess, options = _prediction_options(args)
    device = torch_device(args.threads)
    write_pseudo_labels(
        args.index,
        args.checkpoints,
        args.out_dir,
        preprocess,
        device,
        args.confidence,
        args.pixel_confidence,
        args.ignore_uncertain,
        _progress(args),
        frames_path=args.frames,
        **options,
    )


def cmd_compare_rounds(args) -> None:
    from .rounds import write_round_comparison

    write_round_comparison(args.oof_tables, args.holdout_tables, args.labels, args.out, args.figure)


def _postprocess_params(args):
    """The frozen post-processing of --params, or one --threshold."""
    from .postprocess import PostprocessParams

    return PostprocessParams.load(args.params) if args.params else PostprocessParams.plain(args.threshold)


def cmd_overlays(args) -> None:
    from .overlays import overlay_items, write_overlays

    images = _images(args)
    items = overlay_items(images[: args.limit] if args.limit else images, args.maps)
    write_overlays(items, args.out_dir, _postprocess_params(args), args.max_side, _progress(args))
    log.info("%d overlay pictures written to %s", len(items), args.out_dir)


def cmd_ensemble(args) -> None:
    from .ensemble import ensemble_maps

    ensemble_maps(args.inputs, args.out_dir, args.weights, progress=_progress(args), workers=args.threads)
    log.info("ensemble of %d model(s) written to %s", len(args.inputs), args.out_dir)


def cmd_fit_ensemble(args) -> None:
    from .fitting import write_ensemble_fit

    write_ensemble_fit(
        args.oof, args.folds, args.cache, args.mode, args.weight_step, args.out, args.table, _progress(args)
    )


def cmd_fit_postprocess(args) -> None:
    from .fitting import write_postprocess_fit

    write_postprocess_fit(
        args.oof,
        args.folds,
        args.cache,
        args.ensemble,
        args.options,
        args.out,
        args.table,
        args.ensemble_table,
        args.figure,
        _progress(args),
        args.summary,
    )


def cmd_submit(args) -> None:
    from .submission import validate_for_index, write_submission

    write_submission(
        args.probabilities,
        args.index,
        args.out,
        _postprocess_params(args),
        progress=_progress(args),
        workers=args.threads,
    )
    validate_for_index(args.out, args.index)


def cmd_validate_submission(args) -> None:
    from .submission import validate_for_index

    validate_for_index(args.submission, args.index)


def cmd_cv_summary(args) -> None:
    from .metrics import write_cv_summary

    write_cv_summary(args.metrics, args.out, args.history, args.history_out, args.figure)


def cmd_cv_combine(args) -> None:
    from .metrics import write_cv_combined

    write_cv_combined(args.tables, args.out, args.metrics_out, args.figure)


def cmd_score(args) -> None:
    from .metrics import write_holdout_scores

    write_holdout_scores(args.submission, args.index, args.ground_truth, args.out_dir)


def cmd_prediction_analysis(args) -> None:
    from .analysis import write_prediction_analysis

    write_prediction_analysis(args.oof, args.folds, args.index, args.out_dir, _progress(args))
    log.info("prediction analysis written to %s", args.out_dir)


def cmd_run_summary(args) -> None:
    from .summary import FILES, FOLDERS, write_run_summary

    write_run_summary({name: getattr(args, name) for name in (*FILES, *FOLDERS)}, args.out)
    log.info("run summary written to %s", args.out)


def cmd_dvc_stage(args) -> None:
    from .dvc_stage import run_stage

    arguments = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    run_stage(args.stage, args.after, arguments)


def _command(commands, name, function, help_text):
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(function=function)
    return sub


def image_source(sub):
    sub.add_argument("--index", help="index CSV; the images of --split (or of --fold's validation part)")
    sub.add_argument("--split", default="test", choices=["train", "test"])
    sub.add_argument("--folds", help="folds CSV (with --fold)")
    sub.add_argument("--fold", type=int, help="the training images of this fold (out-of-fold prediction)")
    sub.add_argument("--images-dir", help="instead of the index: every PNG under this folder (no labels needed)")


def predict_options(sub):
    """The options of a prediction command: two config sections as JSON,
    as training takes its own."""
    sub.add_argument(
        "--preprocess",
        type=_json,
        default={},
        metavar="JSON",
        help="preprocess section as JSON, as for training (what it leaves out: config.yaml's)",
    )
    sub.add_argument(
        "--frames", help="frames CSV (rule frames); an image it does not list gets its frame estimated from its pixels"
    )
    sub.add_argument(
        "--options",
        type=_json,
        default={},
        metavar="JSON",
        help="predict section as JSON (what it leaves out: config.yaml's): "
        + ", ".join(config.PREDICT_COMMAND_OPTIONS)
        + ', e.g. \'{"scales": [0.8, 1.0, 1.2], "precision": "float32"}\'. hflip (flip TTA) auto: on unless '
        "--preprocess mirrors every hand into a right one; precision auto: float16 on CUDA, float32 on the CPU "
        "(docs/prediction.md, 'Running it by hand')",
    )


def postprocess_source(sub, params_help: str) -> None:
    """The masks' post-processing: fitted params, else one threshold."""
    sub.add_argument("--params", help=params_help)
    sub.add_argument(
        "--threshold",
        type=float,
        default=config.default("postprocess.threshold"),
        help="without --params: one threshold, nothing removed (default: %(default)s)",
    )


def oof_source(sub):
    sub.add_argument(
        "--oof", nargs="+", required=True, help="per model, its folder of fold*/ out-of-fold maps (.../{model}/oof)"
    )
    sub.add_argument("--folds", required=True, help="folds CSV (excluded images are left out of the fit)")
    sub.add_argument("--cache", required=True, help="preprocessing cache (the labels)")


def _data_commands(commands) -> None:
    """The data stages: demo data, index, EDA, folds, preprocessing cache."""
    from .synthetic import SyntheticConfig

    sub = _command(commands, "demo-data", cmd_demo_data, "write the synthetic hand X-ray data set")
    sub.add_argument("--out", required=True, help="output folder (gets data/ and ground_truth/)")
    # The annotations, not the defaults' types: a float option may default to a whole number in config.yaml.
    types = typing.get_type_hints(SyntheticConfig)
    for field in dataclasses.fields(SyntheticConfig):
        sub.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=types[field.name],
            default=field.default,
            help=f"synthetic.{field.name} (default: %(default)s)",
        )

    sub = _command(commands, "index", cmd_index, "index and validate a data root in the competition layout")
    sub.add_argument("--data-root", required=True)
    sub.add_argument("--out", required=True, help="index CSV to write")

    sub = _command(commands, "eda", cmd_eda, "per-class and per-image statistics")
    sub.add_argument("--index", required=True)
    sub.add_argument("--out-dir", required=True)

    sub = _command(
        commands, "split", cmd_split, "cross-validation folds grouped by person ID, and the images left out of training"
    )
    sub.add_argument("--index", required=True)
    sub.add_argument(
        "--folds", type=int, default=config.default("cv.folds"), help="number of folds (default: %(default)s)"
    )
    sub.add_argument(
        "--stratify",
        choices=["none", "pose"],
        default="none",
        help="pose: also balance folds for bent/rotated hands, from --image-stats "
        "(the workflow passes cv.stratify; by hand, without image stats: none)",
    )
    sub.add_argument("--image-stats", help="image_stats.csv written by eda (needed by --stratify pose)")
    sub.add_argument("--outliers", help="outliers.csv written by eda; without it no image is excluded")
    sub.add_argument(
        "--exclude-reasons",
        type=_json,
        default=config.default("outliers.exclude_reasons"),
        help="JSON list of outlier reasons that exclude an image (default: outliers.exclude_reasons of config.yaml)",
    )
    sub.add_argument(
        "--exclude",
        type=_json,
        default=config.default("outliers.exclude"),
        help="JSON list of image names always excluded",
    )
    sub.add_argument(
        "--include",
        type=_json,
        default=config.default("outliers.include"),
        help="JSON list of image names never excluded (wins)",
    )
    sub.add_argument("--out", required=True, help="folds CSV: image_name, person_id, fold, excluded, exclusion_reason")
    sub.add_argument("--excluded-out", help="also write the excluded images alone to this CSV")

    sub = _command(
        commands, "frames", cmd_frames, "each image's side and hand crop, as the networks will see it (frames.py)"
    )
    sub.add_argument("--index", required=True)
    sub.add_argument("--image-stats", required=True, help="the EDA's image_stats.csv (the side from the labels)")
    sub.add_argument(
        "--options", type=_json, default={}, help="preprocess section as JSON (what it leaves out: config.yaml's)"
    )
    sub.add_argument("--out", required=True, help="frames CSV")

    sub = _command(commands, "preprocess", cmd_preprocess, "build the preprocessing cache of the training images")
    sub.add_argument("--index", required=True)
    sub.add_argument(
        "--options",
        type=_json,
        default={},
        help='preprocess section as JSON, e.g. \'{"clahe": {"enabled": false}}\' (what it leaves out: config.yaml\'s)',
    )
    sub.add_argument("--frames", help="frames CSV (rule frames); without it each image's frame is estimated from it")
    sub.add_argument("--out", required=True, help="cache folder")


def _config_commands(commands) -> None:
    """The config check the workflow runs before any job."""
    sub = _command(
        commands,
        "check-config",
        cmd_check_config,
        "check config files as the workflow does before any job: the schema, then the combinations of options "
        "known to hurt (refused with the reason and the measured figure; checks.allow lets one through)",
    )
    sub.add_argument(
        "--configfile",
        action="append",
        required=True,
        help="config file; several are merged in order as Snakemake merges them (e.g. config.yaml, "
        "then configs/competition.yaml)",
    )
    sub = _command(
        commands,
        "estimate",
        cmd_estimate,
        "how long the run of a config takes, before any job runs: the workflow's jobs (Snakemake's dry run), "
        "each job's hours from a table of per-window costs per model and device, and the wall time with the "
        "jobs packed on N GPUs as `snakemake --resources gpu=N` packs them (docs/gpus.md, 'How long a run takes'). "
        "Run it in the workflow's folder",
    )
    sub.add_argument(
        "--configfile",
        action="append",
        required=True,
        help="config file as given to snakemake (config.yaml is read first, as the Snakefile does); repeatable",
    )
    sub.add_argument(
        "--costs",
        default="v100-16gb",
        help="cost table: v100-16gb or a100-40gb (published figures, shipped), cpu (measured on a 2-core CI "
        "machine) or a .yaml file from `python benchmarks/models.py --costs-out FILE` on your device "
        "(default: v100-16gb)",
    )
    sub.add_argument("--gpus", type=int, default=1, help="GPU slots, as --resources gpu=N (default: 1)")
    sub.add_argument(
        "--cores",
        type=int,
        help="cores, as snakemake --cores (default: 8 per GPU slot with a GPU table, the server the estimate "
        "plans for, as `--cores 24 --resources gpu=3`; this machine's with the cpu table)",
    )
    sub.add_argument(
        "--pending", action="store_true", help="only the jobs still to run here (default: the whole run, --forceall)"
    )
    sub.add_argument("--train-images", type=int, help="training images (default: from data.root or the synthetic set)")
    sub.add_argument("--test-images", type=int, help="test images (default: as --train-images)")
    sub.add_argument("--image-side", type=int, help="image side in pixels (default: as --train-images)")
    sub.add_argument(
        "--host",
        default=None,
        help="host cost table (default: the shipped one, measured with benchmarks/host.py on the demo)",
    )


def _model_commands(commands) -> None:
    """Models: the check before training, the weights cache, training."""
    sub = _command(
        commands,
        "check-models",
        cmd_check_models,
        "build every configured model once with its weights and check its input sizes, before any training",
    )
    sub.add_argument(
        "--configfile",
        action="append",
        help="config file(s), merged in order as for fetch-weights (e.g. config.yaml, then configs/second_team.yaml): "
        "check every model they configure with its training options and test-time scales, reading the weights "
        "cache weights.cache_dir unless --weights-cache is given. Instead of --models",
    )
    sub.add_argument(
        "--models", type=_json, help="JSON {name: {arch, encoder, encoder_weights, kwargs}} (the workflow's gate)"
    )
    sub.add_argument(
        "--options",
        type=_json,
        default={},
        help="with --models: JSON {name: training options}: input size and mode, batch size "
        "(what they leave out: config.yaml's)",
    )
    sub.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help=f"with --models: test-time scales (resize-mode models see each; default: {config.default('predict.scales')})",
    )
    sub.add_argument("--out", help="JSON file for {parameters: {model: count}} (default: none written)")

    sub = _command(
        commands,
        "fetch-weights",
        cmd_fetch_weights,
        "download the configured models' pretrained encoder weights into the weights cache "
        "(the one command that uses the network)",
    )
    sub.add_argument(
        "--configfile",
        action="append",
        required=True,
        help="config file; several are merged in order as Snakemake merges them (e.g. config.yaml, "
        "then configs/competition.yaml). The cache is weights.cache_dir unless --weights-cache is given",
    )

    sub = _command(commands, "train", cmd_train, "train one model on one fold")
    sub.add_argument("--cache", required=True)
    sub.add_argument("--folds", required=True, help="folds CSV")
    sub.add_argument("--fold", type=int, required=True)
    sub.add_argument(
        "--model-spec", type=_json, required=True, help='JSON, e.g. \'{"arch": "Unet", "encoder": "resnet18"}\''
    )
    sub.add_argument(
        "--options",
        type=_json,
        default={},
        help="train section as JSON, e.g. '{\"epochs\": 5}' (what it leaves out: config.yaml's)",
    )
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--pseudo-labels", help="pseudo-label cache (written by pseudo-label) added to the training part")


def _predict_commands(commands) -> None:
    """Probability maps, pseudo-labels and overlay pictures."""
    sub = _command(
        commands, "predict", cmd_predict, "probability maps of images from one or more checkpoints (their mean)"
    )
    image_source(sub)
    sub.add_argument("--checkpoints", nargs="+", required=True)
    predict_options(sub)
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1)

    sub = _command(
        commands,
        "pseudo-label",
        cmd_pseudo_label,
        "label the test images with the mean of checkpoints; write the confident ones as a training cache",
    )
    sub.add_argument("--index", required=True, help="index CSV (its test images are labelled)")
    sub.add_argument("--checkpoints", nargs="+", required=True, help="the previous round's models of one fold")
    sub.add_argument(
        "--confidence",
        type=float,
        default=config.default("pseudo_label.confidence"),
        help="keep an image if the Dice the models expect of their own mask (mean over classes) is at least this "
        "(default: %(default)s)",
    )
    sub.add_argument(
        "--pixel-confidence",
        type=float,
        default=config.default("pseudo_label.pixel_confidence"),
        help="a pixel is sure if its probability is >= this or <= 1 - this (default: %(default)s)",
    )
    sub.add_argument(
        "--ignore-uncertain",
        action=argparse.BooleanOptionalAction,
        default=config.default("pseudo_label.ignore_uncertain"),
        help="mark unsure pixels so that training leaves them out of the loss (default: %(default)s)",
    )
    predict_options(sub)
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1)

    sub = _command(
        commands, "compare-rounds", cmd_compare_rounds, "OOF and held-out Dice per class of each pseudo-labelling round"
    )
    sub.add_argument(
        "--oof-tables", nargs="+", required=True, help="each round's postprocess/oof_scores.csv, round 1 first"
    )
    sub.add_argument("--holdout-tables", nargs="+", required=True, help="each round's scores/holdout_per_class.csv")
    sub.add_argument("--labels", nargs="*", default=[], help="the pseudo-label caches (round*/labels/fold*)")
    sub.add_argument("--out", required=True)
    sub.add_argument("--figure", help="PNG of the Dice per class and round")

    sub = _command(commands, "overlays", cmd_overlays, "pictures of predicted bones on their images")
    image_source(sub)
    sub.add_argument(
        "--maps", nargs="+", required=True, help="folders of .npz maps (one per model; their mean is drawn)"
    )
    sub.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    postprocess_source(sub, "params.json written by fit-postprocess (the submission's masks)")
    sub.add_argument("--max-side", type=int, default=1024, help="longest side of a picture in pixels")
    sub.add_argument("--out-dir", required=True)


def _ensemble_commands(commands) -> None:
    """Ensembling, fitting on out-of-fold maps, the submission."""
    sub = _command(commands, "ensemble", cmd_ensemble, "combine several models' probability maps, image by image")
    sub.add_argument(
        "--inputs", nargs="+", required=True, help="folders of .npz maps, one per model (.../{model}/test)"
    )
    sub.add_argument("--weights", help="weights.json written by fit-ensemble; without it, the uniform mean")
    sub.add_argument("--out-dir", required=True)
    sub.add_argument("--threads", type=int, default=1, help="images processed at once")

    sub = _command(commands, "fit-ensemble", cmd_fit_ensemble, "fit ensemble weights on out-of-fold maps")
    oof_source(sub)
    sub.add_argument(
        "--mode",
        choices=["uniform", "weighted", "classwise", "hard"],
        default=config.default("ensemble.mode"),
        help="how the maps are combined (default: %(default)s)",
    )
    sub.add_argument(
        "--weight-step",
        type=float,
        default=config.default("ensemble.weight_step"),
        help="spacing of the weight grid (default: %(default)s)",
    )
    sub.add_argument("--out", required=True, help="weights.json to write")
    sub.add_argument("--table", required=True, help="CSV of OOF Dice per model and ensemble")

    sub = _command(
        commands, "fit-postprocess", cmd_fit_postprocess, "fit thresholds and component filters on out-of-fold maps"
    )
    oof_source(sub)
    sub.add_argument("--ensemble", required=True, help="weights.json written by fit-ensemble")
    sub.add_argument("--ensemble-table", help="fit-ensemble's CSV, put in front of this step's rows")
    sub.add_argument(
        "--options", type=_json, default={}, help="postprocess section as JSON (what it leaves out: config.yaml's)"
    )
    sub.add_argument("--out", required=True, help="params.json to write")
    sub.add_argument("--table", required=True, help="CSV of OOF Dice after each step")
    sub.add_argument("--figure", help="PNG of the OOF Dice per class of the models and the final ensemble")
    sub.add_argument(
        "--summary", help="JSON of the mean OOF Dice per model, of the fitted ensemble and after post-processing"
    )

    sub = _command(commands, "submit", cmd_submit, "post-process probability maps and write a validated submission CSV")
    sub.add_argument("--probabilities", required=True, help="folder of .npz maps")
    sub.add_argument("--index", required=True)
    postprocess_source(sub, "params.json written by fit-postprocess")
    sub.add_argument("--out", required=True)
    sub.add_argument("--threads", type=int, default=1, help="images processed at once")

    sub = _command(commands, "validate-submission", cmd_validate_submission, "check a submission CSV")
    sub.add_argument("submission")
    sub.add_argument("--index", help="index CSV: also check every test image is present and runs fit its size")


def _score_commands(commands) -> None:
    """Cross-validation tables and held-out scores."""
    sub = _command(commands, "cv-summary", cmd_cv_summary, "table of the folds' validation Dice per model and class")
    sub.add_argument("--metrics", nargs="+", required=True, help="metrics.json files written by train")
    sub.add_argument("--out", required=True)
    sub.add_argument(
        "--history", nargs="*", default=[], help="history.csv files written by train (fold{k}/history.csv)"
    )
    sub.add_argument("--history-out", help="the histories in one CSV with a fold column")
    sub.add_argument("--figure", help="PNG of the learning curves")

    sub = _command(
        commands, "cv-combine", cmd_cv_combine, "the models' cross-validation tables in one, with metrics JSON"
    )
    sub.add_argument("--tables", nargs="+", required=True, help="per-model tables written by cv-summary")
    sub.add_argument("--out", required=True)
    sub.add_argument("--metrics-out", required=True, help="JSON of the mean and per-fold Dice per model (DVC metrics)")
    sub.add_argument("--figure", help="PNG of the Dice per class and model")

    sub = _command(commands, "score", cmd_score, "Dice of a submission against ground-truth labels")
    sub.add_argument("--submission", required=True)
    sub.add_argument("--index", required=True)
    sub.add_argument(
        "--ground-truth", help="folder with outputs_json/ID###/<stem>.json; without it, record that there is no score"
    )
    sub.add_argument("--out-dir", required=True)


def _analysis_commands(commands) -> None:
    """The prediction analysis and the report's front page."""
    from .summary import FILES, FOLDERS

    sub = _command(
        commands,
        "prediction-analysis",
        cmd_prediction_analysis,
        "Dice against bone area, the models' agreement and worst images, from out-of-fold maps",
    )
    sub.add_argument(
        "--oof", nargs="+", required=True, help="per model, its folder of fold*/ out-of-fold maps (.../{model}/oof)"
    )
    sub.add_argument("--folds", required=True, help="folds CSV (excluded images are left out)")
    sub.add_argument("--index", required=True, help="index CSV (the labels, rasterised in the image's own frame)")
    sub.add_argument("--out-dir", required=True)

    sub = _command(commands, "run-summary", cmd_run_summary, "the run's summary for the report's front page (.rst)")
    for name, help_text in FILES.items():
        sub.add_argument(f"--{name.replace('_', '-')}", required=True, help=help_text)
    for name, help_text in FOLDERS.items():
        sub.add_argument(f"--{name.replace('_', '-')}", nargs="*", default=[], help=help_text)
    sub.add_argument("--out", required=True, help="reStructuredText file to write")


def _dvc_commands(commands) -> None:
    """The command of every DVC stage (dvc.yaml)."""
    sub = _command(
        commands,
        "dvc-stage",
        cmd_dvc_stage,
        "run one DVC stage through Snakemake: first put the earlier stages' file times in order "
        "(dvc checkout does not keep them); where Snakemake has no records yet (a queued experiment's copy), "
        "rerun all the stage's jobs",
    )
    sub.add_argument(
        "--stage",
        required=True,
        help="the DVC stage's name (train@<model>, ...): its first run in a checkout is recorded",
    )
    sub.add_argument(
        "--after",
        nargs="+",
        default=[],
        metavar="RULE_OR_FILE",
        help="the last rules or files of earlier stages that this one reads; they and what they come from are "
        "touched (snakemake --touch --until ...) before the stage runs. Name no rule together with one it "
        "depends on: Snakemake 9.27 then stops with 'BUG: Out of jobs ready to be started'",
    )
    sub.add_argument(
        "snakemake_args", nargs=argparse.REMAINDER, help="after --: the stage's snakemake arguments (targets, --until)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handbone", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--weights-cache",
        help="Hugging Face Hub cache folder of pretrained encoder weights "
        "(default: the hub's own, HF_HUB_CACHE); only fetch-weights goes online, every other command reads it offline",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _config_commands(commands)
    _data_commands(commands)
    _model_commands(commands)
    _predict_commands(commands)
    _ensemble_commands(commands)
    _score_commands(commands)
    _analysis_commands(commands)
    _dvc_commands(commands)
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
    try:
        args.function(args)
    except HandboneError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
