"""One definition per option: the schema says what it may be, config.yaml
holds its default, and a hand-run stage gets the same values and errors."""

from pathlib import Path

import pytest
import yaml

from handbone import config
from handbone.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((REPO / "config.yaml").read_text())


def _options(subschema, prefix=""):
    """Dotted names of the options a section's schema defines (models and
    free-form mappings, whose keys the user chooses, left out)."""
    subschema = config.subschema(prefix) if prefix else config.schema()
    for key, child in subschema.get("properties", {}).items():
        name = f"{prefix}.{key}" if prefix else key
        if name in ("models", "train.loss", "predict.extra_images"):
            continue
        child = config.subschema(name)
        if "properties" in child:
            yield from _options(child, name)
        else:
            yield name


def test_every_option_of_the_schema_has_its_default_in_config_yaml():
    names = list(_options(config.schema()))
    assert "train.augment.rotate" in names and "postprocess.min_area_grid" in names
    for name in names:
        value = DEFAULTS
        for key in name.split("."):
            assert key in value, f"{name} has no default in config.yaml"
            value = value[key]


def test_a_section_given_by_hand_is_completed_from_config_yaml():
    options = config.section("train", {"epochs": 3, "augment": {"hflip": 0.0}}, "--options")
    assert options["epochs"] == 3 and options["lr"] == DEFAULTS["train"]["lr"]
    assert options["augment"] == {**DEFAULTS["train"]["augment"], "hflip": 0.0}
    assert config.section("preprocess", None, "--preprocess") == DEFAULTS["preprocess"]
    assert config.default("predict.overlap") == DEFAULTS["predict"]["overlap"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "epochs: 0 is less than the minimum of 1"),
        ({"augment": {"hflip": 2}}, "augment.hflip: 2 is greater than the maximum of 1"),
        ({"epoch": 5}, "'epoch' was unexpected"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_bad_section_names_its_source_and_option(options, message):
    with pytest.raises(ConfigError, match="^--options") as error:
        config.section("train", options, "--options")
    assert message in str(error.value)


def test_a_partial_config_takes_the_rest_from_config_yaml_but_not_its_models():
    resolved = config.resolve({"models": {"mine": {"arch": "nnUNet"}}, "cv": {"folds": 5}})
    assert resolved["cv"] == {**DEFAULTS["cv"], "folds": 5}
    assert resolved["train"] == DEFAULTS["train"]
    assert list(resolved["models"]) == ["mine"]
    with pytest.raises(ConfigError, match="cv.folds: 'x' is not of type 'integer'.*train.lr"):
        config.resolve({"models": {"m": {"arch": "nnUNet"}}, "cv": {"folds": "x"}, "train": {"lr": -1}})


def test_a_model_overrides_the_shared_train_options_key_by_key():
    resolved = config.resolve({"models": {"m": {"arch": "nnUNet", "train": {"lr": 0.1, "augment": {"rotate": 0}}}}})
    options = config.train_options(resolved, "m")
    assert options["lr"] == 0.1 and options["epochs"] == DEFAULTS["train"]["epochs"]
    # hflip off: the default one-hand frames would be mirrored back (config.train_options).
    assert options["augment"] == {**DEFAULTS["train"]["augment"], "rotate": 0, "hflip": 0.0}


@pytest.mark.parametrize("name", sorted(path.name for path in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid_over_config_yaml(name):
    values = config.load_config([REPO / "config.yaml", REPO / "configs" / name])
    assert values["models"]
