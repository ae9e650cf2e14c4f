"""Training one model on one cross-validation fold."""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import config
from .arguments import json_argument, progress, section_argument
from .atomic import atomic_path
from .cache import CacheEntry, verify_cache
from .classes import CLASSES
from .data import read_folds
from .devices import autocast_dtype
from .errors import ConfigError, DataError
from .inference import device_probabilities
from .masks import IGNORE, unpack_mask, unpack_mask_batch, unpack_mask_tensor
from .metrics import dice_per_class, dice_per_class_tensor
from .model import build_model, save_checkpoint, to_device, to_network_input
from .tracking import TrainingLog

log = logging.getLogger("handbone")


def augmentations(size: int, mode: str, options: dict, seed: int) -> A.Compose:
    """The albumentations pipeline of one training sample.

    ``resize`` mode scales the whole image to ``size``; ``patch`` mode gets a
    full-resolution window of that size (see CachedImages). Then mild flips,
    affine moves and brightness/contrast changes.
    """
    steps = (
        [A.Resize(size, size, interpolation=3, mask_interpolation=0)] if mode == "resize" else []
    )  # INTER_AREA / nearest
    if options["hflip"] > 0:
        steps.append(A.HorizontalFlip(p=options["hflip"]))
    if options["affine"] > 0:
        scale, shift, rotate = options["scale"], options["shift"], options["rotate"]
        steps.append(
            A.Affine(
                scale=(1 - scale, 1 + scale),
                translate_percent=(-shift, shift),
                rotate=(-rotate, rotate),
                p=options["affine"],
            )
        )
    if options["brightness_contrast"] > 0:
        steps.append(A.RandomBrightnessContrast(0.15, 0.15, p=options["brightness_contrast"]))
    return A.Compose(steps, seed=seed)


