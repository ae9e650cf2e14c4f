"""The handbone command: each subcommand defined beside the code it runs,
and only the named subcommand's module imported."""

import importlib
import subprocess
import sys

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


def test_help_and_a_light_command_import_no_torch():
    """`handbone --help` lists every command without importing a stage;
    `handbone index` builds its parser without PyTorch."""
    script = (
        "import sys\n"
        "from handbone import cli\n"
        "for argv in (['--help'], ['-q', 'index', '--data-root', 'd', '--out', 'o']):\n"
        "    try:\n"
        "        cli.build_parser(argv).parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    print(argv[0], 'torch' in sys.modules, 'handbone.train' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert "train one model on one fold" in result.stdout
    assert lines[-2:] == ["--help False False", "-q False False"]


def test_an_unknown_subcommand_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["trian"])
    assert "invalid choice: 'trian'" in capsys.readouterr().err
