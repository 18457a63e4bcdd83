"""Time-series forecasting from the columns of a CSV (or a hub data set), many-to-one.

Definition. The series is one table, sorted by `time_column`, of the columns in `columns` (inputs)
and `targets`. Each column x is first transformed, `transform` in
    none: z_t = x_t,  log: z_t = ln x_t,  diff: z_t = x_t - x_{t-1},  log_diff: z_t = ln x_t - ln x_{t-1}
(log_diff of a price is its log return). The rows are split chronologically: the first
1 - val_fraction - test_fraction of them are the training span, then validation, then test. With
`normalize: standard` every column is scaled by u_t = (z_t - mu) / sigma, mu and sigma taken over
the training span only. A sample ends at row s: the input is u_{s-window+1..s} (window rows of
every input column) and the target z_{s+1..s+horizon} of every target column; it belongs to the
split that holds all its target rows (samples whose targets straddle a boundary are dropped; an
input window may reach back into the previous span, its targets never do).

Model: Recurrent -> last state -> linear to horizon x targets (normalised units). Loss: MSE in
normalised units. Metrics (val/test): MSE and MAE in the units of z (denormalised), averaged over
targets and horizons. Baselines on the test samples, in the same units:
    persistence     z^_{s+k} = z_s                          (the random walk on an untransformed series)
    random_walk     z^_{s+k} = 0   (diff transforms only: no change in the level, the random walk)
    seasonal_naive  z^_{s+k} = z_{s+k-m*ceil(k/m)},  m = season
    mean            z^_{s+k} = mu  (the training-span mean)
`baseline()["test/mse"]` is the best of them, so "beats the baseline" means beating every one.

Data: `task.data_files.train` names the one file with the whole series (local data dir, or
`task.data_dir` for your own CSV); with no local data dir, the hub id `task.dataset`
(`task.hub_split`). Both go through `datasets.load_dataset`, as the text families do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import datasets
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.schema import ConfigError, opt
from models.recurrent import Recurrent
from tasks.base import SkipDone, Task, TaskModule, batches_done
from tasks.text import ENV_DATA, check_file, local_root, resolve_files

TRANSFORMS = ("none", "log", "diff", "log_diff")
SPLITS = ("train", "validation", "test")


@dataclass
class TimeSeriesConfig:
    # defaults: monthly sunspots; presets bench/configs/task/{sunspots,msft}.yaml
    name: str = opt("timeseries", choices=("timeseries",))
    dataset: str = opt("", help="hub data set id (used when no local data dir is set)")
    hub_config: Optional[str] = opt(None, none_is_null=True, help="hub subset/config name")
    hub_revision: Optional[str] = opt(None, none_is_null=True, help="hub revision")
    hub_split: str = opt("train", help="hub split holding the whole series")
    data_dir: Optional[str] = opt(None, none_is_null=True, help="local data root; default $RNNBENCH_DATA; null+unset = hub")
    data_files: dict = opt({"train": "timeseries/sunspots_monthly.csv"},
                           help="train -> the CSV with the whole series (split by time, not by file)")
    time_column: Optional[str] = opt("month", help="rows are sorted by this column; null = file order")
    columns: list = opt(["sunspots"], help="input columns")
    targets: list = opt(["sunspots"], help="target columns (forecast)")
    transform: str = opt("none", choices=TRANSFORMS, help="applied to every column before windowing "
                         "(log_diff = log returns)")
    normalize: str = opt("standard", choices=("standard", "none"),
                         help="standardise every column with the training span's mean and std")
    window: int = opt(64, ge=1, help="input steps")
    horizon: int = opt(1, ge=1, help="forecast the targets 1..horizon steps after the window")
    season: int = opt(132, ge=1, help="period (steps) of the seasonal-naive baseline")
    val_fraction: float = opt(0.1, gt=0, lt=1, help="rows of the validation span (after the training span)")
    test_fraction: float = opt(0.1, gt=0, lt=1, help="rows of the test span (the last ones)")
    batch_size: int = opt(64, ge=1)
    eval_batch_size: Optional[int] = opt(None, ge=1, help="default: batch_size")
    data_seed: int = opt(1234, ge=0, help="kept for the common interface: the splits are chronological")

    def check(self, path: str) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"{path}test_fraction: val_fraction + test_fraction = "
                              f"{self.val_fraction + self.test_fraction:g}; allowed: a sum < 1")
        for key in ("columns", "targets"):
            values = getattr(self, key)
            if not values or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{path}{key}: invalid value {values!r}; allowed: a non-empty list of column names")


def load_table(cfg, path: str = "task."):
    """The series as a `datasets.Dataset` (local CSV or hub) and where it came from."""
    root = local_root(cfg)
    if root is not None:
        files = resolve_files(cfg, root, path)["train"]
        for f in files:
            check_file(f, "csv")   # empty, or not UTF-8 at line N: one line before datasets reads it
        return datasets.load_dataset("csv", data_files={"train": files}, split="train"), ", ".join(files)
    if not cfg.dataset:
        raise ConfigError(f"{path}dataset: empty and no local data (set {path}data_dir or ${ENV_DATA} "
                          f"with {path}data_files.train); allowed: a hub id")
    ds = datasets.load_dataset(cfg.dataset, cfg.hub_config, split=cfg.hub_split, revision=cfg.hub_revision)
    return ds, f"{cfg.dataset}[{cfg.hub_split}]"


def transform(x: np.ndarray, how: str, name: str, path: str = "task.") -> np.ndarray:
    """(N,) values -> z (N or N-1 rows); see the module docstring."""
    if how in ("log", "log_diff"):
        if (x <= 0).any():
            raise ConfigError(f"{path}transform: {how} needs positive values; column {name!r} has "
                              f"{int((x <= 0).sum())} values <= 0; allowed here: none, diff")
        x = np.log(x)
    return np.diff(x) if how in ("diff", "log_diff") else x


def split_bounds(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Row indices where the validation and the test spans start."""
    return int(round(n * (1 - val_fraction - test_fraction))), int(round(n * (1 - test_fraction)))


