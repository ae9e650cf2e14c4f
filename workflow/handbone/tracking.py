"""Training curves in DVCLive's layout, so DVC (`dvc plots`, `dvc metrics`,
`dvc exp show`) and its editors read them while a fold trains and after.

A fold's folder gets ``dvclive/``: ``plots/metrics/train/loss.tsv``,
``plots/metrics/train/lr.tsv`` and ``plots/metrics/val/dice.tsv`` (one row per
epoch, ``step`` = epoch) and ``metrics.json`` (the latest values, then the
fold's final metrics). ``history.csv`` stays the record other steps read.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("handbone")

# DVCLive's layout inside a fold's folder.
LIVE_DIR = "dvclive"
# history.csv column -> DVCLive metric name.
CURVES = {"train_loss": "train/loss", "lr": "train/lr", "val_dice": "val/dice"}


class TrainingLog:
    """A fold's DVCLive log, rewritten from the training history whenever a
    training (re)starts: a resumed run then holds every finished epoch once,
    even if the killed one had logged an epoch that its last.pt missed."""

    def __init__(self, out_dir: Path, history: list[dict]):
        from dvclive import Live

        # Studio reporting is a network call: off unless a user sets
        # DVC_STUDIO_OFFLINE=false (and a token) for the training jobs.
        os.environ.setdefault("DVC_STUDIO_OFFLINE", "true")
        self.dir = Path(out_dir) / LIVE_DIR
        # save_dvc_exp=False: a job must never make its own experiment (under
        # `dvc exp run` DVC makes one for the whole pipeline); dvcyaml=None:
        # dvc.yaml is the repository's, and jobs of other folds run beside it.
        try:
            self.live = Live(str(self.dir), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)
        except Exception as error:  # noqa: BLE001 - a logger must not stop hours of training
            # e.g. scmrepo's "Empty git repo" when the working directory is
            # a git repository without a commit.
            log.warning("no DVCLive log in %s: %s: %s", self.dir, type(error).__name__, error)
            self.live = None
            return
        for row in history:
            self.epoch(row)

    def epoch(self, row: dict) -> None:
        """One history row (epoch, train_loss, lr, and val_dice when validated)."""
        if self.live is None:
            return
        self.live.step = int(row["epoch"])
        for column, name in CURVES.items():
            value = row.get(column)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.live.log_metric(name, float(value))
        self.live.next_step()

    def close(self, metrics: dict) -> None:
        """The fold's final numbers beside the latest curve values."""
        if self.live is None:
            return
        self.live.summary["best"] = {"val_dice": metrics["val_dice"], "epoch": metrics["best_epoch"]}
        self.live.summary["epochs_run"] = metrics["epochs_run"]
        self.live.end()
