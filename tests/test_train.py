"""Training: model zoo, resume after a kill, the DVCLive log."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from handbone import config
from handbone.cache import build_cache
from handbone.classes import CLASSES
from handbone.data import index_data_root
from handbone.model import build_model
from handbone.splits import make_folds
from handbone.synthetic import SyntheticConfig, generate
from handbone.train import load_fold_data, validation_epochs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "arch, encoder",
    [
        ("Unet", "tu-hrnet_w18_small"),
        ("UnetPlusPlus", "resnet18"),
        ("DeepLabV3Plus", "resnet18"),
        ("Segformer", "mit_b0"),
    ],
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
    root = generate(
        folder / "set", SyntheticConfig(train_people=4, test_people=1, image_size=96, seed=2), progress=False
    )
    index = index_data_root(root / "data")
    index.to_csv(folder / "index.csv", index=False)
    build_cache(folder / "index.csv", folder / "cache", {}, progress=False)
    make_folds(index, 2).to_csv(folder / "folds.csv", index=False)
    return folder


SPEC = '{"arch": "Unet", "encoder": "tu-mobilenetv3_small_050", "kwargs": {"decoder_channels": [32, 16, 16, 8, 8]}}'
# val_from 0: these tests validate from the first epochs on (config.yaml waits for half of them).
OPTIONS = (
    '{"input_mode": "patch", "input_size": 64, "epochs": 6, "batch_size": 2, "val_every": 2, "val_from": 0,'
    ' "warmup_epochs": 1}'
)


def _train(folder, out, wait=True, options=OPTIONS):
    command = [
        sys.executable,
        "-m",
        "handbone",
        "-q",
        "train",
        "--cache",
        str(folder / "cache"),
        "--folds",
        str(folder / "folds.csv"),
        "--fold",
        "0",
        "--model-spec",
        SPEC,
        "--options",
        options,
        "--out-dir",
        str(out),
        "--threads",
        "1",
    ]
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
    # The resumed run's DVCLive log holds every epoch once, as the uninterrupted one's.
    assert _live_curve(tiny_cache / "killed", "train/loss")["step"].tolist() == list(range(1, 7))
    for name in ("train/loss", "val/dice"):
        assert _live_curve(tiny_cache / "killed", name).equals(_live_curve(tiny_cache / "uninterrupted", name))


def test_validation_runs_every_val_every_epochs_from_val_from_on_and_after_the_last():
    assert validation_epochs(80, 10, 0.5) == [40, 50, 60, 70, 80]
    assert validation_epochs(80, 10, 0) == [10, 20, 30, 40, 50, 60, 70, 80]
    assert validation_epochs(100, 5, 0.5)[:2] == [50, 55] and len(validation_epochs(100, 5, 0.5)) == 11
    assert validation_epochs(7, 3, 0.5) == [6, 7] and validation_epochs(5, 10, 0.5) == [5]


def _live_curve(out, name):
    return pd.read_csv(out / "dvclive" / "plots" / "metrics" / f"{name}.tsv", sep="\t")


def test_training_logs_every_epoch_in_dvclive_layout(tiny_cache):
    out = tiny_cache / "two_epochs"
    _train(tiny_cache, out, options=OPTIONS.replace('"epochs": 6', '"epochs": 2'))
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    loss, lr, dice = (_live_curve(out, name) for name in ("train/loss", "train/lr", "val/dice"))
    assert loss["step"].tolist() == lr["step"].tolist() == [1, 2]
    assert loss["loss"].tolist() == history["train_loss"].tolist()
    assert lr["lr"].tolist() == history["lr"].tolist()
    validated = history.dropna(subset=["val_dice"])  # val_every 2: epoch 2 only
    assert dice["step"].tolist() == validated["epoch"].tolist() == [2]
    assert dice["dice"].tolist() == validated["val_dice"].tolist()
    summary = json.loads((out / "dvclive" / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["train"]["loss"] == history["train_loss"].iloc[-1]
    assert summary["best"] == {"val_dice": metrics["val_dice"], "epoch": metrics["best_epoch"]}
    # No dvc.yaml of its own and no experiment: DVC's files stay the repository's.
    assert not list(out.rglob("dvc.yaml"))
    # The checkpoint records what prediction must match: the cache's preprocess options and the classes.
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["preprocess"] == json.loads((tiny_cache / "cache" / "options.json").read_text())
    assert checkpoint["classes"] == CLASSES
    assert (checkpoint["input_size"], checkpoint["input_mode"]) == (64, "patch")


def test_training_records_the_preprocess_options_the_cache_was_built_with(tiny_cache, tmp_path):
    cache = shutil.copytree(tiny_cache / "cache", tmp_path / "cache")
    (cache / "options.json").write_text(json.dumps({"crop": "none", "clahe": {"clip_limit": 3.0}}))
    data = load_fold_data(cache, tiny_cache / "folds.csv", 0, tmp_path / "out")
    expected = config.default("preprocess")
    expected["crop"], expected["clahe"]["clip_limit"] = "none", 3.0
    assert data.preprocess == expected  # completed with config.yaml's values like every preprocess section


def test_restarted_training_log_drops_an_epoch_that_last_pt_missed(tmp_path):
    from handbone.tracking import TrainingLog

    history = [
        {"epoch": 1, "train_loss": 0.9, "lr": 0.001, "val_dice": float("nan")},
        {"epoch": 2, "train_loss": 0.8, "lr": 0.0005, "val_dice": 0.3},
        {"epoch": 3, "train_loss": 0.7, "lr": 0.0002, "val_dice": 0.4},
    ]
    killed = TrainingLog(tmp_path, history[:1])
    killed.epoch(history[1])  # logged, then killed before last.pt held epoch 2
    resumed = TrainingLog(tmp_path, history[:1])
    for row in history[1:]:
        resumed.epoch(row)
    resumed.close({"val_dice": 0.4, "best_epoch": 3, "epochs_run": 3})
    assert _live_curve(tmp_path, "train/loss")["loss"].tolist() == [0.9, 0.8, 0.7]
    assert _live_curve(tmp_path, "val/dice")["step"].tolist() == [2, 3]
    summary = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    assert summary["step"] == 3 and summary["epochs_run"] == 3


def test_augmenting_the_packed_mask_equals_augmenting_29_channels():
    import numpy as np

    from handbone.masks import pack_mask, unpack_mask_batch
    from handbone.train import augment_sample, augmentations

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 96), dtype=np.uint8)
    mask = (rng.random((29, 80, 96)) > 0.5).astype(np.uint8)
    options = {"hflip": 1.0, "affine": 1.0, "scale": 0.2, "shift": 0.1, "rotate": 30, "brightness_contrast": 0.0}
    for mode in ("resize", "patch"):
        _, packed = augment_sample(
            image, pack_mask(mask), augmentations(64, mode, options, seed=3), 96 if mode == "patch" else None
        )
        reference = augmentations(64, mode, options, seed=3)(
            image=np.pad(image, ((0, 16), (0, 0))) if mode == "patch" else image,
            mask=np.moveaxis(np.pad(mask, ((0, 0), (0, 16), (0, 0))) if mode == "patch" else mask, 0, -1),
        )
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


def _schedule_lrs(lr, warmup, steps, resume_at=None):
    """Learning rate before each optimiser step and after the last one;
    ``resume_at``: the scheduler is rebuilt there from a saved state, as a
    resumed run does it from last.pt."""
    import io

    from handbone.train import make_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer, warmup, steps)
    lrs = [scheduler.get_last_lr()[0]]
    for step in range(1, steps + 1):
        optimizer.step()
        scheduler.step()
        if step == resume_at:
            saved = io.BytesIO()
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, saved)
            saved.seek(0)
            state = torch.load(saved, weights_only=True)
            optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
            scheduler = make_scheduler(optimizer, warmup, steps)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        lrs.append(scheduler.get_last_lr()[0])
        assert lrs[-1] == optimizer.param_groups[0]["lr"]
    return lrs


@pytest.mark.parametrize(
    "warmup_epochs, updates_per_epoch, epochs",
    [(0, 1, 3), (0, 4, 3), (1, 1, 3), (1, 2, 3), (2, 1, 4), (2, 3, 6), (3, 2, 3), (4, 1, 3)],
)
def test_schedule_is_linear_warm_up_then_half_cosine(warmup_epochs, updates_per_epoch, epochs):
    import math

    lr, warmup, steps = 0.005, warmup_epochs * updates_per_epoch, epochs * updates_per_epoch

    def formula(step):  # the factor of the LambdaLR schedule this replaced
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    lrs = _schedule_lrs(lr, warmup, steps)
    assert len(lrs) == steps + 1
    for step, value in enumerate(lrs):
        assert math.isclose(value, lr * formula(step), rel_tol=1e-12, abs_tol=1e-18), (step, value, lr * formula(step))
    assert lrs[0] == pytest.approx(lr / warmup if warmup else lr, rel=1e-12)  # first step
    if 0 < warmup <= steps:
        assert lrs[warmup - 1] == pytest.approx(lr, rel=1e-12)  # the last warm-up step reaches lr
        assert lrs[warmup] == pytest.approx(lr, rel=1e-12)  # and the cosine starts there
    elif warmup > steps:
        assert lrs[steps] == pytest.approx(lr * (steps + 1) / warmup, rel=1e-12)  # still warming up at the end
    if warmup < steps:
        if (steps - warmup) % 2 == 0:
            assert lrs[warmup + (steps - warmup) // 2] == pytest.approx(lr / 2, rel=1e-12)  # middle of the cosine
        assert lrs[steps - 1] == pytest.approx(
            lr * 0.5 * (1 + math.cos(math.pi * (steps - warmup - 1) / (steps - warmup)))
        )
        assert lrs[steps] == 0.0  # after the last step
    elif warmup == steps:
        assert lrs[steps] == pytest.approx(lr, rel=1e-12)  # warm-up takes the whole run: the cosine never starts


@pytest.mark.parametrize("warmup, steps, resume_at", [(4, 12, 2), (4, 12, 4), (4, 12, 7), (0, 6, 3), (1, 5, 1)])
def test_schedule_state_resumes_exactly(warmup, steps, resume_at):
    assert _schedule_lrs(0.005, warmup, steps, resume_at) == _schedule_lrs(0.005, warmup, steps)


def test_last_pt_of_the_old_lambda_schedule_is_not_resumed(tmp_path):
    from types import SimpleNamespace

    from handbone.train import Trainer

    trainer = SimpleNamespace(fingerprint="same", best_path=tmp_path / ".best.pt")
    new = {"fingerprint": "same", "scheduler": {"_schedulers": [{}], "last_epoch": 3}, "state": {"best_epoch": -1}}
    old = {**new, "scheduler": {"base_lrs": [0.005], "last_epoch": 3, "lr_lambdas": [None]}}
    assert Trainer.resumable(trainer, new)
    assert not Trainer.resumable(trainer, old)
    assert not Trainer.resumable(trainer, {**new, "fingerprint": "other"})
    assert not Trainer.resumable(
        trainer, {**new, "state": {"best_epoch": 2}}
    )  # validated, but its best weights are gone


def test_validation_dice_counted_on_the_device_equals_the_cpu_metric():
    """Validation counts Dice where the maps are (metrics.dice_per_class_tensor,
    masks.unpack_mask_tensor); the same numbers as the NumPy metric, exactly."""
    import numpy as np

    from handbone.masks import pack_mask, unpack_mask, unpack_mask_tensor
    from handbone.metrics import dice_per_class, dice_per_class_tensor

    rng = np.random.default_rng(3)
    for shape, density in [((29, 37, 53), 0.5), ((29, 64, 48), 0.02), ((3, 5, 7), 0.9)]:
        prediction, truth = rng.random(shape) < density, rng.random(shape) < density
        prediction[0], truth[1], prediction[2], truth[2] = False, False, False, False  # empty cases
        expected = dice_per_class(prediction, truth)
        counted = dice_per_class_tensor(torch.from_numpy(prediction), torch.from_numpy(truth))
        assert counted.dtype == expected.dtype == np.float64 and np.array_equal(counted, expected)
        assert counted[2] == 1.0  # an empty prediction of an empty truth
        probabilities = rng.random(shape).astype(np.float32)
        assert np.array_equal(
            dice_per_class_tensor(torch.from_numpy(probabilities) > 0.5, torch.from_numpy(truth.astype(np.uint8))),
            dice_per_class(probabilities > 0.5, truth.astype(np.uint8)),
        )
    mask = rng.random((29, 33, 41)) < 0.3
    packed = pack_mask(mask)
    with_ignore_bits = np.concatenate([packed, pack_mask(~mask)], axis=-1)  # a pseudo-label's 8 bytes
    for bits in (packed, with_ignore_bits):
        unpacked = unpack_mask_tensor(torch.from_numpy(bits))
        assert unpacked.dtype == torch.bool and np.array_equal(unpacked.numpy(), unpack_mask(bits[..., :4]) > 0)


def test_validation_scores_the_cached_masks_as_before(tiny_cache):
    """evaluate (maps and Dice on the model's device) gives the table of the
    former CPU scoring: NumPy maps thresholded at 0.5 against the unpacked
    cached masks at full resolution; exactly on the CPU (float32, the default)."""
    import numpy as np

    from handbone.cache import CacheEntry
    from handbone.classes import CLASSES
    from handbone.inference import predict_probabilities
    from handbone.metrics import dice_per_class
    from handbone.train import evaluate

    torch.manual_seed(0)
    model = build_model(json.loads(SPEC)).eval()
    cache = tiny_cache / "cache"
    stems = sorted(path.name.removesuffix(".image.npy") for path in cache.glob("*.image.npy"))[:3]
    locations = {stem: cache for stem in stems}
    expected = pd.DataFrame(
        [
            dice_per_class(
                predict_probabilities([model], np.array(entry.image), 64, "cpu", mode="patch") > 0.5, entry.mask()
            )
            for entry in (CacheEntry(cache, stem) for stem in stems)
        ],
        columns=CLASSES,
        index=stems,
    )
    scored = evaluate(model, locations, stems, 64, "patch", torch.device("cpu"))
    pd.testing.assert_frame_equal(scored, expected, check_exact=True)
    assert 0 < scored.to_numpy().mean() < 1
    # The autocast path (CUDA's float16, here bfloat16 on the CPU) scores
    # nearly the same: measured mean |difference| 1.4e-4 (largest 0.0025).
    mixed = evaluate(model, locations, stems, 64, "patch", torch.device("cpu"), precision="bfloat16")
    assert (mixed - expected).abs().to_numpy().mean() < 2e-3
