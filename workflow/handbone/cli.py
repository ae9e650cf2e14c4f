"""The ``handbone`` command: one subcommand per stage of the workflow.

The Snakemake rules call these subcommands; a person can run any stage by
hand with the same code (``snakemake -n -p`` prints the exact commands).
Each subcommand's arguments and the function it runs live in the module of
its stage (``<command>_arguments``, e.g. ``train.train_arguments``); this
module lists them and imports only the one named, so that a command does
not pay for importing every stage (PyTorch among them).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .arguments import use_weights_cache
from .errors import HandboneError

log = logging.getLogger("handbone")

# Each subcommand: the handbone module that defines it, and its one-line help.
COMMANDS = {
    "demo-data": ("synthetic", "write the synthetic hand X-ray data set"),
    "index": ("data", "index and validate a data root in the competition layout"),
    "eda": ("eda", "per-class and per-image statistics"),
    "split": ("splits", "cross-validation folds grouped by person ID, and the images left out of training"),
    "frames": ("frames", "each image's side and hand crop, as the networks will see it (frames.py)"),
    "preprocess": ("cache", "build the preprocessing cache of the training images"),
    "check-config": (
        "config",
        "check config files as the workflow does before any job: the schema, then the combinations of options "
        "known to hurt (refused with the reason and the measured figure; checks.allow lets one through)",
    ),
    "estimate": (
        "estimate",
        "how long the run of a config takes, before any job runs: the workflow's jobs (Snakemake's dry run), "
        "each job's hours from a table of per-window costs per model and device, and the wall time with the "
        "jobs packed on N GPUs as `snakemake --resources gpu=N` packs them (docs/gpus.md, 'How long a run takes'). "
        "Run it in the workflow's folder",
    ),
    "check-models": (
        "model",
        "build every configured model once with its weights and check its input sizes, before any training",
    ),
    "fetch-weights": (
        "model",
        "download the configured models' pretrained encoder weights into the weights cache "
        "(the one command that uses the network)",
    ),
    "train": ("train", "train one model on one fold"),
    "predict": ("predict", "probability maps of images from one or more checkpoints (their mean)"),
    "pseudo-label": (
        "pseudo",
        "label the test images with the mean of checkpoints; write the confident ones as a training cache",
    ),
    "compare-rounds": ("rounds", "OOF and held-out Dice per class of each pseudo-labelling round"),
    "overlays": ("overlays", "pictures of predicted bones on their images"),
    "ensemble": ("ensemble", "combine several models' probability maps, image by image"),
    "fit-ensemble": ("fitting", "fit ensemble weights on out-of-fold maps"),
    "fit-postprocess": ("fitting", "fit thresholds and component filters on out-of-fold maps"),
    "submit": ("submission", "post-process probability maps and write a validated submission CSV"),
    "validate-submission": ("submission", "check a submission CSV"),
    "cv-summary": ("metrics", "table of the folds' validation Dice per model and class"),
    "cv-combine": ("metrics", "the models' cross-validation tables in one, with metrics JSON"),
    "score": ("metrics", "Dice of a submission against ground-truth labels"),
    "prediction-analysis": (
        "analysis",
        "Dice against bone area, the models' agreement and worst images, from out-of-fold maps",
    ),
    "run-summary": ("summary", "the run's summary for the report's front page (.rst)"),
    "dvc-stage": (
        "dvc_stage",
        "run one DVC stage through Snakemake: first put the earlier stages' file times in order "
        "(dvc checkout does not keep them); where Snakemake has no records yet (a queued experiment's copy), "
        "rerun all the stage's jobs",
    ),
}


def arguments_function(command: str):
    """The function that adds ``command``'s arguments, from its module."""
    module = importlib.import_module(f"{__package__}.{COMMANDS[command][0]}")
    return getattr(module, command.replace("-", "_") + "_arguments")


def command_position(argv: list[str]) -> int:
    """Where in ``argv`` the subcommand stands: its first item, after the
    global options and their values, that names one (a weights cache folder
    may be called ``index``); ``len(argv)`` where none does."""
    taking_values = {
        option for action in global_options()._actions if action.nargs != 0 for option in action.option_strings
    }
    position = 0
    while position < len(argv) and argv[position] not in COMMANDS:
        position += 2 if argv[position] in taking_values else 1
    return min(position, len(argv))


def named_command(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, if any."""
    position = command_position(argv)
    return argv[position] if position < len(argv) else None


def global_options() -> argparse.ArgumentParser:
    """The options before the subcommand."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--weights-cache",
        help="Hugging Face Hub cache folder of pretrained encoder weights "
        "(default: the hub's own, HF_HUB_CACHE); only fetch-weights goes online, every other command reads it offline",
    )
    return parser


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or, given ``argv``, one in which only
    the subcommand it names has its arguments (its module alone imported)."""
    parser = argparse.ArgumentParser(prog="handbone", description=__doc__.split("\n")[0], parents=[global_options()])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = COMMANDS if argv is None else [named_command(argv)]
    for command, (_, help_text) in COMMANDS.items():
        sub = commands.add_parser(command, help=help_text, description=help_text)
        if command in chosen:
            arguments_function(command)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else list(argv)
    # The weights cache is set before the command's module (and the hub under it) is imported.
    # Without a command nothing runs: the parser prints the help or the error.
    position = command_position(argv)
    if position < len(argv):
        known, _ = global_options().parse_known_args(argv[:position])
        use_weights_cache(known.weights_cache, online=argv[position] == "fetch-weights")
    args = build_parser(argv).parse_args(argv)
    try:
        args.function(args)
    except HandboneError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
