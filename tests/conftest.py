"""Shared test helpers: pretrained encoder weights in a Hugging Face Hub cache
that the tests build themselves (nothing is downloaded)."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

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
    return {key: torch.randn(value.shape, generator=generator).to(value.dtype) if value.is_floating_point() else value
            for key, value in state.items()}


@pytest.fixture(scope="session")
def pretrained_cache(tmp_path_factory):
    """A hub cache holding ImageNet-style weights of the timm encoder
    (the whole classifier network, as timm publishes it)."""
    import timm

    cache = tmp_path_factory.mktemp("weights")
    weights = recognisable_weights(timm.create_model(TIMM_ENCODER).state_dict())
    fill_hub_cache(cache, TIMM_REPO, {"model.safetensors": weights})
    return cache, weights
