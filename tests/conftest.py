"""Shared test helpers: pretrained encoder weights in a Hugging Face Hub cache
that the tests build themselves (nothing is downloaded), and running the
real Snakefile on a tiny configuration."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

# A small timm encoder with pretrained weights on the hub, as the tests'
# pretrained model names it.
TIMM_ENCODER = "mobilenetv3_small_050"
TIMM_REPO = "timm/mobilenetv3_small_050.lamb_in1k"


def fill_hub_cache(cache: Path, repo_id: str, files: dict, revision: str | None = None) -> Path:
    """Put ``files`` ({name: state dict or JSON-able dict}) where the hub
    cache keeps ``repo_id`` at ``revision`` (a commit hash; None: the main
    branch); return the snapshot folder. The hub's own layout:
    models--<org>--<name>/snapshots/<commit>/<file> and refs/<branch>."""
    from safetensors.torch import save_file

    commit = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    if revision is None:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
    for name, content in files.items():
        if name.endswith(".safetensors"):
            save_file({key: value.contiguous() for key, value in content.items()}, snapshot / name)
        else:
            (snapshot / name).write_text(json.dumps(content))
    return snapshot


def recognisable_weights(state: dict, seed: int = 7) -> dict:
    """Values no random initialisation gives, so loading them can be seen."""
    generator = torch.Generator().manual_seed(seed)
    return {
        key: torch.randn(value.shape, generator=generator).to(value.dtype) if value.is_floating_point() else value
        for key, value in state.items()
    }


@pytest.fixture(scope="session")
def pretrained_cache(tmp_path_factory):
    """A hub cache holding ImageNet-style weights of the timm encoder
    (the whole classifier network, as timm publishes it)."""
    import timm

    cache = tmp_path_factory.mktemp("weights")
    weights = recognisable_weights(timm.create_model(TIMM_ENCODER).state_dict())
    fill_hub_cache(cache, TIMM_REPO, {"model.safetensors": weights})
    return cache, weights


REPO = Path(__file__).resolve().parents[1]
# The repository's config.yaml with a tiny data set and model. Snakemake
# merges --configfile into config.yaml key by key, which would keep the
# default model; --replace-workflow-config makes this the whole config.
TINY_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
TINY_CONFIG["synthetic"].update(train_people=4, test_people=1, image_size=128, seed=5)
TINY_CONFIG["cv"]["folds"] = 2
TINY_CONFIG["train"].update(input_size=64, epochs=1, batch_size=2, val_every=1, warmup_epochs=0)
TINY_CONFIG["models"] = {
    "tiny": {
        "arch": "Unet",
        "encoder": "tu-mobilenetv3_small_050",
        "encoder_weights": None,
        "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
    }
}


def copy_repository(root: Path, config: dict) -> Path:
    """This checkout's files (tracked, or untracked and not ignored) copied
    to ``root``, with ``config`` as its config.yaml: for tools that read
    config.yaml itself (DVC) or do not pass --replace-workflow-config on to
    remote jobs (the SLURM executor)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def snakemake_command(workdir, *arguments, configfile="tiny.yaml", replace=True):
    """The command line (and environment) that runs the Snakefile in
    ``workdir`` with ``configfile`` as the whole config, or with
    ``replace=False`` merged over config.yaml."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / configfile),
        *(["--replace-workflow-config"] if replace else []),
        *arguments,
    ]
    return command, environment


def snakemake(workdir, *arguments, check=True, configfile="tiny.yaml", replace=True):
    """Run ``snakemake_command`` to its end; fail with its output unless it succeeds or ``check`` is off."""
    command, environment = snakemake_command(workdir, *arguments, configfile=configfile, replace=replace)
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(output):
    """The job counts table that `snakemake -n` prints, as {rule: count}."""
    return dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The tiny workflow run once for the session (end-to-end tests read it;
    those that would change its results work on a copy): the demo chain plus an extra image
    folder of odd sizes and PNG modes, predicted and drawn."""
    import numpy as np
    from PIL import Image

    workdir = tmp_path_factory.mktemp("run")
    extra = workdir / "extra"
    (extra / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (45, 70), dtype=np.uint8)).convert("P").save(extra / "palette.png")
    Image.fromarray(rng.integers(0, 256, (90, 33, 3), dtype=np.uint8)).save(extra / "nested" / "rgb.png")
    config = {**TINY_CONFIG, "predict": {**TINY_CONFIG["predict"], "extra_images": {"odd": str(extra)}}}
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "--cores", "2")
    return workdir
