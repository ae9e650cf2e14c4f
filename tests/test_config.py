"""One definition per option: the schema says what it may be, config.yaml
holds its default, and a hand-run stage gets the same values and errors."""

import copy
import re
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


@pytest.mark.parametrize(
    "files",
    [["config.yaml"]] + [["config.yaml", f"configs/{path.name}"] for path in sorted((REPO / "configs").glob("*.yaml"))],
)
def test_every_shipped_config_passes_the_combination_check(files):
    values = config.load_config([REPO / name for name in files], check=False)
    assert config.contradictions(values) == []
    assert values["checks"]["allow"] == []  # none of them needs an override


def _resolved(**sections):
    """config.yaml with ``sections`` merged over it (as a --configfile is), resolved."""
    return config.resolve(config._filled(sections, copy.deepcopy(DEFAULTS)))


# Each combination refused with unify_side right: the options it names, and the figure it quotes.
HARMFUL = {
    "hflip_tta_with_unified_side": (
        {"predict": {"hflip": True}},
        ["predict.hflip: true", "preprocess.unify_side: right", "0.8367 to 0.8042", "0.27"],
    ),
    "hflip_augment_with_unified_side": (
        {"train": {"augment": {"hflip": 0.5}}},
        ["train.augment.hflip: 0.5", "preprocess.unify_side: right", "0.6291 to 0.8037"],
    ),
}


@pytest.mark.parametrize("name", sorted(HARMFUL))
def test_a_harmful_combination_is_refused_with_both_options_the_figure_and_the_override(name):
    change, named = HARMFUL[name]
    values = _resolved(**change)
    with pytest.raises(ConfigError) as error:
        config.check_combinations(values, "my.yaml")
    message = str(error.value)
    assert message.startswith("my.yaml: contradictory options")
    for text in [*named, name, "checks.allow", "docs/training.md"]:
        assert text in message, text
    # Without one-hand frames nothing is contradictory.
    assert config.contradictions(_resolved(**change, preprocess={"unify_side": "none"})) == []
    # The override lets exactly that combination through.
    allowed = _resolved(**change, checks={"allow": [name]})
    config.check_combinations(allowed)
    if name == "hflip_augment_with_unified_side":  # a forced number is taken as given
        assert config.train_options(allowed, "unet_mobilenetv3")["augment"]["hflip"] == 0.5


def test_a_model_own_flip_augmentation_is_named_and_zero_or_auto_is_fine():
    model = {**DEFAULTS["models"]["unet_mobilenetv3"], "train": {"augment": {"hflip": 1.0}}}
    found = config.contradictions(_resolved(models={"mine": model}))
    assert len(found) == 1 and found[0].startswith("models.mine.train.augment.hflip: 1.0 with preprocess.unify_side")
    for hflip in (0, 0.0, "auto"):
        model["train"]["augment"]["hflip"] = hflip
        values = _resolved(models={"unet_mobilenetv3": None, "mine": model}, train={"augment": {"hflip": 0.5}})
        # The shared 0.5 is used by no model: the only one has its own.
        assert config.contradictions(values) == []
        assert config.train_options(values, "mine")["augment"]["hflip"] == 0.0


def test_flip_augmentation_auto_is_a_probability_for_every_reader():
    assert DEFAULTS["train"]["augment"]["hflip"] == "auto"
    right, both_hands = _resolved(), _resolved(preprocess={"unify_side": "none"})
    assert config.train_options(right, "unet_mobilenetv3")["augment"]["hflip"] == 0.0
    assert config.train_options(both_hands, "unet_mobilenetv3")["augment"]["hflip"] == 0.5
    assert config.augment_hflip("auto", {"unify_side": "none"}) == config.AUTO_AUGMENT_HFLIP
    assert config.augment_hflip(0.25, {"unify_side": "right"}) == 0.25
    with pytest.raises(ConfigError, match="augment.hflip: 'sometimes' does not match"):
        config.section("train", {"augment": {"hflip": "sometimes"}}, "--options")


def test_focal_loss_with_ignored_pixels_is_refused_before_any_job_and_cannot_be_allowed():
    model = {**DEFAULTS["models"]["unet_mobilenetv3"], "train": {"loss": {"dice": 1.0, "focal": 1.0}}}
    values = _resolved(models={"focal": model}, pseudo_label={"enabled": True})
    (found,) = config.contradictions(values)
    assert found.startswith("models.focal") and "train.loss.focal" in found and "pseudo_label.ignore_uncertain" in found
    # The same definition as training's own guard (train.make_loss).
    assert config.focal_loss_problem({"focal": 1.0}, True) in found
    assert config.contradictions(_resolved(models={"focal": model}, pseudo_label={"enabled": False})) == []
    no_ignoring = {"enabled": True, "ignore_uncertain": False}
    assert config.contradictions(_resolved(models={"focal": model}, pseudo_label=no_ignoring)) == []
    with pytest.raises(ConfigError, match="checks.allow.0: 'focal_loss_with_ignored_pixels' is not one of"):
        _resolved(checks={"allow": ["focal_loss_with_ignored_pixels"]})


def test_load_config_refuses_a_contradictory_file_and_check_config_says_why(tmp_path, monkeypatch):
    from handbone.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main() sets it; restored afterwards

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"predict": {"hflip": True}}))
    with pytest.raises(ConfigError, match="predict.hflip: true with preprocess.unify_side: right"):
        config.load_config([REPO / "config.yaml", bad])
    assert main(["check-config", "--configfile", str(REPO / "config.yaml"), "--configfile", str(bad)]) == 1
    assert main(["check-config", "--configfile", str(REPO / "config.yaml")]) == 0


