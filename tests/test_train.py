"""Training: model zoo, resume after a kill."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from handbone.data import index_data_root
from handbone.model import build_model
from handbone.cache import build_cache
from handbone.splits import make_folds
from handbone.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "arch, encoder",
    [("Unet", "tu-hrnet_w18_small"), ("UnetPlusPlus", "resnet18"), ("DeepLabV3Plus", "resnet18"), ("Segformer", "mit_b0")],
)
def test_model_zoo_builds_offline_with_29_outputs(arch, encoder):
    model = build_model({"arch": arch, "encoder": encoder, "encoder_weights": None})
    output = model.eval()(torch.zeros(1, 3, 64, 64))
    assert output.shape == (1, 29, 64, 64)


def test_importing_the_training_code_opens_no_network_connection():
    probe = (
        "import socket\n"
        "attempts = []\n"
        "def refuse(self, *args):\n"
        "    attempts.append(args)\n"
        "    raise OSError('network blocked by the test')\n"
        "socket.socket.connect = refuse\n"
        "import handbone.train, albumentations\n"
        "print(len(attempts))\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "NO_ALBUMENTATIONS_UPDATE"}
    environment["PYTHONPATH"] = str(REPO / "workflow")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, check=True)
    assert result.stdout.strip() == "0", result.stdout + result.stderr


def test_unknown_model_fails_with_its_name():
    with pytest.raises(ValueError, match="no-such-encoder"):
        build_model({"arch": "Unet", "encoder": "no-such-encoder"})


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    root = generate(folder / "set", SyntheticConfig(train_people=4, test_people=1, image_size=96, seed=2), progress=False)
    index = index_data_root(root / "data")
    index.to_csv(folder / "index.csv", index=False)
    build_cache(folder / "index.csv", folder / "cache", {}, progress=False)
    make_folds(index, 2).to_csv(folder / "folds.csv", index=False)
    return folder


SPEC = '{"arch": "Unet", "encoder": "tu-mobilenetv3_small_050", "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]}}'
OPTIONS = '{"input_mode": "patch", "input_size": 64, "epochs": 6, "batch_size": 2, "val_every": 2, "warmup_epochs": 1}'


def _train(folder, out, wait=True):
    command = [sys.executable, "-m", "handbone", "-q", "train", "--cache", str(folder / "cache"), "--folds",
               str(folder / "folds.csv"), "--fold", "0", "--model-spec", SPEC, "--options", OPTIONS,
               "--out-dir", str(out), "--threads", "1"]
    environment = {**os.environ, "HANDBONE_GPUS": "0"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    if wait:
        _, error = process.communicate(timeout=300)
        assert process.returncode == 0, error
        return error
    return process


def test_killed_training_resumes_and_ends_with_the_same_weights(tiny_cache):
    reference_log = _train(tiny_cache, tiny_cache / "uninterrupted")
    assert "resuming" not in reference_log

    process = _train(tiny_cache, tiny_cache / "killed", wait=False)
    last = tiny_cache / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tiny_cache / "killed" / "model.pt").exists(), "killed before the end: no finished checkpoint"
    resumed_log = _train(tiny_cache, tiny_cache / "killed")
    assert "resuming fold 0 after epoch" in resumed_log

    reference = torch.load(tiny_cache / "uninterrupted" / "model.pt", weights_only=True)
    resumed = torch.load(tiny_cache / "killed" / "model.pt", weights_only=True)
    assert reference["epoch"] == resumed["epoch"]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
    assert not last.exists()


def test_augmenting_the_packed_mask_equals_augmenting_29_channels():
    import numpy as np

    from handbone.masks import pack_mask, unpack_mask_batch
    from handbone.train import augment_sample, augmentations

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 96), dtype=np.uint8)
    mask = (rng.random((29, 80, 96)) > 0.5).astype(np.uint8)
    options = {"hflip": 1.0, "affine": 1.0, "scale": 0.2, "shift": 0.1, "rotate": 30, "brightness_contrast": 0.0}
    for mode in ("resize", "patch"):
        _, packed = augment_sample(image, pack_mask(mask), augmentations(64, mode, options, seed=3), 96 if mode == "patch" else None)
        reference = augmentations(64, mode, options, seed=3)(image=np.pad(image, ((0, 16), (0, 0))) if mode == "patch" else image,
                                                            mask=np.moveaxis(np.pad(mask, ((0, 0), (0, 16), (0, 0))) if mode == "patch" else mask, 0, -1))
        unpacked = unpack_mask_batch(packed[None])[0].numpy()
        assert unpacked.shape == (29,) + reference["mask"].shape[:2]
        assert np.array_equal(unpacked, np.moveaxis(reference["mask"], -1, 0))


def test_local_encoder_weights_are_loaded(tmp_path):
    spec = {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None}
    source = build_model(spec)
    torch.save(source.encoder.state_dict(), tmp_path / "encoder.pt")
    loaded = build_model({**spec, "encoder_weights": str(tmp_path / "encoder.pt")})
    for name, tensor in source.encoder.state_dict().items():
        assert torch.equal(tensor, loaded.encoder.state_dict()[name]), name
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_model({**spec, "encoder_weights": str(tmp_path / "missing.pt")})
