"""How long a run will take, before any job runs (``handbone estimate``).

The jobs are the workflow's own: Snakemake's dry run of the config (every
job with ``--forceall``, or only those still to run), each with its rule,
wildcards, threads, whether it holds a GPU, and the jobs it waits for.
Each job's seconds come from a cost table:

- per model and device (``models``): milliseconds per window of a training
  step and of a forward pass at a reference window side, and the training
  step's peak memory per batch size. ``benchmarks/models.py`` measures them
  on the user's own device (``--costs-out``); tables of published figures
  for V100 16 GB and A100 ship in ``handbone/costs/``, each figure with its
  source;
- per host (``host.yaml``): the CPU work around the networks (a job's
  start, reading and augmenting a training sample, writing an image's
  maps) and the seconds per image and per megapixel of the rules without a
  network, measured on finished runs (``benchmarks/host.py``).

A window costs in proportion to its pixels (convolutions, and windowed
attention at a fixed window size, are linear in them). The jobs are then
packed as ``snakemake --cores C --resources gpu=N`` packs them: a job
starts when the jobs it waits for are done and its threads and GPU slot
are free, the longest remaining chain first.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import config
from .errors import ConfigError, MissingInput

log = logging.getLogger(__name__)

COSTS_DIR = Path(__file__).resolve().parent / "costs"
HOST_TABLE = COSTS_DIR / "host.yaml"
# The competition's data (docs/data.md): used when data.root is set but not
# on this machine, e.g. when planning a run on a laptop.
COMPETITION_IMAGES = {"train": 800, "test": 300, "side": 2048}


@dataclass
class Job:
    """One job of the dry run."""

    jobid: int
    rule: str
    wildcards: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    threads: int = 1
    gpu: bool = False
    waits_for: set = field(default_factory=set)
    command: bool = False  # False: a target rule such as all, which runs nothing
    benchmark: str = ""  # Snakemake's record of the job's seconds, once it ran
    seconds: float = 0.0
    detail: str = ""


# ------------------------------------------------------------------ the DAG


def _split_paths(text: str) -> list[str]:
    return [part.strip() for part in text.split(", ") if part.strip()]


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of ``snakemake -n -p`` output (rule blocks with jobid, input,
    output, wildcards, threads and resources lines, then the shell command),
    each with the jobs whose outputs it reads."""
    jobs: list[Job] = []
    current = None
    for line in text.splitlines():
        header = re.match(r"^(?:local)?rule (\S+):$", line)
        if header:
            current = Job(jobid=-1, rule=header.group(1))
            jobs.append(current)
            continue
        if current is not None and line.startswith("Shell command:"):
            current.command = line.strip() != "Shell command: None"
            continue
        if current is None or not line.startswith("    "):
            if not line.strip():
                current = None
            continue
        key, _, value = line.strip().partition(": ")
        if key == "jobid":
            current.jobid = int(value)
        elif key == "input":
            current.inputs = _split_paths(value)
        elif key == "output":
            current.outputs = _split_paths(value)
        elif key == "wildcards":
            current.wildcards = dict(part.split("=", 1) for part in _split_paths(value))
        elif key == "benchmark":
            current.benchmark = value
        elif key == "threads":
            current.threads = int(value)
        elif key == "resources":
            current.gpu = any(part.strip() in ("gpu=1", "gpu=1.0") for part in value.split(","))
    producers = {}
    for job in jobs:
        for path in job.outputs:
            producers[path.rstrip("/")] = job.jobid
    for job in jobs:
        for path in job.inputs:
            producer = producers.get(path.rstrip("/"))
            if producer is None:  # a file inside an output directory
                parent = Path(path)
                while producer is None and parent != parent.parent:
                    parent = parent.parent
                    producer = producers.get(str(parent))
            if producer is not None and producer != job.jobid:
                job.waits_for.add(producer)
    return jobs


