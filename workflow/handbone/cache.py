"""The training cache: its format, writing, checking and repair.

Every training image is decoded and contrast-enhanced once; training then
reads it many times. Per image the cache holds two ``.npy`` files that are
memory-mapped on reading, so a crop touches only its own rows:

- ``<stem>.image.npy``: uint8 (H, W), the preprocessed image;
- ``<stem>.mask.npy``: uint8 (H, W, 4), the 29 class bits of each pixel
  packed with ``np.packbits(..., bitorder="little")`` along the last axis.

``cache.csv`` lists the entries with their sizes, sources and CRC-32 of
both files; ``options.json`` holds the preprocessing options. Training
checks every entry it uses against its CRC first (``verify_cache``) and
rebuilds a damaged one from its PNG and JSON instead of training on it. The
same ``preprocess`` function is applied to test images at prediction time.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config
from .atomic import atomic_path
from .data import mask_for_row, read_image, read_index
from .errors import DataError
from .masks import pack_mask, unpack_mask
from .preprocess import preprocess

log = logging.getLogger("handbone")


def file_crc(path: Path) -> int:
    checksum = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            checksum = zlib.crc32(chunk, checksum)
    return checksum


def write_entry(folder: Path, row, image: np.ndarray, packed_mask: np.ndarray) -> dict:
    """Save one cache entry (``row``: its index row) and return its line of
    cache.csv, with the CRC-32 of both files."""
    stem = Path(row["image_name"]).stem
    np.save(folder / f"{stem}.image.npy", image)
    np.save(folder / f"{stem}.mask.npy", packed_mask)
    return {
        "image_name": row["image_name"],
        "stem": stem,
        "height": image.shape[0],
        "width": image.shape[1],
        "image_path": row["image_path"],
        "label_path": row["label_path"],
        "image_crc": file_crc(folder / f"{stem}.image.npy"),
        "mask_crc": file_crc(folder / f"{stem}.mask.npy"),
    }


def _write_labelled_entry(folder: Path, row, options: dict) -> dict:
    image = preprocess(read_image(row["image_path"]), options)
    return write_entry(folder, row, image, pack_mask(mask_for_row(row)))


def build_cache(index_path: str | Path, out: str | Path, options: dict, progress: bool = True) -> Path:
    """Write the cache of every training image listed in the index."""
    options = config.section("preprocess", options, "preprocess options")
    index = read_index(index_path, "train")
    out = Path(out)
    with atomic_path(out) as staging:
        staging.mkdir(parents=True)
        rows = [
            _write_labelled_entry(staging, row, options)
            for _, row in tqdm(index.iterrows(), total=len(index), desc="preprocess", disable=not progress)
        ]
        pd.DataFrame(rows).to_csv(staging / "cache.csv", index=False)
        (staging / "options.json").write_text(json.dumps(options, sort_keys=True) + "\n")
    return out


def verify_cache(cache_dir: str | Path, stems: list[str], spare_dir: str | Path) -> dict[str, Path]:
    """Where to read each entry from: the cache, or, for an entry whose files
    are missing or do not match their CRC-32, a copy rebuilt from its PNG
    and JSON into ``spare_dir`` (a warning names it; the shared cache is
    left as it is, for ``snakemake --forcerun preprocess`` to redo)."""
    cache_dir, spare_dir = Path(cache_dir), Path(spare_dir)
    table = pd.read_csv(cache_dir / "cache.csv", keep_default_na=False).set_index("stem")
    missing = [stem for stem in stems if stem not in table.index]
    if missing:
        raise DataError(f"{cache_dir}/cache.csv has no entry for {len(missing)} image(s), e.g. {missing[:3]}")
    options = json.loads((cache_dir / "options.json").read_text()) if (cache_dir / "options.json").is_file() else None
    locations = {}
    for stem in stems:
        row = table.loc[stem]
        files = [cache_dir / f"{stem}.image.npy", cache_dir / f"{stem}.mask.npy"]
        if "image_crc" not in table.columns:  # a cache from before checksums: nothing to compare
            locations[stem] = cache_dir
            continue
        intact = all(path.is_file() for path in files) and [file_crc(path) for path in files] == [
            int(row["image_crc"]),
            int(row["mask_crc"]),
        ]
        if intact:
            locations[stem] = cache_dir
            continue
        if options is None or not row["label_path"]:
            raise DataError(
                f"{files[0].parent}: cache entry {stem} is damaged (missing or CRC mismatch) and cannot be "
                "rebuilt from this cache (no options.json or no label file); rerun the rule that wrote it"
            )
        log.warning(
            "%s: cache entry %s is damaged (missing or CRC mismatch); rebuilt from %s into %s "
            "(rerun the preprocess rule to repair the cache)",
            cache_dir,
            stem,
            row["image_path"],
            spare_dir,
        )
        spare_dir.mkdir(parents=True, exist_ok=True)
        _write_labelled_entry(spare_dir, {**row.to_dict(), "image_name": row["image_name"]}, options)
        locations[stem] = spare_dir
    return locations


class CacheEntry:
    """Lazy access to one cached image and its mask."""

    def __init__(self, cache_dir: str | Path, stem: str):
        self.image = np.load(Path(cache_dir) / f"{stem}.image.npy", mmap_mode="r")
        self.packed_mask = np.load(Path(cache_dir) / f"{stem}.mask.npy", mmap_mode="r")

    def mask(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """(29, h, w) uint8 mask of a window."""
        return unpack_mask(np.asarray(self.packed_mask[rows, cols]))
