"""Training one model on one cross-validation fold."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .atomic import atomic_path
from .classes import CLASSES
from .inference import predict_probabilities
from .metrics import dice_per_class
from .model import build_model, save_checkpoint, to_input
from .preprocess import CacheEntry

log = logging.getLogger("handbone")

DEFAULT_TRAIN = {
    "input_size": 256,
    "epochs": 40,
    "batch_size": 8,
    "lr": 0.003,
    "weight_decay": 0.0001,
    "warmup_epochs": 2,
    "val_every": 5,
    "patience": 0,
    "loss": {"dice": 1.0, "bce": 1.0},
    "augment": {"hflip": 0.5, "affine": 0.5, "brightness_contrast": 0.5},
    "seed": 0,
}


def augmentations(size: int, options: dict, seed: int) -> A.Compose:
    """Resize to the network's input size, then mild augmentations.

    The seed makes albumentations' own random generator repeatable.
    """
    steps = [A.Resize(size, size, interpolation=3, mask_interpolation=0)]  # INTER_AREA / nearest
    if options.get("hflip", 0) > 0:
        steps.append(A.HorizontalFlip(p=options["hflip"]))
    if options.get("affine", 0) > 0:
        steps.append(A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=options["affine"]))
    if options.get("brightness_contrast", 0) > 0:
        steps.append(A.RandomBrightnessContrast(0.15, 0.15, p=options["brightness_contrast"]))
    return A.Compose(steps, seed=seed)


class CachedImages(Dataset):
    """Training samples read from the preprocessing cache."""

    def __init__(self, cache_dir: Path, stems: list[str], transform: A.Compose):
        self.entries = [CacheEntry(cache_dir, stem) for stem in stems]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item: int):
        entry = self.entries[item]
        image = np.asarray(entry.image)
        mask = np.moveaxis(entry.mask(), 0, -1)
        sample = self.transform(image=image, mask=mask)
        return (
            torch.from_numpy(to_input(sample["image"])),
            torch.from_numpy(np.ascontiguousarray(np.moveaxis(sample["mask"], -1, 0))).float(),
        )


def make_loss(weights: dict):
    """Weighted sum of segmentation-models-pytorch losses (multilabel)."""
    from segmentation_models_pytorch import losses

    factories = {
        "dice": lambda: losses.DiceLoss(mode="multilabel", from_logits=True),
        "bce": lambda: losses.SoftBCEWithLogitsLoss(),
        "focal": lambda: losses.FocalLoss(mode="multilabel"),
        "lovasz": lambda: losses.LovaszLoss(mode="multilabel", from_logits=True),
    }
    unknown = set(weights) - set(factories)
    if unknown:
        raise ValueError(f"unknown loss(es) {sorted(unknown)}; known: {sorted(factories)}")
    parts = [(float(weight), factories[name]()) for name, weight in weights.items() if weight]

    def loss(logits, target):
        return sum(weight * part(logits, target) for weight, part in parts)

    return loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(model, cache_dir: Path, stems: list[str], input_size: int, device) -> pd.DataFrame:
    """Per-image, per-class Dice at each image's original resolution."""
    model.eval()
    rows = []
    for stem in stems:
        entry = CacheEntry(cache_dir, stem)
        probabilities = predict_probabilities([model], np.asarray(entry.image), input_size, device)
        rows.append(dice_per_class(probabilities > 0.5, entry.mask()))
    return pd.DataFrame(rows, columns=CLASSES, index=stems)


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
) -> dict:
    """Train on every fold but ``fold``, validate on ``fold``, keep the best.

    Writes ``model.pt`` (best state dict + the spec that made it),
    ``history.csv`` (one row per validation) and ``metrics.json`` into
    ``out_dir``; the checkpoint is written last, so its presence means done.
    """
    options = {**DEFAULT_TRAIN, **options}
    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folds = pd.read_csv(folds_path, dtype={"person_id": str})
    if fold not in set(folds["fold"]):
        raise ValueError(f"fold {fold} is not in {folds_path} (folds: {sorted(set(folds['fold']))})")
    # Images excluded by the outlier rules have wrong labels: they are
    # neither trained on nor validated against.
    usable = folds[~folds["excluded"]] if "excluded" in folds else folds
    train_stems = [Path(name).stem for name in usable.loc[usable["fold"] != fold, "image_name"]]
    val_stems = [Path(name).stem for name in usable.loc[usable["fold"] == fold, "image_name"]]
    if not train_stems or not val_stems:
        raise ValueError(f"fold {fold} of {folds_path} leaves no training or no validation images after exclusions")

    seed = int(options["seed"]) + fold
    seed_everything(seed)
    size = int(options["input_size"])
    model = build_model(model_spec).to(device)
    dataset = CachedImages(cache_dir, train_stems, augmentations(size, options["augment"], seed))
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=min(int(options["batch_size"]), len(dataset)),
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=generator,
        persistent_workers=workers > 0,
    )
    loss_fn = make_loss(options["loss"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(options["lr"]), weight_decay=float(options["weight_decay"]))
    epochs = int(options["epochs"])
    steps = epochs * len(loader)
    warmup = int(options["warmup_epochs"]) * len(loader)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_fraction = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress_fraction))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    meta = {"model": model_spec, "input_size": size, "fold": fold}

    history, best, best_epoch, since_best = [], -1.0, -1, 0
    started = time.monotonic()
    bar = tqdm(range(1, epochs + 1), desc=f"train fold {fold}", disable=not progress)
    for epoch in bar:
        model.train()
        losses = []
        for images, masks in loader:
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0]}
        if epoch % int(options["val_every"]) == 0 or epoch == epochs:
            per_image = evaluate(model, cache_dir, val_stems, size, device)
            row["val_dice"] = float(per_image.mean(axis=0).mean())
            if row["val_dice"] > best:
                best, best_epoch, since_best = row["val_dice"], epoch, 0
                best_per_class = per_image.mean(axis=0)
                save_checkpoint(out_dir / ".best.pt", model, {**meta, "epoch": epoch, "val_dice": best})
            else:
                since_best += 1
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=f"{row['val_dice']:.4f}")
            log.info("epoch %d/%d: train loss %.4f, validation Dice %.4f (best %.4f)", epoch, epochs, row["train_loss"], row["val_dice"], best)
        history.append(row)
        if options["patience"] and since_best >= int(options["patience"]):
            break

    pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)
    metrics = {
        "model": model_spec,
        "fold": fold,
        "best_epoch": best_epoch,
        "val_dice": best,
        "val_dice_per_class": {name: float(best_per_class[name]) for name in CLASSES},
        "train_images": len(train_stems),
        "val_images": len(val_stems),
        "seconds": round(time.monotonic() - started, 1),
        "device": str(device),
    }
    with atomic_path(out_dir / "metrics.json") as temporary:
        temporary.write_text(json.dumps(metrics, indent=2))
    (out_dir / ".best.pt").replace(out_dir / "model.pt")
    return metrics