class CachedImages(Dataset):
    """Training samples read from the preprocessing cache.

    In ``patch`` mode a sample is a random ``size`` x ``size`` window of the
    full-resolution image (padded when the image is smaller); only that
    window is read from the memory-mapped cache and unpacked.
    """

    def __init__(self, locations: dict[str, Path], stems: list[str], transform: A.Compose, mode: str, size: int):
        self.entries = [CacheEntry(locations[stem], stem) for stem in stems]
        self.transform = transform
        self.mode = mode
        self.size = size
        # Pseudo-labels may carry 4 more bytes of ignore bits; real labels
        # then get 4 zero bytes (nothing ignored), so batches stack.
        self.mask_bytes = max(entry.packed_mask.shape[-1] for entry in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def window(self, entry: CacheEntry) -> tuple[slice, slice]:
        if self.mode == "resize":
            return slice(None), slice(None)
        height, width = entry.image.shape
        top = int(np.random.randint(0, max(1, height - self.size + 1)))
        left = int(np.random.randint(0, max(1, width - self.size + 1)))
        return slice(top, top + self.size), slice(left, left + self.size)

    def __getitem__(self, item: int):
        entry = self.entries[item]
        rows, cols = self.window(entry)
        image = np.asarray(entry.image[rows, cols])
        packed = np.asarray(entry.packed_mask[rows, cols])
        if packed.shape[-1] < self.mask_bytes:
            packed = np.pad(packed, ((0, 0), (0, 0), (0, self.mask_bytes - packed.shape[-1])))
        return augment_sample(image, packed, self.transform, self.size if self.mode == "patch" else None)


def augment_sample(image: np.ndarray, packed_mask: np.ndarray, transform: A.Compose, window: int | None = None):
    """uint8 tensors (1, h, w) image and (4, h, w) packed mask of one sample.

    The augmentations move the 4-byte packed mask instead of 29 channels:
    every mask operation here (flip, nearest-neighbour affine and resize,
    zero padding) moves whole pixels, so it moves all their bits exactly,
    at a seventh of the cost. Training unpacks and normalises on the
    model's device (``unpack_mask_batch``, ``to_network_input``).
    """
    if window is not None and image.shape != (window, window):
        # An image smaller than the window is padded with background.
        padding = ((0, window - image.shape[0]), (0, window - image.shape[1]))
        image, packed_mask = np.pad(image, padding), np.pad(packed_mask, padding + ((0, 0),))
    sample = transform(image=image, mask=packed_mask)
    return torch.from_numpy(sample["image"][None].copy()), torch.from_numpy(np.moveaxis(sample["mask"], -1, 0).copy())


def make_loss(weights: dict, ignore_index: int | None = None):
    """Weighted sum of segmentation-models-pytorch losses (multilabel);
    targets equal to ``ignore_index`` count in none of them."""
    from segmentation_models_pytorch import losses

    factories = {
        "dice": lambda: losses.DiceLoss(mode="multilabel", from_logits=True, ignore_index=ignore_index),
        "bce": lambda: losses.SoftBCEWithLogitsLoss(ignore_index=ignore_index),
        "focal": lambda: losses.FocalLoss(mode="multilabel"),
        "lovasz": lambda: losses.LovaszLoss(mode="multilabel", from_logits=True, ignore_index=ignore_index),
    }
    unknown = set(weights) - set(factories)
    if unknown:
        raise ConfigError(f"unknown loss(es) {sorted(unknown)}; known: {sorted(factories)}")
    problem = config.focal_loss_problem(weights, ignore_index is not None)
    if problem:  # checked before any job too; this is for a command run by hand
        raise ConfigError(problem)
    parts = [(float(weight), factories[name]()) for name, weight in weights.items() if weight]

    def loss(logits, target):
        if logits.dim() == 5:
            return deep_supervision_loss(loss, logits, target)
        return sum(weight * part(logits, target) for weight, part in parts)

    return loss


def deep_supervision_loss(loss, heads: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's deep supervision: ``heads`` (B, N, C, H, W) are the full-
    resolution output and N - 1 lower-resolution heads upsampled to it
    (MONAI's DynUNet in training mode); their losses are added with
    weights halving from head to head, normalised to sum to 1."""
    weights = [0.5**head for head in range(heads.shape[1])]
    return sum(weight * loss(heads[:, head], target) for head, weight in enumerate(weights)) / sum(weights)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(
    model,
    locations: dict[str, Path],
    stems: list[str],
    input_size: int,
    mode: str,
    device,
    precision: str = "auto",
) -> pd.DataFrame:
    """Per-image, per-class Dice (``metrics.dice_per_class``) of the maps
    thresholded at 0.5 against the cached masks, at the cached images' full
    resolution. The maps are predicted as the prediction rules predict them
    (forward passes in ``precision``, ``devices.autocast_dtype``) and scored
    where they are (``validation_dice``)."""
    model.eval()
    rows = []
    for stem in stems:
        entry = CacheEntry(locations[stem], stem)
        probabilities = device_probabilities(
            [model], np.array(entry.image), input_size, device, mode=mode, precision=precision
        )
        rows.append(validation_dice(probabilities, np.array(entry.packed_mask)))
    return pd.DataFrame(rows, columns=CLASSES, index=stems)


def validation_epochs(epochs: int, val_every: int, val_from: float) -> list[int]:
    """The epochs that end with a validation: every ``val_every``-th from
    ``val_from`` of the epochs on, and the last."""
    return [
        epoch
        for epoch in range(1, epochs + 1)
        if epoch == epochs or (epoch % val_every == 0 and epoch >= val_from * epochs)
    ]


def validation_dice(probabilities: torch.Tensor, packed_mask: np.ndarray) -> np.ndarray:
    """Dice per class of (29, H, W) maps thresholded at 0.5 against a cached
    packed mask, counted where the maps are. On a GPU with torch
    (``metrics.dice_per_class_tensor``): only the packed mask (4 bytes a
    pixel) goes there and 2 x 29 pixel counts come back, instead of the
    float32 maps (116 bytes a pixel) coming to the CPU. On the CPU with
    NumPy, as before: the same numbers, and faster there than torch's
    counting (measured in docs/gpus.md)."""
    if probabilities.device.type == "cpu":
        return dice_per_class(probabilities.numpy() > 0.5, unpack_mask(packed_mask))
    truth = unpack_mask_tensor(torch.from_numpy(packed_mask).to(probabilities.device))
    return dice_per_class_tensor(probabilities > 0.5, truth)


def _fingerprint(model_spec: dict, options: dict, fold: int, train_stems, val_stems, pseudo_crcs) -> str:
    """What a resumable state must match: the same model, options and images
    (and pseudo-labels: those are remade when an earlier round changes)."""
    return json.dumps([model_spec, options, fold, sorted(train_stems), sorted(val_stems), pseudo_crcs], sort_keys=True)


def fold_images(folds: pd.DataFrame, fold: int, pseudo: pd.DataFrame | None = None) -> tuple[list, list, list]:
    """(training stems, validation stems, pseudo-labelled stems) of ``fold``.

    Excluded images (wrong labels) are in neither part. Validation holds
    real labelled images only. A pseudo-labelled image of a person who has
    images in the validation part is dropped (with a warning), so no
    person is in both parts even when test and training people overlap.
    """
    if fold not in set(folds["fold"]):
        raise DataError(f"fold {fold} is not in the folds table (folds: {sorted(set(folds['fold']))})")
    usable = folds[~folds["excluded"]] if "excluded" in folds else folds
    train_stems = [Path(name).stem for name in usable.loc[usable["fold"] != fold, "image_name"]]
    val_stems = [Path(name).stem for name in usable.loc[usable["fold"] == fold, "image_name"]]
    pseudo_stems = []
    if pseudo is not None and len(pseudo):
        validation_people = set(folds.loc[folds["fold"] == fold, "person_id"].astype(str))
        clash = pseudo["person_id"].astype(str).isin(validation_people)
        if clash.any():
            log.warning(
                "fold %d: %d pseudo-labelled image(s) of people in its validation part left out: %s",
                fold,
                int(clash.sum()),
                list(pseudo.loc[clash, "image_name"])[:5],
            )
        pseudo_stems = list(pseudo.loc[~clash, "stem"].astype(str))
        shared = set(pseudo_stems) & (set(train_stems) | set(val_stems))
        if shared:
            raise DataError(f"pseudo-labelled images share names with training images: {sorted(shared)[:3]}")
    return train_stems, val_stems, pseudo_stems


@dataclass
class FoldData:
    """A fold's images (stems), where their verified cache entries are, and
    the preprocess section the cache was built with."""

    train: list[str]
    val: list[str]
    pseudo: list[str]
    locations: dict[str, Path]
    pseudo_crcs: list[list[int | str]]
    preprocess: dict


def load_fold_data(cache_dir: Path, folds_path, fold: int, out_dir: Path, pseudo_dir=None) -> FoldData:
    """The images of ``fold`` (``fold_images``), every cache entry checked
    once; a damaged one is rebuilt into ``out_dir``, never trained on."""
    folds = read_folds(folds_path, fold)
    # The options the cache was built with (completed with the defaults, as
    # every preprocess section is; a cache without options.json: the defaults).
    saved = Path(cache_dir) / "options.json"
    preprocess = config.section("preprocess", json.loads(saved.read_text()) if saved.is_file() else {}, str(saved))
    pseudo = None
    if pseudo_dir is not None:
        pseudo = pd.read_csv(
            Path(pseudo_dir) / "cache.csv", dtype={"person_id": str, "stem": str}, keep_default_na=False
        )
    train_stems, val_stems, pseudo_stems = fold_images(folds, fold, pseudo)
    if not train_stems or not val_stems:
        raise DataError(f"fold {fold} of {folds_path} leaves no training or no validation images after exclusions")

    locations = verify_cache(cache_dir, train_stems + val_stems, out_dir / "rebuilt_cache")
    pseudo_crcs = []
    if pseudo_stems:
        locations.update(verify_cache(pseudo_dir, pseudo_stems, out_dir / "rebuilt_cache"))
        crcs = pseudo.set_index("stem").loc[pseudo_stems, ["image_crc", "mask_crc"]]
        pseudo_crcs = [[stem, int(image), int(mask)] for stem, (image, mask) in zip(pseudo_stems, crcs.to_numpy())]
        log.info("fold %d: %d real and %d pseudo-labelled training images", fold, len(train_stems), len(pseudo_stems))
    return FoldData(train_stems, val_stems, pseudo_stems, locations, pseudo_crcs, preprocess)


def make_loader(dataset: Dataset, batch_size: int, workers: int, generator: torch.Generator) -> DataLoader:
    """Shuffled full batches; ``generator`` (reseeded every epoch) orders them."""
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=generator,
        persistent_workers=workers > 0,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> SequentialLR:
    """Per optimiser step: linear warm-up from lr / warmup_steps to lr over
    ``warmup_steps`` steps (factor (step + 1) / warmup_steps), then a half
    cosine from lr to 0 over the remaining steps (at least one).

    With ``warmup_steps`` = 0 the cosine starts at once; warm-up longer than
    the run never reaches it. The library's recursive updates match the
    closed formula up to floating-point rounding (tests/test_train.py)."""
    schedules, milestones = [], []
    if warmup_steps:
        # total_iters=1 for a one-step warm-up: its factor is 1 from the start.
        start = 1.0 / warmup_steps
        schedules.append(LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=max(1, warmup_steps - 1)))
        milestones.append(warmup_steps)
    schedules.append(CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=0.0))
    return SequentialLR(optimizer, schedules, milestones)


class Trainer:
    """One fold's training, in small hooks (after nnU-Net v2's trainer):
    ``build_*`` make the parts, ``train_epoch`` / ``train_step`` /
    ``optimiser_step`` train, ``validate`` keeps the best weights,
    ``save_last`` / ``resume`` checkpoint, ``write_outputs`` finishes.
    A new loss changes ``build_loss``, EMA weights ``optimiser_step`` and
    ``validate``; the rest stays."""

    def __init__(
        self, data: FoldData, model_spec: dict, options: dict, fold: int, out_dir: Path, device, workers: int = 0
    ):
        self.data, self.model_spec, self.options, self.fold = data, model_spec, options, fold
        self.out_dir, self.device = out_dir, device
        # Training and validation run in the device's autocast precision
        # (float16 on CUDA, float32 on the CPU); float16 needs the GradScaler.
        self.precision = "auto"
        self.amp_dtype = autocast_dtype(device, self.precision)
        self.mode, self.size = options["input_mode"], int(options["input_size"])
        self.epochs, self.accumulate = int(options["epochs"]), max(1, int(options["accumulate"]))
        self.seed = int(options["seed"]) + 1000 * fold
        self.last_path, self.best_path = out_dir / "last.pt", out_dir / ".best.pt"
        seed_everything(self.seed)  # the initial weights
        self.model = self.build_model()
        self.build_data(workers)
        self.loss_fn = self.build_loss()
        self.build_optimisation()
        self.fingerprint = _fingerprint(model_spec, options, fold, data.train, data.val, data.pseudo_crcs)
        self.state = {
            "epoch": 0,
            "history": [],
            "best": -1.0,
            "best_epoch": -1,
            "since_best": 0,
            "best_per_class": None,
        }

    # -- parts -----------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        """The model on the device (channels-last on CUDA where it suits it, ``model.to_device``)."""
        return to_device(build_model(self.model_spec, self.size), self.device)

    def build_data(self, workers: int) -> None:
        """Augmentations, dataset (real + pseudo-labelled) and loader."""
        self.transform = augmentations(self.size, self.mode, self.options["augment"], self.seed)
        stems = self.data.train + self.data.pseudo
        self.dataset = CachedImages(self.data.locations, stems, self.transform, self.mode, self.size)
        self.generator = torch.Generator()
        self.loader = make_loader(self.dataset, int(self.options["batch_size"]), workers, self.generator)

    def build_loss(self):
        """Pseudo-labels with ignore bits (more than 4 mask bytes) leave their uncertain pixels out."""
        return make_loss(self.options["loss"], IGNORE if self.dataset.mask_bytes > 4 else None)

    def build_optimisation(self) -> None:
        """AdamW, its per-update schedule and the AMP gradient scaler."""
        options = self.options
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=float(options["lr"]), weight_decay=float(options["weight_decay"])
        )
        updates_per_epoch = max(1, len(self.loader) // self.accumulate)
        warmup = int(options["warmup_epochs"]) * updates_per_epoch
        self.scheduler = make_scheduler(self.optimizer, warmup, self.epochs * updates_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # -- checkpoint and resume -------------------------------------------
    def training_state(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": self.state,
        }

    def save_last(self) -> None:
        with atomic_path(self.last_path) as temporary:
            torch.save(self.training_state(), temporary)

    def resumable(self, saved: dict) -> bool:
        """Made by the same model, options and images, with this schedule
        (an older last.pt of a LambdaLR schedule starts over), and the best
        weights so far still there if it has validated."""
        validated = saved.get("state", {}).get("best_epoch", -1) >= 0
        same_schedule = "_schedulers" in saved.get("scheduler", {})
        best_kept = self.best_path.is_file() or not validated
        return saved.get("fingerprint") == self.fingerprint and same_schedule and best_kept

    def resume(self) -> bool:
        """Continue from ``last.pt`` after its last finished epoch, if it fits."""
        if not self.last_path.is_file():
            return False
        saved = torch.load(self.last_path, map_location="cpu", weights_only=True)
        if not self.resumable(saved):
            log.info("%s was made by other settings or images; starting over", self.last_path)
            return False
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = saved["state"]
        log.info(
            "resuming fold %d after epoch %d of %d (%s)", self.fold, self.state["epoch"], self.epochs, self.last_path
        )
        return True

    # -- training --------------------------------------------------------
    def reseed(self, epoch: int) -> None:
        """Reseeding per epoch makes an epoch's batches and augmentations
        independent of earlier epochs, so a resumed run repeats them."""
        seed_everything(self.seed + epoch)
        self.generator.manual_seed(self.seed + epoch)
        self.transform.set_random_seed(self.seed + epoch)

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the loader; the epoch's history row."""
        self.reseed(epoch)
        self.model.train()
        losses = []
        self.optimizer.zero_grad(set_to_none=True)
        for step, (images, masks) in enumerate(self.loader, start=1):
            losses.append(self.train_step(images, masks))
            if step % self.accumulate == 0:
                self.optimiser_step()
        return {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": self.scheduler.get_last_lr()[0]}

    def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        """Forward and backward of one batch (uint8 images, packed masks); its loss."""
        images = to_network_input(images.to(self.device, non_blocking=True))
        masks = unpack_mask_batch(masks.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.loss_fn(self.model(images), masks)
        self.scaler.scale(loss / self.accumulate).backward()
        return loss.item()

    def optimiser_step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # -- validation and early stop ---------------------------------------
    def validates(self, epoch: int) -> bool:
        return epoch in validation_epochs(self.epochs, int(self.options["val_every"]), self.options["val_from"])

    def validate(self, epoch: int) -> float:
        """Mean validation Dice; a new best is saved to ``.best.pt``."""
        per_image = evaluate(
            self.model, self.data.locations, self.data.val, self.size, self.mode, self.device, self.precision
        )
        dice = float(per_image.mean(axis=0).mean())
        if dice > self.state["best"]:
            self.state.update(best=dice, best_epoch=epoch, since_best=0)
            self.state["best_per_class"] = [float(value) for value in per_image.mean(axis=0)]
            # What prediction must match is recorded with the weights (model.check_checkpoint).
            meta = {"model": self.model_spec, "input_size": self.size, "input_mode": self.mode, "fold": self.fold}
            meta |= {"preprocess": self.data.preprocess, "classes": list(CLASSES)}
            save_checkpoint(self.best_path, self.model, {**meta, "epoch": epoch, "val_dice": dice})
        else:
            self.state["since_best"] += 1
        return dice

    def should_stop(self) -> bool:
        patience = self.options["patience"]
        return bool(patience) and self.state["since_best"] >= int(patience)

    def log_epoch(self, row: dict) -> None:
        best = self.state["best"]
        validation = f", validation Dice {row['val_dice']:.4f} (best {best:.4f})" if "val_dice" in row else ""
        log.info(
            "epoch %d/%d: train loss %.4f, lr %.2e%s",
            row["epoch"],
            self.epochs,
            row["train_loss"],
            row["lr"],
            validation,
        )

    def fit(self, progress: bool = True) -> None:
        """The remaining epochs; ``last.pt`` after each, and each epoch's row
        in the DVCLive log (``tracking.TrainingLog``, rewritten from the
        history at the start, so a resumed run logs every epoch once)."""
        self.training_log = TrainingLog(self.out_dir, self.state["history"])
        bar = tqdm(
            range(self.state["epoch"] + 1, self.epochs + 1), desc=f"train fold {self.fold}", disable=not progress
        )
        for epoch in bar:
            row = self.train_epoch(epoch)
            if self.validates(epoch):
                row["val_dice"] = self.validate(epoch)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=f"{row['val_dice']:.4f}")
            self.log_epoch(row)
            self.training_log.epoch(row)
            self.state["history"].append(row)
            self.state["epoch"] = epoch
            self.save_last()
            if self.should_stop():
                log.info("early stop after epoch %d: no improvement in %d validations", epoch, self.options["patience"])
                break

    # -- outputs ---------------------------------------------------------
    def write_outputs(self, seconds: float) -> dict:
        """history.csv, metrics.json, the DVCLive log's final metrics, then
        model.pt (last: its presence means done); ``last.pt`` goes. Returns
        the metrics."""
        state, data = self.state, self.data
        pd.DataFrame(state["history"]).to_csv(self.out_dir / "history.csv", index=False)
        metrics = {
            "model": self.model_spec,
            "fold": self.fold,
            "best_epoch": state["best_epoch"],
            "val_dice": state["best"],
            "val_dice_per_class": dict(zip(CLASSES, state["best_per_class"])),
            "train_images": len(data.train),
            "pseudo_labelled_images": len(data.pseudo),
            "val_images": len(data.val),
            "epochs_run": state["epoch"],
            "seconds_this_run": round(seconds, 1),
            "device": str(self.device),
        }
        with atomic_path(self.out_dir / "metrics.json") as temporary:
            temporary.write_text(json.dumps(metrics, indent=2))
        self.training_log.close(metrics)
        self.best_path.replace(self.out_dir / "model.pt")
        self.last_path.unlink()
        return metrics


def train_fold(
    cache_dir: str | Path,
    folds_path: str | Path,
    fold: int,
    model_spec: dict,
    options: dict,
    out_dir: str | Path,
    device,
    workers: int = 0,
    progress: bool = True,
    pseudo_dir: str | Path | None = None,
) -> dict:
    """Train on every fold but ``fold``, validate on ``fold``, keep the best.

    ``pseudo_dir``: a pseudo-label cache (pseudo.py) whose images are added
    to the training part (``fold_images`` says which); validation stays on
    real labels. Their uncertain pixels, if marked, count in no loss.

    Writes ``model.pt`` (best state dict + the spec that made it, and the
    cache's preprocess options and the classes it was trained on),
    ``history.csv`` (one row per epoch) and ``metrics.json`` into
    ``out_dir``; the checkpoint is written last, so its presence means done.
    After every epoch the whole training state goes to ``last.pt``: a killed
    job rerun with the same model, options and images continues after the
    last finished epoch, and ends with the same weights as an uninterrupted
    run on the CPU (every epoch reseeds all random generators).
    The steps are ``Trainer``'s methods.
    """
    options = config.section("train", options, "train options")
    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_fold_data(cache_dir, folds_path, fold, out_dir, pseudo_dir)
    # augment.hflip auto follows the cache's preprocessing (its unify_side).
    options["augment"]["hflip"] = config.augment_hflip(options["augment"]["hflip"], data.preprocess)
    trainer = Trainer(data, model_spec, options, fold, out_dir, device, workers)
    trainer.resume()
    started = time.monotonic()
    trainer.fit(progress)
    return trainer.write_outputs(time.monotonic() - started)


# -- the command line: `handbone train` (cli.py dispatches) --


def train_command(args) -> None:
    from .devices import torch_device

    spec = config.model_spec(args.model_spec, "--model-spec")
    device = torch_device(args.threads)
    log.info("training fold %d of %s on %s", args.fold, spec, device)
    workers = max(0, args.threads - 1) if device.type == "cuda" else 0
    metrics = train_fold(
        args.cache,
        args.folds,
        args.fold,
        spec,
        args.options,
        args.out_dir,
        device,
        workers,
        progress(args),
        pseudo_dir=args.pseudo_labels,
    )
    log.info("fold %d: best validation Dice %.4f at epoch %d", args.fold, metrics["val_dice"], metrics["best_epoch"])


def train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=train_command)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--folds", required=True, help="folds CSV")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument(
        "--model-spec", type=json_argument, required=True, help='JSON, e.g. \'{"arch": "Unet", "encoder": "resnet18"}\''
    )
    section_argument(parser, "train", "'{\"epochs\": 5}'")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--pseudo-labels", help="pseudo-label cache (written by pseudo-label) added to the training part"
    )