def dry_run(configfiles: list[str], cores: int, gpus: int, pending: bool, snakefile: str | None = None) -> str:
    """``snakemake -n`` of the configs in this directory: every job of the
    run (``--forceall``) or, with ``pending``, those still to run."""
    command = [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", str(cores), "--resources", f"gpu={gpus}"]
    if snakefile:
        command += ["-s", snakefile]
    command += ["--configfile", *configfiles]
    if not pending:
        command.append("--forceall")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(
            f"snakemake's dry run of {' '.join(configfiles)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout + done.stderr


# --------------------------------------------------------------- the images


@dataclass
class Images:
    train: int
    test: int
    side: float  # mean side of the frames the networks see, in pixels
    extra: dict = field(default_factory=dict)  # folder name -> images
    source: str = ""

    def megapixels(self, count: float) -> float:
        return count * self.side**2 / 1e6


def _count_images(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"))


def count_images(values: dict, train: int | None = None, test: int | None = None, side: int | None = None) -> Images:
    """The images a run works on: given (``train``, ``test``, ``side``), else
    from the data root, else the synthetic set's size (no data root), else
    the competition's (a data root that is not on this machine)."""
    root = values["data"]["root"]
    extra = {name: _count_images(Path(folder)) for name, folder in values["predict"]["extra_images"].items()}
    if root is None:
        synthetic = values["synthetic"]
        counted = Images(2 * synthetic["train_people"], 2 * synthetic["test_people"], synthetic["image_size"], extra)
        counted.source = "the synthetic set of the config (data.root null)"
    elif Path(root, "train", "DCM").is_dir():
        from .data import image_size

        train_images = sorted(Path(root, "train", "DCM").rglob("*.png"))
        if not train_images:
            raise MissingInput(f"data.root {root}: no images under train/DCM")
        height, width = image_size(train_images[0])
        counted = Images(len(train_images), _count_images(Path(root, "test", "DCM")), max(height, width), extra)
        counted.source = f"data.root {root} (the side of {train_images[0].name})"
    else:
        counted = Images(COMPETITION_IMAGES["train"], COMPETITION_IMAGES["test"], COMPETITION_IMAGES["side"], extra)
        counted.source = f"the competition's counts (data.root {root} is not on this machine)"
    if train is not None or test is not None or side is not None:
        counted = Images(
            counted.train if train is None else train,
            counted.test if test is None else test,
            counted.side if side is None else side,
            extra,
        )
        counted.source = "given on the command line"
    return counted


# --------------------------------------------------------------- cost tables


def cost_table_path(device: str) -> Path:
    """A shipped table by name (``v100-16gb``, ``a100-40gb``, ``cpu``) or a file."""
    path = Path(device)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise MissingInput(f"cost table {device} does not exist")
        return path
    shipped = COSTS_DIR / f"{device}.yaml"
    if not shipped.is_file():
        names = sorted(table.stem for table in COSTS_DIR.glob("*.yaml") if table.stem != "host")
        raise ConfigError(f"no cost table {device!r}: use one of {', '.join(names)} or a .yaml file")
    return shipped


def default_cores(device: str, gpus: int) -> int:
    """The cores an estimate assumes when none are given: with a GPU table,
    8 per GPU slot (the server it plans for, as the README's `--cores 24
    --resources gpu=3`); with a CPU table, this machine's."""
    if read_table(cost_table_path(device)).get("gpu"):
        return 8 * gpus
    return os.cpu_count() or 1


def read_table(path: Path) -> dict:
    table = yaml.safe_load(path.read_text()) or {}
    for key in ("device", "models"):
        if key not in table:
            raise ConfigError(f"cost table {path}: no {key!r}")
    return table


def model_costs(table: dict, spec: dict, name: str, table_path: Path, window: int | None = None) -> dict:
    """The table's entry of a model: the same arch and encoder, and the same
    kwargs where the entry names them (a measured table does); of several,
    the one measured at the window side nearest ``window``."""
    matches = [
        entry
        for entry in table["models"]
        if (entry["arch"], entry.get("encoder")) == (spec.get("arch"), spec.get("encoder"))
        and ("kwargs" not in entry or (entry["kwargs"] or {}) == (spec.get("kwargs") or {}))
    ]
    if matches:
        return min(matches, key=lambda entry: abs(entry["window"] - (window or entry["window"])))
    raise ConfigError(
        f"cost table {table_path} has no figures for {name} ({spec.get('arch')} / {spec.get('encoder')}): "
        f"measure them on the device with `python benchmarks/models.py --costs-out FILE` and pass --costs FILE"
    )


def _at_batch(values: dict, batch: int) -> float:
    """A per-batch figure at ``batch``: the measured one, else the nearest
    measured batch's (per window, speed changes little with batch)."""
    values = {int(key): value for key, value in values.items() if value is not None}
    if not values:
        raise ConfigError("a cost table entry has no figure for any batch size")
    return values[min(values, key=lambda measured: (abs(measured - batch), -measured))]


def peak_gib(entry: dict, batch: int, window: int) -> float | None:
    """Peak training memory at ``batch`` windows of ``window``: measured, or
    scaled from the nearest measured batch (memory beyond the weights and
    optimiser grows with batch and pixels)."""
    peaks = {int(key): value for key, value in (entry.get("train_peak_gib") or {}).items() if value is not None}
    if not peaks:
        return None
    nearest = min(peaks, key=lambda measured: abs(measured - batch))
    return peaks[nearest] * batch / nearest * (window / entry["window"]) ** 2


# ------------------------------------------------------------ job seconds


def windows_per_image(side: float, window: int, mode: str, overlap: float, scales) -> float:
    """Forward-pass windows of one image (one view), in units of ``window``
    squared: one resized input per scale, or the sliding windows."""
    from .inference import window_starts

    total = 0.0
    for scale in scales:
        if mode == "resize":
            total += scale**2
        else:
            length = max(1, round(side * scale))
            stride = max(1, int(window * (1 - overlap)))
            total += len(window_starts(max(length, window), window, stride)) ** 2
    return total


class Coster:
    """Seconds of each job from the config, the images and the tables."""

    def __init__(self, values: dict, images: Images, table: dict, table_path: Path, host: dict):
        self.values, self.images, self.table, self.table_path, self.host = values, images, table, table_path, host
        self.specs = config.model_specs(values)
        self.folds = values["cv"]["folds"]
        predict = values["predict"]
        self.hflip = config.tta_hflip(predict["hflip"], values["preprocess"])
        self.scales = list(predict["scales"])
        self.overlap = predict["overlap"]
        self.rule_costs = host.get("rules", {})
        self.on_gpu = bool(table.get("gpu"))

    def _model(self, name: str) -> tuple[dict, dict, int, str, float]:
        options = config.train_options(self.values, name)
        window = int(options["input_size"])
        entry = model_costs(self.table, self.specs[name], name, self.table_path, window)
        scale = (window / entry["window"]) ** 2
        return options, entry, window, options["input_mode"], scale

    def infer_seconds(self, name: str, images: float, scales, hflip: bool) -> float:
        """Forward passes of ``images`` images through one network."""
        _, entry, window, mode, scale = self._model(name)
        windows = windows_per_image(self.images.side, window, mode, self.overlap, scales) * (2 if hflip else 1)
        batch = int(self.values["predict"]["batch_size"])
        return images * windows * scale * _at_batch(entry["infer_ms_per_window"], batch) / 1000

    def maps_seconds(self, images: float) -> float:
        """Host work per predicted image: reading it, writing its maps."""
        return self.images.megapixels(images) * self.host["maps_s_per_mpix"]

    def train_seconds(self, name: str) -> tuple[float, str]:
        from .train import validation_epochs

        options, entry, window, mode, scale = self._model(name)
        epochs = int(options["epochs"])
        train_images = self.images.train * (self.folds - 1) / self.folds
        val_images = self.images.train / self.folds
        step = scale * _at_batch(entry["train_ms_per_window"], int(options["batch_size"])) / 1000
        # Reading and augmenting a sample: the frame's pixels (resize) or the window's.
        sample_mpix = (self.images.side**2 if mode == "resize" else window**2) / 1e6
        loader = sample_mpix * self.host["sample_s_per_mpix"]
        if self.on_gpu:  # loader workers prepare samples while the GPU steps
            epoch = train_images * max(step, loader / self.table["loader_workers"])
        else:  # the same cores do both
            epoch = train_images * (step + loader)
        validations = len(validation_epochs(epochs, int(options["val_every"]), options["val_from"]))
        validation = self.infer_seconds(name, val_images, [1.0], False)
        if not self.on_gpu:  # on a GPU the Dice is counted there, in no time beside the forward passes
            validation += self.images.megapixels(val_images) * self.host["dice_s_per_mpix"]
        seconds = self.host["job_start_s"] + self.host["model_build_s"] + epochs * epoch + validations * validation
        detail = (
            f"{epochs} epochs x {train_images:.0f} windows of {window} px, "
            f"{validations} validations of {val_images:.0f} images"
        )
        return seconds, detail

    def job_seconds(self, job: Job) -> tuple[float, str]:
        rule, wildcards = job.rule, job.wildcards
        if not job.command:
            return 0.0, "runs nothing"
        start = self.host["job_start_s"]
        if rule.startswith("train"):
            return self.train_seconds(wildcards["model"])
        if rule.startswith("predict_oof"):
            images = self.images.train / self.folds
            seconds = self.infer_seconds(wildcards["model"], images, self.scales, self.hflip)
            return start + self.host["model_build_s"] + seconds + self.maps_seconds(images), f"{images:.0f} images"
        if rule.startswith("predict_test") or rule.startswith("predict_extra"):
            images = (
                self.images.test if rule.startswith("predict_test") else self.images.extra.get(wildcards["images"], 0)
            )
            seconds = self.folds * self.infer_seconds(wildcards["model"], images, self.scales, self.hflip)
            return start + self.folds * self.host["model_build_s"] + seconds + self.maps_seconds(images), (
                f"{images} images x {self.folds} fold models"
            )
        if rule.startswith("pseudo_label"):
            # Each of the round's models' fold model on every test image.
            models = list(self.values["pseudo_label"]["models"] or self.specs)
            seconds = sum(self.infer_seconds(model, self.images.test, self.scales, self.hflip) for model in models)
            return start + len(models) * self.host["model_build_s"] + seconds + self.maps_seconds(self.images.test), (
                f"{self.images.test} images x {len(models)} models"
            )
        return self.host_rule_seconds(rule)

    def host_rule_seconds(self, rule: str) -> tuple[float, str]:
        """A rule without a network: its start plus its measured seconds per
        image and per megapixel of what it reads (``rule_units``)."""
        base = re.sub(r"_pseudo$", "", rule)
        cost = self.rule_costs.get(base)
        if cost is None:
            return self.host["rule_start_s"], "no measured cost: a job's start"
        count, megapixels, detail = rule_units(cost, self.values, self.images)
        seconds = cost["fixed_s"] + count * cost.get("s_per_image", 0.0) + megapixels * cost.get("s_per_mpix", 0.0)
        return seconds, detail


def rule_units(cost: dict, values: dict, images: Images) -> tuple[float, float, str]:
    """What a network-free rule's time grows with, by its host-table entry:
    the ``images`` it reads (train, test, all, or the test images drawn as
    overlays), times the models where it reads every model's maps
    (``per_model``): (images, megapixels, description). ``fixed: true``: a
    rule that reads tables only."""
    if cost.get("fixed"):
        return 0.0, 0.0, "fixed"
    count = {
        "train": images.train,
        "test": images.test,
        "all": images.train + images.test,
        "overlays": min(images.test, values["predict"]["overlay_test_images"]),
    }[cost.get("images", "all")]
    if cost.get("per_model"):
        count *= len(config.model_specs(values))
    return count, images.megapixels(count), f"{count} images of {images.side:.0f} px"


# ---------------------------------------------------------------- packing


def pack(jobs: list[Job], gpus: int | None, cores: int) -> float:
    """Wall seconds of the jobs run as Snakemake runs them: a job starts
    when its inputs are made and its threads (and GPU slot) are free; among
    ready jobs the one heading the longest remaining chain goes first.
    ``gpus`` None: GPU slots are not limited."""
    by_id = {job.jobid: job for job in jobs}
    waiting_on = {job.jobid: set(job.waits_for) & by_id.keys() for job in jobs}
    followers: dict[int, list[int]] = {job.jobid: [] for job in jobs}
    for job in jobs:
        for before in waiting_on[job.jobid]:
            followers[before].append(job.jobid)
    chain: dict[int, float] = {}

    def remaining(jobid: int) -> float:
        if jobid not in chain:
            chain[jobid] = by_id[jobid].seconds + max((remaining(after) for after in followers[jobid]), default=0.0)
        return chain[jobid]

    ready = [jobid for jobid, before in waiting_on.items() if not before]
    running: list[tuple[float, int]] = []
    now, free_cores, free_gpus = 0.0, cores, gpus
    done = 0
    while done < len(jobs):
        ready.sort(key=lambda jobid: -remaining(jobid))
        for jobid in list(ready):
            job = by_id[jobid]
            threads = min(job.threads, cores)
            if threads <= free_cores and (not job.gpu or free_gpus is None or free_gpus > 0):
                ready.remove(jobid)
                free_cores -= threads
                if job.gpu and free_gpus is not None:
                    free_gpus -= 1
                heapq.heappush(running, (now + job.seconds, jobid))
        if not running:
            raise RuntimeError("jobs wait on each other in a circle")
        now, jobid = heapq.heappop(running)
        job = by_id[jobid]
        free_cores += min(job.threads, cores)
        if job.gpu and free_gpus is not None:
            free_gpus += 1
        done += 1
        for after in followers[jobid]:
            waiting_on[after].discard(jobid)
            if not waiting_on[after]:
                ready.append(after)
    return now


# ---------------------------------------------------------------- report


@dataclass
class Estimate:
    jobs: list[Job]
    wall_seconds: float
    gpus: int | None
    cores: int
    table: dict
    table_path: Path
    images: Images
    memory: list[tuple[str, int, int, float | None]]  # model, batch, window, peak GiB

    def rule_rows(self) -> list[tuple[str, int, bool, float, Job]]:
        """(rule, jobs, GPU, hours in all, its longest job)."""
        rows: dict[str, list[Job]] = {}
        for job in self.jobs:
            rows.setdefault(job.rule, []).append(job)
        return [
            (
                rule,
                len(group),
                group[0].gpu,
                sum(job.seconds for job in group) / 3600,
                max(group, key=lambda job: job.seconds),
            )
            for rule, group in rows.items()
        ]

    def text(self) -> str:
        slots = "unlimited GPU slots" if self.gpus is None else f"{self.gpus} GPU slot{'s' * (self.gpus != 1)}"
        lines = [
            f"Device: {self.table['device']} (cost table {self.table_path})",
            f"Images: {self.images.train} training, {self.images.test} test, "
            f"{self.images.side:.0f} px frames ({self.images.source})",
            "",
            "| rule | jobs | GPU | hours, all jobs | hours, longest job | longest job |",
            "|---|---:|:---:|---:|---:|---|",
        ]
        for rule, count, gpu, hours, longest in self.rule_rows():
            lines.append(
                f"| {rule} | {count} | {'yes' if gpu else ''} | {hours:.2f} | {longest.seconds / 3600:.2f} | {longest.detail} |"
            )
        gpu_hours = sum(job.seconds for job in self.jobs if job.gpu) / 3600
        lines += [
            "",
            f"GPU jobs: {gpu_hours:.1f} h in all. Wall time with {slots} and {self.cores} cores: "
            f"{self.wall_seconds / 3600:.2f} h ({self.wall_seconds / 60:.1f} min).",
        ]
        limit = self.table.get("memory_gib")
        for model, batch, window, peak in self.memory:
            if peak is None:
                lines.append(f"Memory of {model}: not in the cost table.")
                continue
            verdict = ""
            if limit:
                verdict = " fits" if peak + self.table.get("context_gib", 1.0) <= limit else " DOES NOT FIT"
                verdict += f" a {limit} GB card (with {self.table.get('context_gib', 1.0)} GiB for the CUDA context)"
            lines.append(f"Memory of {model}: {peak:.1f} GiB training at batch {batch} of {window} px;{verdict}.")
        return "\n".join(lines)


def workflow_configs(configfiles: list[str]) -> list[str]:
    """The config files a run reads: config.yaml first (the Snakefile's
    configfile), then those given to snakemake."""
    given = [str(path) for path in configfiles]
    if Path("config.yaml").is_file() and not any(
        Path(path).resolve() == Path("config.yaml").resolve() for path in given
    ):
        return ["config.yaml", *given]
    return given


def estimate(
    configfiles: list[str],
    device: str,
    gpus: int | None,
    cores: int,
    pending: bool = False,
    images: Images | None = None,
    host_path: str | Path | None = None,
    snakefile: str | None = None,
) -> Estimate:
    """The jobs of the config's run with their seconds on ``device``'s
    cost table, and their wall time packed on ``gpus`` slots and ``cores``."""
    values = config.load_config(workflow_configs(configfiles))
    table_path = cost_table_path(device)
    table = read_table(table_path)
    host = yaml.safe_load(Path(host_path or HOST_TABLE).read_text())
    images = images or count_images(values)
    jobs = _jobs_of(values, configfiles, cores, gpus, pending, snakefile)
    coster = Coster(values, images, table, table_path, host)
    for job in jobs:
        job.seconds, job.detail = coster.job_seconds(job)
    memory = []
    for name in coster.specs:
        options, entry, window, _, _ = coster._model(name)
        memory.append((name, int(options["batch_size"]), window, peak_gib(entry, int(options["batch_size"]), window)))
    return Estimate(jobs, pack(jobs, gpus, cores), gpus, cores, table, table_path, images, memory)


def _jobs_of(values, configfiles, cores, gpus, pending, snakefile) -> list[Job]:
    """The dry run's jobs. A data root that is not on this machine is
    planned as an empty stand-in with the competition layout: the jobs are
    per model and fold, not per image, so the plan is the same."""
    root = values["data"]["root"]
    if root is None or Path(root, "train", "DCM").is_dir():
        return parse_dry_run(dry_run(configfiles, cores, gpus or 1, pending, snakefile))
    with tempfile.TemporaryDirectory() as stand_in:
        for split in ("train", "test"):
            Path(stand_in, split, "DCM").mkdir(parents=True)
        overlay = Path(stand_in, "data_root.yaml")
        overlay.write_text(yaml.safe_dump({"data": {"root": stand_in}}))
        return parse_dry_run(dry_run([*configfiles, str(overlay)], cores, gpus or 1, pending, snakefile))


# ------------------------------------------------------ host costs measured


def measure_host(runs: list[tuple[str | Path, list[str]]], out: str | Path, host_path: str | Path = HOST_TABLE) -> dict:
    """The host table ``host_path`` with each network-free rule's seconds
    per image and per megapixel of what it reads, above a job's start
    (``rule_start_s``), fitted on finished runs, written to ``out``
    (benchmarks/host.py). ``runs``: (results folder, its config files); a
    job's seconds are Snakemake's benchmark records, found through the dry
    run of its configs. With runs of two image sizes both terms are fitted
    (least squares, neither below 0); with one, the time per megapixel."""
    import numpy as np
    import pandas as pd

    host = yaml.safe_load(Path(host_path).read_text())
    observations: dict[str, list[tuple[float, float, float]]] = {rule: [] for rule in host["rules"]}
    for results, configfiles in runs:
        results = Path(results)
        values = config.load_config(workflow_configs(configfiles))
        images = count_images(values)
        jobs = parse_dry_run(dry_run(configfiles, cores=2, gpus=1, pending=False))
        for rule, cost in host["rules"].items():
            records = [results.parent / job.benchmark for job in jobs if job.rule == rule and job.benchmark]
            records = [record for record in records if record.is_file()]
            count, megapixels, _ = rule_units(cost, values, images)
            if records and count:
                seconds = sum(float(pd.read_csv(record, sep="\t")["s"].iloc[-1]) for record in records) / len(records)
                observations[rule].append((count, megapixels, max(0.0, seconds - host["rule_start_s"])))
    for rule, cost in host["rules"].items():
        cost["fixed_s"] = host["rule_start_s"]
        cost.pop("s_per_image", None)
        cost.pop("s_per_mpix", None)
        seen = np.array(observations[rule], dtype=float).reshape(-1, 3)
        if not len(seen):
            continue
        sizes = {round(megapixels / count, 6) for count, megapixels, _ in seen}
        if len(sizes) > 1:
            per_image, per_mpix = np.linalg.lstsq(seen[:, :2], seen[:, 2], rcond=None)[0]
            if per_image < 0 or per_mpix < 0:  # one term explains it: refit that one alone
                column = 1 if per_image < 0 else 0
                fitted = float(seen[:, column] @ seen[:, 2] / (seen[:, column] @ seen[:, column]))
                per_image, per_mpix = (0.0, fitted) if column == 1 else (fitted, 0.0)
            cost["s_per_image"], cost["s_per_mpix"] = round(float(per_image), 4), round(float(per_mpix), 4)
        else:
            cost["s_per_mpix"] = round(float(seen[:, 2].sum() / seen[:, 1].sum()), 4)
    Path(out).write_text(yaml.safe_dump(host, sort_keys=False))
    return host


# -- the command line: `handbone estimate` (cli.py dispatches) --


def estimate_command(args) -> None:
    images = None
    if args.train_images is not None or args.test_images is not None or args.image_side is not None:
        values = config.load_config(workflow_configs(args.configfile))
        images = count_images(values, args.train_images, args.test_images, args.image_side)
    result = estimate(
        args.configfile,
        args.costs,
        args.gpus,
        args.cores or default_cores(args.costs, args.gpus),
        pending=args.pending,
        images=images,
        host_path=args.host,
    )
    print(result.text())


def estimate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=estimate_command)
    parser.add_argument(
        "--configfile",
        action="append",
        required=True,
        help="config file as given to snakemake (config.yaml is read first, as the Snakefile does); repeatable",
    )
    parser.add_argument(
        "--costs",
        default="v100-16gb",
        help="cost table: v100-16gb or a100-40gb (published figures, shipped), cpu (measured on a 2-core CI "
        "machine) or a .yaml file from `python benchmarks/models.py --costs-out FILE` on your device "
        "(default: v100-16gb)",
    )
    parser.add_argument("--gpus", type=int, default=1, help="GPU slots, as --resources gpu=N (default: 1)")
    parser.add_argument(
        "--cores",
        type=int,
        help="cores, as snakemake --cores (default: 8 per GPU slot with a GPU table, the server the estimate "
        "plans for, as `--cores 24 --resources gpu=3`; this machine's with the cpu table)",
    )
    parser.add_argument(
        "--pending", action="store_true", help="only the jobs still to run here (default: the whole run, --forceall)"
    )
    parser.add_argument(
        "--train-images", type=int, help="training images (default: from data.root or the synthetic set)"
    )
    parser.add_argument("--test-images", type=int, help="test images (default: as --train-images)")
    parser.add_argument("--image-side", type=int, help="image side in pixels (default: as --train-images)")
    parser.add_argument(
        "--host",
        default=None,
        help="host cost table (default: the shipped one, measured with benchmarks/host.py on the demo)",
    )
