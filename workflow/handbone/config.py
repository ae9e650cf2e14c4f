"""config.yaml as the workflow reads it: the models it configures and their
training options, for the Snakefile and for commands run outside it."""

from __future__ import annotations

from pathlib import Path

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def load_config(paths) -> dict:
    """Config files merged in order as Snakemake merges --configfile (a
    mapping key by key, anything else replaced), checked by the schema,
    with its defaults filled in."""
    import yaml
    from snakemake.utils import validate

    merged: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    validate(merged, str(SCHEMA))
    return merged


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def model_specs(config: dict) -> dict[str, dict]:
    """{name: spec} of the configured models; a model set to null is left
    out (so a --configfile merged over config.yaml can drop its models)."""
    return {
        name: {key: value for key, value in spec.items() if key != "train"}
        for name, spec in config["models"].items()
        if spec is not None
    }


def train_options(config: dict, model: str) -> dict:
    """The shared train section with the model's own overrides on top."""
    return {**config["train"], **config["models"][model].get("train", {})}
