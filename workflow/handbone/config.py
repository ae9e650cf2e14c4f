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

import copy
import functools
from pathlib import Path

from .errors import ConfigError, MissingInput

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


def load_config(paths) -> dict:
    """Config files merged in order as Snakemake merges --configfile (a
    mapping key by key, anything else replaced), then resolved."""
    import yaml

    merged: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise MissingInput(f"config file {path} does not exist")
        merged = _filled(yaml.safe_load(Path(path).read_text()) or {}, merged)
    return resolve(merged, " + ".join(str(path) for path in paths))


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
    augment options key by key, like the section they override). With
    preprocess.unify_side right the hflip augmentation is off: it would
    mirror the right hands back into left ones."""
    own = config["models"][model].get("train", {})
    options = {**config["train"], **own}
    options["augment"] = {**config["train"]["augment"], **own.get("augment", {})}
    if config["preprocess"]["unify_side"] == "right":
        options["augment"]["hflip"] = 0.0
    return options


def tta_hflip(hflip, preprocess: dict) -> bool:
    """Whether predictions average each image with its mirror: predict.hflip
    (true, false or auto) under the preprocess section. auto is off with
    unify_side right, as the networks then learnt right hands only and the
    mirror of a right hand is a left one (measured in docs/training.md)."""
    if hflip == "auto":
        return preprocess["unify_side"] != "right"
    return bool(hflip)


def model_spec(spec, source: str) -> dict:
    """A model entry (arch, encoder, encoder_weights, kwargs) given as JSON to
    a command, checked like an entry of the config's models section."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: expected a JSON object (arch, encoder, ...), got {spec!r}")
    _check(spec, schema()["properties"]["models"]["additionalProperties"], source)
    return spec
