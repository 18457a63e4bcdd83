"""Lightning's CSV logger, with its one in-place write made atomic: when a new column appears (the
first validation, the test) Lightning reads metrics.csv and writes it again with the wider header;
a kill or a full disk in that write would lose the rows already logged, which a resume cannot
log again. Here that rewrite goes through `write_atomic` (the old file until the new one is whole)."""
from __future__ import annotations

import csv
import io

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from bench.store import write_atomic


class AtomicExperimentWriter(ExperimentWriter):
    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fieldnames)   # as Lightning's: "\r\n" line ends
        w.writeheader()
        w.writerows(rows)
        write_atomic(self.metrics_file_path, buf.getvalue())


class AtomicCSVLogger(CSVLogger):
    """CSVLogger whose header rewrites are atomic (module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AtomicExperimentWriter(log_dir=self.log_dir)
        return self._experiment