def _run_prediction(monkeypatch, command, *arguments):
    """``handbone COMMAND`` (predict or pseudo-label) with ``arguments``, its
    work recorded instead of done: (exit code, the options it received)."""
    from handbone import devices, predict, pseudo
    from handbone.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main() sets it; restored afterwards
    received = {}

    def predict_images(images, checkpoints, out_dir, preprocess, device, hflip, progress, *sizes, **named):
        scales, overlap, batch_size = sizes
        received.update(preprocess=preprocess, hflip=hflip, scales=scales, overlap=overlap, batch_size=batch_size)
        received["precision"] = named["precision"]

    def write_pseudo_labels(*positional, frames_path, **options):
        received.update(preprocess=positional[3], **options)

    monkeypatch.setattr(devices, "torch_device", lambda threads: "cpu")
    monkeypatch.setattr(predict, "predict_images", predict_images)
    monkeypatch.setattr(predict, "folder_images", lambda folder: [("a.png", Path(folder) / "a.png")])
    monkeypatch.setattr(pseudo, "write_pseudo_labels", write_pseudo_labels)
    if command == "predict":
        arguments = ("--images-dir", "pngs", *arguments)
    else:
        arguments = ("--index", "index.csv", *arguments)
    code = main([command, *arguments, "--checkpoints", "model.pt", "--out-dir", "maps"])
    return code, received


@pytest.mark.parametrize("command", ["predict", "pseudo-label"])
def test_prediction_commands_take_the_predict_section_as_json_resolved_as_the_workflow_does(
    command, monkeypatch, caplog
):
    caplog.set_level("INFO", logger="handbone")
    code, received = _run_prediction(monkeypatch, command, "--options", '{"scales": [0.8, 1.0]}')
    # What --options leaves out is config.yaml's; hflip auto is off with config.yaml's one-hand frames.
    assert code == 0 and received["scales"] == [0.8, 1.0] and received["hflip"] is False
    assert received["overlap"] == DEFAULTS["predict"]["overlap"] and received["precision"] == "auto"
    assert received["preprocess"] == DEFAULTS["preprocess"]
    assert "horizontal-flip TTA off: predict.hflip auto with preprocess.unify_side right" in caplog.text
    # The one resolution: the workflow's --options (common.smk) reach the command unchanged.
    workflow_options = config.predict_options(DEFAULTS["predict"], DEFAULTS["preprocess"])
    assert config.predict_options(config.section("predict", workflow_options, "--options"), DEFAULTS["preprocess"]) == (
        workflow_options
    )
    code, received = _run_prediction(monkeypatch, command, "--preprocess", '{"unify_side": "none"}')
    assert code == 0 and received["hflip"] is True and received["preprocess"]["unify_side"] == "none"
    # A forced flip with one-hand frames runs by hand, with a warning.
    code, received = _run_prediction(monkeypatch, command, "--options", '{"hflip": true}')
    assert code == 0 and received["hflip"] is True and config.HFLIP_TTA in caplog.text
    # A wrong key or value is refused with its source and name, before any work.
    caplog.clear()
    code, received = _run_prediction(monkeypatch, command, "--options", '{"scale": [1.0]}')
    assert code == 1 and received == {} and "--options (predict options)" in caplog.text and "scale" in caplog.text


def _competition(tmp_path, **changes):
    """configs/competition.yaml on the built-in demo data (its data root is
    not on this machine), with ``changes`` merged over it."""
    values = config._filled(changes, yaml.safe_load((REPO / "configs" / "competition.yaml").read_text()))
    values["data"]["root"] = None
    (tmp_path / "competition.yaml").write_text(yaml.safe_dump(values))


def test_snakemake_dry_run_of_the_competition_config_plans_no_flip_and_refuses_a_forced_one(tmp_path):
    from conftest import snakemake

    # Merged over config.yaml, as a user runs it: plans the predictions without flip TTA.
    _competition(tmp_path)
    dry_run = snakemake(tmp_path, "-n", "--cores", "2", configfile="competition.yaml", replace=False).stdout
    # The predict rules' JSON --options carry the resolved flip (auto: off with one-hand frames).
    assert '"hflip": false' in dry_run and '"hflip": true' not in dry_run and '"hflip": "auto"' not in dry_run
    members = [
        name
        for name, spec in yaml.safe_load((REPO / "configs" / "competition.yaml").read_text())["models"].items()
        if spec
    ]
    assert re.search(rf"^predict_test\s+{len(members)}$", dry_run, re.MULTILINE)
    # Flip TTA forced on: stopped while the workflow is read, before any job.
    _competition(tmp_path, predict={"hflip": True})
    result = snakemake(tmp_path, "-n", "--cores", "2", configfile="competition.yaml", replace=False, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "predict.hflip: true with preprocess.unify_side: right" in output
    assert "hflip_tta_with_unified_side" in output and "0.8042" in output and "Job stats" not in output
    # The override, here given with --config, lets it plan the flip.
    override = ["--config", "checks={allow: [hflip_tta_with_unified_side]}"]
    dry_run = snakemake(tmp_path, "-n", "--cores", "2", *override, configfile="competition.yaml", replace=False).stdout
    assert '"hflip": true' in dry_run and '"hflip": false' not in dry_run
    assert not (tmp_path / "results").exists()
