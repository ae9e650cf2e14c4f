"""The training cache: its format, writing, checking and repair.

Every training image is decoded and contrast-enhanced once; training then
reads it many times. Per image the cache holds two ``.npy`` files that are
memory-mapped on reading, so a crop touches only its own rows:

- ``<stem>.image.npy``: uint8 (h, w), the preprocessed image in the frame
  the networks see it in (frames.py: mirrored and cropped when the options
  say so; the whole image otherwise);
- ``<stem>.mask.npy``: uint8 (h, w, 4), the 29 class bits of each pixel
  packed with ``np.packbits(..., bitorder="little")`` along the last axis.

``cache.csv`` lists the entries with their frame's size, the image's
original size, the frame, sources and CRC-32 of both files;
``options.json`` holds the preprocessing options. Training
checks every entry it uses against its CRC first (``verify_cache``) and
rebuilds a damaged one from its PNG and JSON instead of training on it. The
same ``preprocess`` function is applied to test images at prediction time.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config
from .arguments import progress, section_argument
from .atomic import atomic_path
from .data import mask_for_row, read_image, read_index
from .errors import DataError
from .frames import Frame, frame_for, frame_from_record, frame_record, read_frames, to_network
from .masks import pack_mask, unpack_mask
from .preprocess import preprocess

log = logging.getLogger("handbone")


def file_crc(path: Path) -> int:
    checksum = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            checksum = zlib.crc32(chunk, checksum)
    return checksum


def write_entry(folder: Path, row, image: np.ndarray, packed_mask: np.ndarray, frame: Frame) -> dict:
    """Save one cache entry (``row``: its index row; image and mask already
    in ``frame``) and return its line of cache.csv, with the CRC-32 of both
    files."""
    stem = Path(row["image_name"]).stem
    np.save(folder / f"{stem}.image.npy", image)
    np.save(folder / f"{stem}.mask.npy", packed_mask)
    return {
        "image_name": row["image_name"],
        "stem": stem,
        "height": image.shape[0],
        "width": image.shape[1],
        "image_height": frame.height,
        "image_width": frame.width,
        **frame_record(frame),
        "image_path": row["image_path"],
        "label_path": row["label_path"],
        "image_crc": file_crc(folder / f"{stem}.image.npy"),
        "mask_crc": file_crc(folder / f"{stem}.mask.npy"),
    }


def network_input(image: np.ndarray, frame: Frame, options: dict) -> np.ndarray:
    """A raw image as the networks see it: preprocessed, then in its frame."""
    return to_network(preprocess(image, options), frame)


def _write_labelled_entry(folder: Path, row, options: dict, frame: Frame) -> dict:
    image = network_input(read_image(row["image_path"]), frame, options)
    return write_entry(folder, row, image, to_network(pack_mask(mask_for_row(row)), frame), frame)


def build_cache(
    index_path: str | Path, out: str | Path, options: dict, frames_path=None, progress: bool = True
) -> Path:
    """Write the cache of every training image listed in the index, each in
    its frame from ``frames_path`` (frames.csv; without it, or for an image
    it does not list, estimated from the image)."""
    options = config.section("preprocess", options, "preprocess options")
    index = read_index(index_path, "train")
    known = read_frames(frames_path) if frames_path else None
    out = Path(out)

    def entry(row):
        frame = frame_for(row["image_name"], read_image(row["image_path"]), options, known)
        return _write_labelled_entry(staging, row, options, frame)

    with atomic_path(out) as staging:
        staging.mkdir(parents=True)
        rows = [
            entry(row) for _, row in tqdm(index.iterrows(), total=len(index), desc="preprocess", disable=not progress)
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
        frame = entry_frame(row)
        # The labels are drawn at the image's size (the row's height and width are the frame's).
        source = {**row.to_dict(), "height": frame.height, "width": frame.width}
        _write_labelled_entry(spare_dir, source, options, frame)
        locations[stem] = spare_dir
    return locations


@functools.lru_cache(maxsize=8)
def _cache_table(cache_dir: str) -> pd.DataFrame:
    return pd.read_csv(Path(cache_dir) / "cache.csv", keep_default_na=False, dtype={"stem": str}).set_index("stem")


def entry_frame(row) -> Frame:
    """The frame of a cache.csv row (a cache from before frames: the whole image)."""
    if "flip" not in row or row["flip"] == "":
        return Frame.whole(int(row["height"]), int(row["width"]))
    return frame_from_record(row, int(row["image_height"]), int(row["image_width"]))


def original_labels(cache_dir: str | Path, stem: str) -> np.ndarray:
    """(29, H, W) uint8 labels of a cached training image on the original
    image: the cached mask when its frame is the whole image, else drawn
    from the label file again (a crop may have cut labelled pixels, which
    must count against the predictions)."""
    row = _cache_table(str(cache_dir)).loc[stem]
    frame = entry_frame(row)
    if frame.is_whole:
        return CacheEntry(cache_dir, stem).mask()
    return mask_for_row({"label_path": row["label_path"], "height": frame.height, "width": frame.width})


class CacheEntry:
    """Lazy access to one cached image and its mask."""

    def __init__(self, cache_dir: str | Path, stem: str):
        self.image = np.load(Path(cache_dir) / f"{stem}.image.npy", mmap_mode="r")
        self.packed_mask = np.load(Path(cache_dir) / f"{stem}.mask.npy", mmap_mode="r")

    def mask(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """(29, h, w) uint8 mask of a window."""
        return unpack_mask(np.asarray(self.packed_mask[rows, cols]))


# -- the command line: `handbone preprocess` (cli.py dispatches) --


def preprocess_command(args) -> None:
    build_cache(args.index, args.out, args.options, args.frames, progress=progress(args))
    log.info("preprocessing cache written to %s", args.out)


def preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(function=preprocess_command)
    parser.add_argument("--index", required=True)
    section_argument(parser, "preprocess", '\'{"clahe": {"enabled": false}}\'')
    parser.add_argument("--frames", help="frames CSV (rule frames); without it each image's frame is estimated from it")
    parser.add_argument("--out", required=True, help="cache folder")
