# Helpers shared by the rules: what the config asks for, as paths and params.
import hashlib
import json
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError

# What the config means is defined once, in the handbone package (no torch
# behind this import).
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))
from handbone import config as handbone_config
from handbone.errors import ConfigError

# Options missing from the config (e.g. a --replace-workflow-config file
# that sets only some) take config.yaml's values; the schema checks them.
# Then combinations of options known to hurt or unable to work are refused
# (handbone.config.contradictions; checks.allow lets a measured one through),
# here, so before any job and also by a dry run.
try:
    handbone_config.resolve(config)
    handbone_config.check_combinations(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# A model set to null is left out: a --configfile merged over config.yaml
# can so drop config.yaml's models (configs/competition.yaml does).
MODELS = list(handbone_config.model_specs(config))
if not MODELS:
    raise WorkflowError("models: every model is null; configure at least one")
# Pretrained encoder weights: filled once by `handbone fetch-weights`, read
# offline by the model check and training (handbone keeps the hub offline
# in every command but fetch-weights).
WEIGHTS_CACHE = config["weights"]["cache_dir"]
FOLDS = list(range(config["cv"]["folds"]))
# With no data root the synthetic demo set is generated and used.
DEMO = config["data"]["root"] is None
DATA_ROOT = "results/demo/data" if DEMO else config["data"]["root"]
if not DEMO and not os.path.isdir(os.path.join(DATA_ROOT, "train", "DCM")):
    raise WorkflowError(
        f"data.root {DATA_ROOT!r} is not a data root in the competition layout: "
        f"{os.path.join(DATA_ROOT, 'train', 'DCM')} does not exist (see docs/data.md, 'Use your own data')"
    )
# Extra image folders to predict and draw (no labels needed), by name.
EXTRA_IMAGES = dict(config["predict"]["extra_images"])
for _name, _folder in EXTRA_IMAGES.items():
    if not os.path.isdir(_folder):
        raise WorkflowError(f"predict.extra_images.{_name}: folder {_folder!r} does not exist")
# Pseudo-labelling rounds after the first (results/pseudo/round{r}/).
PSEUDO = config["pseudo_label"]
PSEUDO_ROUNDS = list(range(2, 2 + PSEUDO["rounds"])) if PSEUDO["enabled"] else []
PSEUDO_MODELS = list(PSEUDO["models"] or MODELS)
for _model in PSEUDO_MODELS:
    if _model not in MODELS:
        raise WorkflowError(f"pseudo_label.models: {_model!r} is not one of models: ({', '.join(MODELS)})")


# The tables that most rules read, each written by one rule of data.smk.
INDEX_CSV = "results/index/index.csv"
FOLDS_CSV = "results/splits/folds.csv"
FRAMES_CSV = "results/frames/frames.csv"


def round_dir(number):
    """Where a round's models, maps, ensemble and submission live."""
    return "results" if int(number) == 1 else f"results/pseudo/round{number}"


def round_models(number):
    return MODELS if int(number) == 1 else PSEUDO_MODELS


def job_round(wildcards):
    """A job's pseudo-labelling round: its {round} wildcard, or 1 for
    round 1's rules, which have none."""
    return int(wildcards.get("round", 1))


def in_round(pattern, every=()):
    """An input function for the rules every round runs, giving ``pattern``
    under the folder of the job's round (``round_dir``), its {model} and
    {fold} the job's own or, those named in ``every``, each of the round's
    models (``round_models``) or each fold (then a list). pseudo.smk's
    ``use rule`` keeps such inputs, so a round's rule names only its own
    outputs, log and benchmark."""

    def paths(wildcards):
        number = job_round(wildcards)
        choices = {"model": round_models(number), "fold": FOLDS}
        values = {
            name: choices[name] if name in every else [wildcards[name]] for name in re.findall(r"{(\w+)}", pattern)
        }
        found = expand(f"{round_dir(number)}/{pattern}", **values)
        return found if every else found[0]

    return paths


def round_pseudo_labels(wildcards):
    """What a training job adds to the fold's training images: in a
    pseudo-labelling round, the round's pseudo-labels of the fold
    (rule pseudo_label); in round 1, nothing."""
    number = job_round(wildcards)
    return [] if number == 1 else [f"results/pseudo/round{number}/labels/fold{wildcards.fold}"]


ENV = "../../envs/handbone.yaml"
# Rules run this checkout's handbone package (python -m handbone) with the
# environment's Python, so they need no install of the package (also with
# --sdm conda). HF_HUB_CACHE is where segmentation-models-pytorch and timm
# look for pretrained weights; set here rather than as a param, so moving
# the folder retrains nothing.
shell.prefix(
    # Snakemake formats the prefix like a shell command: braces are doubled.
    "set -euo pipefail; export PYTHONPATH={}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; export HF_HUB_CACHE={}; ".format(
        shlex.quote(os.path.join(workflow.basedir, "workflow")), shlex.quote(WEIGHTS_CACHE)
    )
)


wildcard_constraints:
    model="|".join(re.escape(model) for model in MODELS),
    fold=r"\d+",
    images=r"[A-Za-z0-9_-]+",
    round=r"[2-9]|[1-9]\d+",  # round 1 lives directly under results/


def as_json(value):
    """Config values handed to the CLI; sorted keys keep params stable, so a
    rerun is triggered only by a real change."""
    return json.dumps(value, sort_keys=True)


def preprocess_key():
    """The cache folder is named by its preprocessing options, so changing
    them builds a new cache beside the old one instead of overwriting it."""
    return hashlib.sha256(as_json(config["preprocess"]).encode()).hexdigest()[:10]


CACHE = f"results/cache/{preprocess_key()}"


def frame_options():
    """The preprocess options that decide an image's frame (frames.py); the
    others (CLAHE) leave the frames table as it is."""
    return {key: config["preprocess"][key] for key in ("unify_side", "crop", "crop_margin")}


def synthetic_arguments():
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(str(value))}" for key, value in sorted(config["synthetic"].items())
    )


