"""config.yaml as the workflow reads it, for the Snakefile and for commands
run outside it.

Each option is defined once: the schema (workflow/schemas/config.schema.yaml)
says what it may be and what it means, the checkout's config.yaml holds its
default (and is the parameter file DVC tracks). ``resolve`` completes a
config with those defaults and checks it; ``section`` does the same for
one section handed to a ``handbone`` command as JSON, so a stage run by
hand gets the same defaults and the same errors as a workflow run. Code
reads resolved values and carries no fallback of its own.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
from pathlib import Path

from .errors import ConfigError, MissingInput

log = logging.getLogger("handbone")

WORKFLOW = Path(__file__).resolve().parents[1]
SCHEMA = WORKFLOW / "schemas" / "config.schema.yaml"
DEFAULTS = WORKFLOW.parent / "config.yaml"


@functools.cache
def schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


@functools.cache
def _defaults() -> dict:
    import yaml

    if not DEFAULTS.is_file():
        raise MissingInput(f"{DEFAULTS}: the default config is missing (handbone runs from a checkout of the workflow)")
    config = yaml.safe_load(DEFAULTS.read_text())
    _check(config, schema(), str(DEFAULTS))
    return config


def default(dotted: str):
    """The default of one option or section, e.g. ``default("predict.overlap")``."""
    value = _defaults()
    for key in dotted.split("."):
        value = value[key]
    return copy.deepcopy(value)


def subschema(dotted: str) -> dict:
    """The schema of the option or section at a dotted path."""
    node = schema()
    for key in dotted.split("."):
        node = dereferenced(node)["properties"][key]
    return dereferenced(node)


def dereferenced(node: dict) -> dict:
    reference = node.get("$ref", "")
    return {**schema()["$defs"][reference.removeprefix("#/$defs/")], **node} if reference else node


def _filled(values: dict, defaults: dict) -> dict:
    """``values`` over ``defaults``, mapping by mapping."""
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _filled(value, merged[key])
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check(instance, against: dict, source: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator({"$defs": schema()["$defs"], **against})
    errors = sorted(validator.iter_errors(instance), key=lambda error: [str(part) for part in error.absolute_path])
    if errors:
        lines = []
        for error in errors[:10]:
            where = ".".join(str(part) for part in error.absolute_path)
            lines.append(f"{where}: {error.message}" if where else error.message)
        raise ConfigError(f"{source}: " + "; ".join(lines))


def resolve(config: dict, source: str = "config") -> dict:
    """Complete ``config`` in place with config.yaml's values (every section
    but ``models``, which names the experiment's own models) and check it;
    a ConfigError names every bad option (at most 10)."""
    for key, value in _defaults().items():
        if key != "models":
            config[key] = _filled(config.get(key, {}), value) if isinstance(value, dict) else config.get(key, value)
    _check(config, schema(), source)
    return config


def section(dotted: str, options: dict | None, source: str) -> dict:
    """One section of the config (``train``, ``preprocess``, ...) given as
    JSON to a command: completed with config.yaml's values and checked.
    ``source`` names where it came from in errors, e.g. ``--options``."""
    if not isinstance(options, (dict, type(None))):
        raise ConfigError(f"{source}: expected a JSON object of {dotted} options, got {options!r}")
    options = _filled(options or {}, default(dotted))
    _check(options, subschema(dotted), f"{source} ({dotted} options)")
    return options


def load_config(paths, check: bool = True) -> dict:
    """Config files merged in order as Snakemake merges --configfile (a
    mapping key by key, anything else replaced), then resolved and, unless
    ``check`` is off, refused where it combines options that are known to
    hurt (``check_combinations``, as the workflow does before any job)."""
    import yaml

    merged: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise MissingInput(f"config file {path} does not exist")
        merged = _filled(yaml.safe_load(Path(path).read_text()) or {}, merged)
    source = " + ".join(str(path) for path in paths)
    resolved = resolve(merged, source)
    if check:
        check_combinations(resolved, source)
    return resolved


def model_specs(config: dict) -> dict[str, dict]:
    """{name: spec} of the configured models; a model set to null is left
    out (so a --configfile merged over config.yaml can drop its models)."""
    return {
        name: {key: value for key, value in spec.items() if key != "train"}
        for name, spec in config["models"].items()
        if spec is not None
    }


def train_options(config: dict, model: str) -> dict:
    """The shared train section with the model's own overrides on top (its
    augment options key by key, like the section they override), with
    augment.hflip resolved to a probability (``augment_hflip``)."""
    own = config["models"][model].get("train", {})
    options = {**config["train"], **own}
    options["augment"] = {**config["train"]["augment"], **own.get("augment", {})}
    options["augment"]["hflip"] = augment_hflip(options["augment"]["hflip"], config["preprocess"])
    return options


# train.augment.hflip auto without one-hand frames.
AUTO_AUGMENT_HFLIP = 0.5


def augment_hflip(hflip, preprocess: dict) -> float:
    """The probability of training's horizontal flip: train.augment.hflip
    (a number, taken as given, or auto) under the preprocess section. auto
    is 0.5, or 0 with unify_side right: the flip would mirror the right
    hands the networks are to learn back into left ones."""
    if hflip == "auto":
        return 0.0 if preprocess["unify_side"] == "right" else AUTO_AUGMENT_HFLIP
    return float(hflip)


def tta_hflip(hflip, preprocess: dict) -> bool:
    """Whether predictions average each image with its mirror: predict.hflip
    (true, false or auto) under the preprocess section. auto is off with
    unify_side right, as the networks then learnt right hands only and the
    mirror of a right hand is a left one (measured in docs/training.md)."""
    if hflip == "auto":
        return preprocess["unify_side"] != "right"
    return bool(hflip)


# The predict options a prediction command (predict, pseudo-label) reads;
# the section's others (overlay_test_images, extra_images) are the
# workflow's, so changing them reruns no prediction.
PREDICT_COMMAND_OPTIONS = ("hflip", "scales", "overlap", "batch_size", "precision")


def predict_options(predict: dict, preprocess: dict) -> dict:
    """The options of a prediction command, from the complete predict and
    preprocess sections: the one place their ``auto`` values are resolved
    for the workflow (common.smk hands the result to the command as its
    JSON ``--options``) and for a command run by hand
    (``predict.prediction_options``). hflip becomes true or false
    (``tta_hflip``); precision auto stays auto, as only the device decides
    it (``devices.autocast_dtype``)."""
    options = {key: copy.deepcopy(predict[key]) for key in PREDICT_COMMAND_OPTIONS}
    options["hflip"] = tta_hflip(options["hflip"], preprocess)
    return options


# Combinations of options known to hurt, by the stable name that
# checks.allow lists to run one anyway (the schema's enum of checks.allow).
HFLIP_TTA = "hflip_tta_with_unified_side"
HFLIP_AUGMENT = "hflip_augment_with_unified_side"
MEASURED = 'docs/training.md, "Measured on the demo"'


def focal_loss_problem(loss: dict, ignore_uncertain: bool) -> str | None:
    """Why a loss (train.loss weights) cannot train on pseudo-labels whose
    uncertain pixels are ignored, or None: the one definition of this check,
    used before any job (``contradictions``) and by training itself
    (``train.make_loss``, for a command run by hand)."""
    if ignore_uncertain and loss.get("focal"):
        # Its multilabel ignore_index indexes each class with the mask of
        # all classes and fails.
        return (
            "train.loss.focal with pseudo_label.ignore_uncertain: the focal loss of segmentation-models-pytorch "
            "cannot ignore pixels in multilabel mode (its ignore_index fails), so it cannot train on pseudo-labels "
            "whose uncertain pixels are ignored: drop train.loss.focal or set pseudo_label.ignore_uncertain to false"
        )
    return None


def _augment_hflips(config: dict) -> dict[str, object]:
    """{dotted option: value} of the train.augment.hflip each configured
    model trains with: its own, or else the shared one."""
    found = {}
    for model, spec in config["models"].items():
        own = (spec or {}).get("train", {}).get("augment", {})
        if spec is not None and "hflip" in own:
            found[f"models.{model}.train.augment.hflip"] = own["hflip"]
        elif spec is not None:
            found["train.augment.hflip"] = config["train"]["augment"]["hflip"]
    return found


def contradictions(config: dict) -> list[str]:
    """What the resolved ``config`` combines that is known to hurt (measured
    in docs/training.md) or cannot work, one message per problem naming the
    options, the reason, the figure and the way out; checks that
    checks.allow lists are left out."""
    allowed = set(config["checks"]["allow"])
    side = config["preprocess"]["unify_side"]
    found = []
    if side == "right" and config["predict"]["hflip"] is True and HFLIP_TTA not in allowed:
        found.append(
            f"predict.hflip: true with preprocess.unify_side: right ({HFLIP_TTA}): the networks learn right hands "
            "only and the mirror of a right hand is a left one; on the demo, averaging with the mirror pulled whole "
            "classes below 0.5 (raw OOF Dice at threshold 0.5 fell to 0.27) and the held-out Dice fell from 0.8367 "
            f"to 0.8042 ({MEASURED}). Set predict.hflip to auto (off with unify_side right) or false; to run it "
            f"anyway, add {HFLIP_TTA} to checks.allow"
        )
    flipped = {name: value for name, value in _augment_hflips(config).items() if value != "auto" and value > 0}
    if side == "right" and flipped and HFLIP_AUGMENT not in allowed:
        options = ", ".join(f"{name}: {value}" for name, value in flipped.items())
        found.append(
            f"{options} with preprocess.unify_side: right ({HFLIP_AUGMENT}): the flip mirrors the right hands the "
            "networks are to learn back into left ones and so undoes the one-hand training, which raised the "
            "held-out Dice on the demo from 0.6291 to 0.8037 (from 0.7480 to 0.8367 with the hand crop; measured "
            f"with the flip off, {MEASURED}). Set each to auto (0 with unify_side right) or 0; to run it anyway, add "
            f"{HFLIP_AUGMENT} to checks.allow"
        )
    pseudo = config["pseudo_label"]
    if pseudo["enabled"]:
        models = model_specs(config)
        for model in pseudo["models"] or models:
            if model in models:  # an unknown name is the workflow's error (common.smk)
                problem = focal_loss_problem(train_options(config, model)["loss"], pseudo["ignore_uncertain"])
                if problem:
                    found.append(f"models.{model} (pseudo-labelling round): {problem}")
    return found


def check_combinations(config: dict, source: str = "config") -> None:
    """Refuse a resolved ``config`` whose ``contradictions`` are not empty:
    one ConfigError lists them all."""
    found = contradictions(config)
    if found:
        raise ConfigError(f"{source}: contradictory options (handbone check-config):\n- " + "\n- ".join(found))


def model_spec(spec, source: str) -> dict:
    """A model entry (arch, encoder, encoder_weights, kwargs) given as JSON to
    a command, checked like an entry of the config's models section."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: expected a JSON object (arch, encoder, ...), got {spec!r}")
    _check(spec, schema()["properties"]["models"]["additionalProperties"], source)
    return spec


# -- the command line: `handbone check-config` (cli.py dispatches) --


def check_config_command(args) -> None:
    load_config(args.configfile)  # resolved, checked against the schema and for contradictions
    log.info("%s: valid, no contradictory options", " + ".join(args.configfile))


def check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=check_config_command)
    parser.add_argument(
        "--configfile",
        action="append",
        required=True,
        help="config file; several are merged in order as Snakemake merges them (e.g. config.yaml, "
        "then configs/competition.yaml)",
    )
