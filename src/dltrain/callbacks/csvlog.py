"""metrics.csv beside the event file: every scalar the run logs, one `tag,step,value` row each (the step axis
of each tag as in TensorBoard: the optimizer step for train/*, lr and diag/*, the epoch for val/*, test/*,
time/*). The sweep report, scripts/time_to_accuracy.py and the tests read this, never the event files.

Its state in a checkpoint is the number of rows written by then, so a resumed run first cuts the file back to
that point: rows a killed segment wrote after its last checkpoint are replaced, not repeated (as TensorBoard's
purge_step does for the event file)."""
from __future__ import annotations

import csv
from contextlib import contextmanager
from pathlib import Path

from dltrain.callbacks.base import Callback
from dltrain.errors import WriteFailed

HEADER = ("tag", "step", "value")


def read_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of a metrics.csv, in the order written."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            curves.setdefault(row["tag"], []).append((int(row["step"]), float(row["value"])))
    return curves


class MetricsCSV(Callback):
    def __init__(self):
        self.file = None
        self.rows = 0
        self.resume_rows: int | None = None

    def on_fit_start(self, trainer) -> None:
        path = trainer.out_dir / "metrics.csv"
        kept = []
        if self.resume_rows is not None and path.is_file():  # a resumed run: keep what its checkpoint had seen
            with open(path, newline="") as f:
                kept = list(csv.reader(f))[1:1 + self.resume_rows]
        try:
            self.file = open(path, "w", newline="")
        except OSError as e:
            raise WriteFailed(path, e) from e
        self.writer = csv.writer(self.file)
        with self.writing():
            self.writer.writerow(HEADER)
            self.writer.writerows(kept)
        self.rows = len(kept)

    def on_log(self, trainer, scalars: dict, step: int) -> None:
        if self.file is not None:
            with self.writing():
                self.writer.writerows((tag, step, float(value)) for tag, value in scalars.items())
            self.rows += len(scalars)

    def state_dict(self) -> dict:
        if self.file is not None:
            with self.writing():
                self.file.flush()  # what the checkpoint counts is on disk
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.resume_rows = int(state["rows"])

    def on_fit_end(self, trainer, result: dict) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError as e:
                if result["status"] != "failed":  # a failed run has said what it could not write already
                    raise WriteFailed(file.name, e) from e

    @contextmanager
    def writing(self):
        """An OSError (a full disk) as WriteFailed naming metrics.csv."""
        try:
            yield
        except OSError as e:
            raise WriteFailed(self.file.name, e) from e
