"""The handbone command: each subcommand defined beside the code it runs,
and only the named subcommand's module imported."""

import importlib
import json
import subprocess
import sys

import pandas as pd
import pytest

from handbone import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_subcommand_is_defined_in_its_own_module(command):
    module_name, help_text = cli.COMMANDS[command]
    module = importlib.import_module(f"handbone.{module_name}")
    parser = cli.build_parser([command])
    (commands,) = [action for action in parser._actions if action.dest == "command"]
    sub = commands.choices[command]
    function = sub.get_default("function")
    assert function.__module__ == module.__name__ and getattr(module, function.__name__) is function
    assert cli.arguments_function(command).__module__ == module.__name__
    assert sub.description == help_text and len(sub._actions) > 1  # -h and its own arguments


def test_help_and_the_commands_without_networks_import_no_torch():
    """`handbone --help` lists every command without importing a stage;
    the commands that run no network build their parsers without PyTorch
    (overlays draws maps: it imports the prediction code only when it runs)."""
    script = (
        "import sys\n"
        "from handbone import cli\n"
        "for argv in (['--help'], ['-q', 'index'], ['overlays'], ['prediction-analysis'], ['fit-ensemble']):\n"
        "    try:\n"
        "        cli.build_parser(argv).parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    print(argv[-1], 'torch' in sys.modules, 'handbone.train' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert "train one model on one fold" in result.stdout
    assert lines[-5:] == [
        "--help False False",
        "index False False",
        "overlays False False",
        "prediction-analysis False False",
        "fit-ensemble False False",
    ], result.stderr[-2000:]


def test_the_subcommand_is_found_after_the_global_options_and_their_values():
    assert cli.named_command(["--weights-cache", "index", "-q", "train", "--fold", "0"]) == "train"
    assert cli.named_command(["-q", "--weights-cache"]) is None
    argv = "--weights-cache index train --cache c --folds f.csv --fold 0 --model-spec {} --out-dir o".split()
    args = cli.build_parser(argv).parse_args(argv)
    assert (args.weights_cache, args.command, args.fold) == ("index", "train", 0)


def test_fit_ensemble_takes_the_ensemble_section_as_json_and_completes_it_from_config_yaml(monkeypatch, tmp_path):
    from handbone import config, fitting

    received = {}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main() sets it; restored afterwards
    monkeypatch.setattr(fitting, "oof_inputs", lambda oof_dirs, folds_path: (["m0", "m1"], []))

    def fit_ensemble(images, models, cache_dir, mode, weight_step, progress):
        received.update(mode=mode, weight_step=weight_step)
        return {"mode": mode}, pd.DataFrame({"step": ["hard vote"], "mean_dice": [0.5]})

    monkeypatch.setattr(fitting, "fit_ensemble", fit_ensemble)
    argv = ["fit-ensemble", "--oof", "m0/oof", "m1/oof", "--folds", "f.csv", "--cache", "c"]
    argv += ["--options", '{"mode": "hard"}', "--out", str(tmp_path / "w.json"), "--table", str(tmp_path / "t.csv")]
    assert cli.build_parser(argv).parse_args(argv).options == {"mode": "hard"}
    assert cli.main(argv) == 0
    assert received == {"mode": "hard", "weight_step": config.default("ensemble.weight_step")}
    assert json.loads((tmp_path / "w.json").read_text()) == {"mode": "hard"}


def test_an_unknown_subcommand_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["trian"])
    assert "invalid choice: 'trian'" in capsys.readouterr().err