def sample_ends(n: int, window: int, horizon: int, bounds: tuple[int, int]) -> dict[str, np.ndarray]:
    """Last input row s of every sample, per split (the split that holds rows s+1..s+horizon)."""
    s = np.arange(window - 1, n - horizon)
    first, last = s + 1, s + horizon
    v, t = bounds
    return {"train": s[last < v], "validation": s[(first >= v) & (last < t)], "test": s[first >= t]}


class SeriesData(L.LightningDataModule):
    """Windows of one series; batches (x (B, window, inputs), y (B, horizon, targets)) in normalised units."""

    def __init__(self, cfg, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.cfg, self.seed, self.num_workers = cfg, seed, num_workers
        self.z: Optional[np.ndarray] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.z is not None:
            return
        c = self.cfg
        ds, where = load_table(c)
        names = list(dict.fromkeys(list(c.columns) + list(c.targets)))
        for key in ("time_column", "columns", "targets"):
            wanted = [getattr(c, key)] if key == "time_column" else getattr(c, key)
            for col in wanted:
                if col is not None and col not in ds.column_names:
                    raise ConfigError(f"task.{key}: column {col!r} not in {where}; available: {', '.join(ds.column_names)}")
        table = ds.select_columns(names + ([c.time_column] if c.time_column else []))[:]  # plain lists: float64
        order = np.argsort(np.asarray(table[c.time_column]), kind="stable") if c.time_column else np.arange(len(ds))
        cols = []
        for name in names:
            x = np.asarray(table[name], dtype=np.float64)[order]
            if np.isnan(x).any():
                raise ValueError(f"{where}: column {name!r} has {int(np.isnan(x).sum())} missing values")
            cols.append(transform(x, c.transform, name))
        self.z = np.stack(cols, 1)
        self.names = names
        self.bounds = split_bounds(len(self.z), c.val_fraction, c.test_fraction)
        train = self.z[:self.bounds[0]]
        self.mu = train.mean(0) if c.normalize == "standard" else np.zeros(len(names))
        sd = train.std(0) if c.normalize == "standard" else np.ones(len(names))
        self.sigma = np.where(sd > 0, sd, 1.0)
        self.u = torch.tensor((self.z - self.mu) / self.sigma, dtype=torch.float32)
        self.inputs = [names.index(n) for n in c.columns]
        self.target_idx = [names.index(n) for n in c.targets]
        self.ends = sample_ends(len(self.z), c.window, c.horizon, self.bounds)
        for split in SPLITS:
            if len(self.ends[split]) == 0:
                raise ConfigError(f"task.window: window {c.window} + horizon {c.horizon} leaves no {split} "
                                  f"samples in {len(self.z)} rows; allowed: smaller window/horizon or larger fractions")
        if self.bounds[0] <= c.season * math.ceil(c.horizon / c.season):
            raise ConfigError(f"task.season: invalid value {c.season}; allowed: a period shorter than the "
                              f"training span ({self.bounds[0]} rows)")

    def batch(self, ends) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        ends = torch.as_tensor(np.asarray(ends))
        rows_in = ends[:, None] + torch.arange(-c.window + 1, 1)[None]
        rows_out = ends[:, None] + torch.arange(1, c.horizon + 1)[None]
        return self.u[rows_in][..., self.inputs], self.u[rows_out][..., self.target_idx]

    def _loader(self, batches: list, skip: int = 0):
        ds = _BatchList(self, batches)
        return DataLoader(ds, batch_size=None, sampler=SkipDone(range(len(ds)), skip),
                          num_workers=self.num_workers, generator=torch.Generator())

    def train_dataloader(self):
        self.setup()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        ends = self.ends["train"]
        order = torch.randperm(len(ends), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        b = self.cfg.batch_size
        batches = [ends[order[i:i + b].numpy()][rank::world] for i in range(0, len(ends), b)]
        return self._loader(batches, batches_done(self.trainer))

    def _eval(self, split):
        self.setup()
        b = self.cfg.eval_batch_size or self.cfg.batch_size
        ends = self.ends[split]
        return self._loader([ends[i:i + b] for i in range(0, len(ends), b)])

    def val_dataloader(self):
        return self._eval("validation")

    def test_dataloader(self):
        return self._eval("test")

    def baselines(self, split: str = "test") -> dict[str, np.ndarray]:
        """Each naive forecast of `split`'s targets, (N, horizon, targets), in the units of z."""
        c, z = self.cfg, self.z[:, self.target_idx]
        s = self.ends[split]
        k = np.arange(1, c.horizon + 1)
        lag = c.season * np.ceil(k / c.season).astype(int)
        out = {"persistence": np.repeat(z[s][:, None], c.horizon, 1),
               "seasonal_naive": z[s[:, None] + k[None] - lag[None]],
               "mean": np.broadcast_to(self.mu[self.target_idx], (len(s), c.horizon, len(self.target_idx)))}
        if c.transform in ("diff", "log_diff"):
            out["random_walk"] = np.zeros_like(out["persistence"])
        return out

    def targets(self, split: str = "test") -> np.ndarray:
        s, k = self.ends[split], np.arange(1, self.cfg.horizon + 1)
        return self.z[s[:, None] + k[None]][..., self.target_idx]


class _BatchList(Dataset):
    def __init__(self, dm: SeriesData, batches: list):
        self.dm, self.batches = dm, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.dm.batch(self.batches[i])


class ForecastModule(TaskModule):
    def __init__(self, run_cfg, dm: SeriesData):
        super().__init__(run_cfg)
        m, c = run_cfg.model, run_cfg.task
        # the targets' training-span scale, in the checkpoint: metrics are in the units of z
        self.register_buffer("mu", torch.tensor(dm.mu[dm.target_idx], dtype=torch.float32))
        self.register_buffer("sigma", torch.tensor(dm.sigma[dm.target_idx], dtype=torch.float32))
        self.shape = (c.horizon, len(c.targets))
        self.rnn = Recurrent(len(c.columns), m)
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, c.horizon * len(c.targets))

    def forward(self, x):
        out, state = self.rnn(x)
        h = state[0]  # (layers*dirs, B, H): the last layer's final states
        z = torch.cat([h[-2], h[-1]], -1) if self.run_cfg.model.bidirectional else h[-1]
        return self.head(self.drop(z)).view(len(x), *self.shape)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        return self.train_loss(loss, len(y))

    def eval_step(self, batch, split):
        x, y = batch
        pred = self(x)
        self.log(f"{split}/loss", F.mse_loss(pred, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        err = (pred - y) * self.sigma
        self.log(f"{split}/mse", err.pow(2).mean(), on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log(f"{split}/mae", err.abs().mean(), on_epoch=True, batch_size=len(y), sync_dist=True)


class TimeSeriesTask(Task):
    Config = TimeSeriesConfig
    Data = SeriesData
    primary = "test/mse"
    mode = "min"

    def module(self, datamodule=None) -> ForecastModule:
        dm = datamodule or self.datamodule()
        dm.setup()
        return ForecastModule(self.run, dm)

    def baseline(self) -> dict[str, float]:
        """MSE and MAE of every naive forecast on the test span; test/mse = the best of them."""
        return self._naive("test", "test")

    def val_baseline(self) -> dict[str, float]:
        return self._naive("validation", "val")

    def _naive(self, split: str, prefix: str) -> dict[str, float]:
        dm = self.datamodule()
        dm.setup()
        y = dm.targets(split)
        out = {}
        for name, pred in dm.baselines(split).items():
            out[f"{prefix}/mse_{name}"] = float(np.mean((pred - y) ** 2))
            out[f"{prefix}/mae_{name}"] = float(np.mean(np.abs(pred - y)))
        best = min((k for k in out if k.startswith(f"{prefix}/mse_")), key=out.get)
        out[f"{prefix}/mse"], out[f"{prefix}/mae"] = out[best], out[best.replace("mse", "mae")]
        return out
