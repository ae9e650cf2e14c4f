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

from . import config
from .atomic import atomic_path
from .classes import CLASSES
from .data import read_folds
from .inference import predict_probabilities
from .metrics import dice_per_class
from .model import build_model, save_checkpoint, to_network_input
from .cache import CacheEntry, verify_cache
from .masks import IGNORE, unpack_mask_batch

log = logging.getLogger("handbone")

def augmentations(size: int, mode: str, options: dict, seed: int) -> A.Compose:
    """The albumentations pipeline of one training sample.

    ``resize`` mode scales the whole image to ``size``; ``patch`` mode gets a
    full-resolution window of that size (see CachedImages). Then mild flips,
    affine moves and brightness/contrast changes.
    """
    steps = [A.Resize(size, size, interpolation=3, mask_interpolation=0)] if mode == "resize" else []  # INTER_AREA / nearest
    if options["hflip"] > 0:
        steps.append(A.HorizontalFlip(p=options["hflip"]))
    if options["affine"] > 0:
        scale, shift, rotate = options["scale"], options["shift"], options["rotate"]
        steps.append(
            A.Affine(
                scale=(1 - scale, 1 + scale), translate_percent=(-shift, shift), rotate=(-rotate, rotate), p=options["affine"]
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
        raise ValueError(f"unknown loss(es) {sorted(unknown)}; known: {sorted(factories)}")
    if ignore_index is not None and weights.get("focal"):
        # Its multilabel ignore_index indexes each class with the mask of
        # all classes and fails.
        raise ValueError("the focal loss of segmentation-models-pytorch cannot ignore pixels in multilabel mode: "
                         "drop train.loss.focal or set pseudo_label.ignore_uncertain to false")
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


def evaluate(model, locations: dict[str, Path], stems: list[str], input_size: int, mode: str, device) -> pd.DataFrame:
    """Per-image, per-class Dice at each image's original resolution."""
    model.eval()
    rows = []
    for stem in stems:
        entry = CacheEntry(locations[stem], stem)
        probabilities = predict_probabilities([model], np.array(entry.image), input_size, device, mode=mode)
        rows.append(dice_per_class(probabilities > 0.5, entry.mask()))
    return pd.DataFrame(rows, columns=CLASSES, index=stems)


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
        raise ValueError(f"fold {fold} is not in the folds table (folds: {sorted(set(folds['fold']))})")
    usable = folds[~folds["excluded"]] if "excluded" in folds else folds
    train_stems = [Path(name).stem for name in usable.loc[usable["fold"] != fold, "image_name"]]
    val_stems = [Path(name).stem for name in usable.loc[usable["fold"] == fold, "image_name"]]
    pseudo_stems = []
    if pseudo is not None and len(pseudo):
        validation_people = set(folds.loc[folds["fold"] == fold, "person_id"].astype(str))
        clash = pseudo["person_id"].astype(str).isin(validation_people)
        if clash.any():
            log.warning("fold %d: %d pseudo-labelled image(s) of people in its validation part left out: %s",
                        fold, int(clash.sum()), list(pseudo.loc[clash, "image_name"])[:5])
        pseudo_stems = list(pseudo.loc[~clash, "stem"].astype(str))
        shared = set(pseudo_stems) & (set(train_stems) | set(val_stems))
        if shared:
            raise ValueError(f"pseudo-labelled images share names with training images: {sorted(shared)[:3]}")
    return train_stems, val_stems, pseudo_stems


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

    Writes ``model.pt`` (best state dict + the spec that made it),
    ``history.csv`` (one row per epoch) and ``metrics.json`` into
    ``out_dir``; the checkpoint is written last, so its presence means done.
    After every epoch the whole training state goes to ``last.pt``: a killed
    job rerun with the same model, options and images continues after the
    last finished epoch, and ends with the same weights as an uninterrupted
    run on the CPU (every epoch reseeds all random generators).
    """
    options = config.section("train", options, "train options")
    mode = options["input_mode"]
    cache_dir, out_dir = Path(cache_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folds = read_folds(folds_path, fold)
    pseudo = None
    if pseudo_dir is not None:
        pseudo = pd.read_csv(Path(pseudo_dir) / "cache.csv", dtype={"person_id": str, "stem": str}, keep_default_na=False)
    train_stems, val_stems, pseudo_stems = fold_images(folds, fold, pseudo)
    if not train_stems or not val_stems:
        raise ValueError(f"fold {fold} of {folds_path} leaves no training or no validation images after exclusions")

    # Every entry is checked once; a damaged one is rebuilt, never trained on.
    locations = verify_cache(cache_dir, train_stems + val_stems, out_dir / "rebuilt_cache")
    pseudo_crcs = []
    if pseudo_stems:
        locations.update(verify_cache(pseudo_dir, pseudo_stems, out_dir / "rebuilt_cache"))
        crcs = pseudo.set_index("stem").loc[pseudo_stems, ["image_crc", "mask_crc"]]
        pseudo_crcs = [[stem, int(image), int(mask)] for stem, (image, mask) in zip(pseudo_stems, crcs.to_numpy())]
        log.info("fold %d: %d real and %d pseudo-labelled training images", fold, len(train_stems), len(pseudo_stems))

    seed = int(options["seed"]) + 1000 * fold
    seed_everything(seed)
    size = int(options["input_size"])
    model = build_model(model_spec, size).to(device)
    transform = augmentations(size, mode, options["augment"], seed)
    dataset = CachedImages(locations, train_stems + pseudo_stems, transform, mode, size)
    generator = torch.Generator()
    loader = DataLoader(
        dataset,
        batch_size=min(int(options["batch_size"]), len(dataset)),
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=generator,
        persistent_workers=workers > 0,
    )
    loss_fn = make_loss(options["loss"], IGNORE if dataset.mask_bytes > 4 else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(options["lr"]), weight_decay=float(options["weight_decay"]))
    epochs, accumulate = int(options["epochs"]), max(1, int(options["accumulate"]))
    updates_per_epoch = max(1, len(loader) // accumulate)
    steps = epochs * updates_per_epoch
    warmup = int(options["warmup_epochs"]) * updates_per_epoch

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_fraction = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress_fraction))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    meta = {"model": model_spec, "input_size": size, "input_mode": mode, "fold": fold}

    fingerprint = _fingerprint(model_spec, options, fold, train_stems, val_stems, pseudo_crcs)
    state = {"epoch": 0, "history": [], "best": -1.0, "best_epoch": -1, "since_best": 0, "best_per_class": None}
    last_path, best_path = out_dir / "last.pt", out_dir / ".best.pt"
    if last_path.is_file():
        saved = torch.load(last_path, map_location="cpu", weights_only=True)
        validated = saved.get("state", {}).get("best_epoch", -1) >= 0
        if saved.get("fingerprint") == fingerprint and (best_path.is_file() or not validated):
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            state = saved["state"]
            log.info("resuming fold %d after epoch %d of %d (%s)", fold, state["epoch"], epochs, last_path)
        else:
            log.info("%s was made by other settings or images; starting over", last_path)

    started = time.monotonic()
    bar = tqdm(range(state["epoch"] + 1, epochs + 1), desc=f"train fold {fold}", disable=not progress)
    for epoch in bar:
        # Reseeding per epoch makes an epoch's batches and augmentations
        # independent of earlier epochs, so a resumed run repeats them.
        seed_everything(seed + epoch)
        generator.manual_seed(seed + epoch)
        transform.set_random_seed(seed + epoch)
        model.train()
        losses = []
        optimizer.zero_grad(set_to_none=True)
        for step, (images, masks) in enumerate(loader, start=1):
            images = to_network_input(images.to(device, non_blocking=True))
            masks = unpack_mask_batch(masks.to(device, non_blocking=True))
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(model(images), masks)
            scaler.scale(loss / accumulate).backward()
            losses.append(loss.item())
            if step % accumulate == 0:
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0]}
        if epoch % int(options["val_every"]) == 0 or epoch == epochs:
            per_image = evaluate(model, locations, val_stems, size, mode, device)
            row["val_dice"] = float(per_image.mean(axis=0).mean())
            if row["val_dice"] > state["best"]:
                state.update(best=row["val_dice"], best_epoch=epoch, since_best=0)
                state["best_per_class"] = [float(value) for value in per_image.mean(axis=0)]
                save_checkpoint(best_path, model, {**meta, "epoch": epoch, "val_dice": row["val_dice"]})
            else:
                state["since_best"] += 1
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=f"{row['val_dice']:.4f}")
        validation = f", validation Dice {row['val_dice']:.4f} (best {state['best']:.4f})" if "val_dice" in row else ""
        log.info("epoch %d/%d: train loss %.4f, lr %.2e%s", epoch, epochs, row["train_loss"], row["lr"], validation)
        state["history"].append(row)
        state["epoch"] = epoch
        stop = bool(options["patience"]) and state["since_best"] >= int(options["patience"])
        with atomic_path(last_path) as temporary:
            torch.save(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "state": state,
                },
                temporary,
            )
        if stop:
            log.info("early stop after epoch %d: no improvement in %d validations", epoch, options["patience"])
            break

    pd.DataFrame(state["history"]).to_csv(out_dir / "history.csv", index=False)
    metrics = {
        "model": model_spec,
        "fold": fold,
        "best_epoch": state["best_epoch"],
        "val_dice": state["best"],
        "val_dice_per_class": dict(zip(CLASSES, state["best_per_class"])),
        "train_images": len(train_stems),
        "pseudo_labelled_images": len(pseudo_stems),
        "val_images": len(val_stems),
        "epochs_run": state["epoch"],
        "seconds_this_run": round(time.monotonic() - started, 1),
        "device": str(device),
    }
    with atomic_path(out_dir / "metrics.json") as temporary:
        temporary.write_text(json.dumps(metrics, indent=2))
    best_path.replace(out_dir / "model.pt")
    last_path.unlink()
    return metrics