def model_spec(model):
    return handbone_config.model_specs(config)[model]


def train_options(model):
    return handbone_config.train_options(config, model)


# A checkpoint of any round: results[/pseudo/round{r}]/models/{model}/fold{k}/model.pt.
CHECKPOINT_PATH = re.compile(r"(?:^|/)models/([^/]+)/fold\d+/model\.pt$")


def models_of_jobs(jobs):
    """{model: trained} of the models whose checkpoints ``jobs`` (Snakemake
    jobs) write (training: True) or only read (prediction, pseudo-labels:
    False), in the order of MODELS."""
    trained, read = set(), set()
    for job in jobs:
        for files, found in ((job.output, trained), (job.input, read)):
            for path in files:
                match = CHECKPOINT_PATH.search(str(path))
                if match:
                    found.add(match.group(1))
    return {model: model in trained for model in MODELS if model in trained | read}


def predict_options():
    """The predict options of the prediction commands (predict,
    pseudo-label) as their JSON --options, with auto values resolved
    (handbone.config.predict_options: hflip true or false under the
    preprocess section), so each command shows what it does; precision
    auto is left to the device."""
    return as_json(handbone_config.predict_options(config["predict"], config["preprocess"]))


def data_root_input():
    # The demo data root is a rule's output; a real one must already exist.
    return "results/demo" if DEMO else DATA_ROOT


def final_outputs():
    outputs = [
        "results/submission.csv",
        "results/eda/class_stats.csv",
        "results/cv/cv_scores.csv",
        "results/cv/metrics.json",
        FRAMES_CSV,
        "results/overlays/test",
    ]
    outputs += expand("results/cv/models/{model}/learning_curves.png", model=MODELS)
    outputs += expand("results/predictions/{model}/oof/fold{fold}", model=MODELS, fold=FOLDS)
    outputs += expand("results/overlays/extra/{images}", images=EXTRA_IMAGES)
    outputs.append("results/scores/holdout.json")
    outputs += ["results/analysis/per_class.csv", "results/report/summary.rst"]
    if PSEUDO_ROUNDS:
        outputs += [f"{round_dir(number)}/submission.csv" for number in PSEUDO_ROUNDS]
        outputs.append("results/pseudo/rounds.csv")
    return outputs
