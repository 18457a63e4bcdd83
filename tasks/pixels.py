"""Pixel-by-pixel image classification (Le et al. 2015; Arjovsky et al. 2016), many-to-one.

Definition. An image of P pixels, scaled to [0, 1] (divided by `scale`), is read one pixel a step:
x_t = img[pi(t)], t = 1..T with T = P, input size 1. `order: sequential` reads row by row
(pi = identity); `order: permuted` uses one fixed permutation pi of the P pixels, drawn from
`data_seed` (the same for every run and model seed). The last state goes through a linear layer
to the classes; loss cross-entropy; metric accuracy. Baseline: the majority training class
predicted for every test image.

Data, one loader for both sources (`datasets.Dataset` with columns `pixels` and `label`):
* `dataset: sklearn:digits` (default, offline): scikit-learn's bundled handwritten digits, 1,797
  8x8 images (T = 64, values 0..16, `scale: 16`); test = `test_fraction` of them drawn with
  `data_seed`.
* a hub id, e.g. `ylecun/mnist` (T = 784, `scale: 255`), its `train` and `test` splits.
Validation is carved from train with `data_seed` (`val_fraction`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

import datasets
import lightning as L
import numpy as np
import sklearn.datasets
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from bench.schema import ConfigError, opt
from models.recurrent import Recurrent
from tasks.base import SkipDone, Task, TaskModule, batches_done

SKLEARN = {"sklearn:digits": "load_digits"}


@dataclass
class PixelConfig:
    # defaults: scikit-learn digits, sequential; presets bench/configs/task/{digits,pdigits,mnist,pmnist}.yaml
    name: str = opt("pixels", choices=("pixels",))
    dataset: str = opt("sklearn:digits", help="sklearn:digits (bundled, offline) or a hub id, e.g. ylecun/mnist")
    hub_config: Optional[str] = opt(None, none_is_null=True, help="hub subset/config name")
    image_column: str = opt("image", help="hub: column holding the image")
    label_column: str = opt("label", help="hub: column holding the class")
    scale: float = opt(16.0, gt=0, help="pixels are divided by this (16 for the digits, 255 for MNIST)")
    order: str = opt("sequential", choices=("sequential", "permuted"),
                     help="pixel order; permuted = one permutation fixed by data_seed")
    test_fraction: float = opt(0.2, gt=0, lt=1, help="sklearn:digits: test share (drawn with data_seed)")
    val_fraction: float = opt(0.1, gt=0, lt=1, help="validation share carved from train with data_seed")
    max_train: Optional[int] = opt(None, ge=1, help="keep the first N training images")
    max_eval: Optional[int] = opt(None, ge=1, help="keep the first N validation/test images")
    batch_size: int = opt(32, ge=1)
    eval_batch_size: Optional[int] = opt(None, ge=1, help="default: batch_size")
    data_seed: int = opt(1234, ge=0, help="seed of the test/validation draws and of the permutation")


def load_images(cfg):
    """`datasets.DatasetDict` train/validation/test with columns pixels (flat list) and label (int)."""
    if cfg.dataset.startswith("sklearn:"):
        if cfg.dataset not in SKLEARN:
            raise ConfigError(f"task.dataset: invalid value {cfg.dataset!r}; allowed: {', '.join(SKLEARN)} or a hub id")

        bunch = getattr(sklearn.datasets, SKLEARN[cfg.dataset])()
        full = datasets.Dataset.from_dict({"pixels": bunch.data.tolist(), "label": bunch.target.tolist()})
        parts = full.train_test_split(test_size=cfg.test_fraction, seed=cfg.data_seed, shuffle=True)
        raw = {"train": parts["train"], "test": parts["test"]}
    else:
        raw = {s: datasets.load_dataset(cfg.dataset, cfg.hub_config, split=s) for s in ("train", "test")}
        for s, ds in raw.items():
            for key in ("image_column", "label_column"):
                if getattr(cfg, key) not in ds.column_names:
                    raise ConfigError(f"task.{key}: column {getattr(cfg, key)!r} not in {cfg.dataset}[{s}]; "
                                      f"available: {', '.join(ds.column_names)}")
            raw[s] = ds.map(lambda b: {"pixels": [np.asarray(im, dtype=np.float32).reshape(-1)
                                                 for im in b[cfg.image_column]], "label": b[cfg.label_column]},
                            batched=True, remove_columns=ds.column_names, desc="flatten images")
    parts = raw["train"].train_test_split(test_size=cfg.val_fraction, seed=cfg.data_seed, shuffle=True)
    out = {"train": parts["train"], "validation": parts["test"], "test": raw["test"]}
    for split in out:
        cap = cfg.max_train if split == "train" else cfg.max_eval
        if cap is not None and len(out[split]) > cap:
            out[split] = out[split].select(range(cap))
    return datasets.DatasetDict(out)


def permutation(n_pixels: int, order: str, data_seed: int) -> torch.Tensor:
    """The reading order pi: identity, or one permutation drawn from data_seed alone."""
    if order == "sequential":
        return torch.arange(n_pixels)
    return torch.randperm(n_pixels, generator=torch.Generator().manual_seed(data_seed))


class PixelData(L.LightningDataModule):
    """Batches (x (B, T, 1) in [0, 1], y (B,))."""

    def __init__(self, cfg, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.cfg, self.seed, self.num_workers = cfg, seed, num_workers
        self.data: Optional[dict] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.data is not None:
            return
        raw = load_images(self.cfg)
        n_pixels = len(raw["train"][0]["pixels"])
        self.perm = permutation(n_pixels, self.cfg.order, self.cfg.data_seed)
        self.data = {}
        for split, ds in raw.items():
            cols = ds.with_format("numpy")[:]          # (N, P) arrays, not Python lists (MNIST: 47M pixels)
            x = torch.from_numpy(np.asarray(cols["pixels"], dtype=np.float32)) / self.cfg.scale
            self.data[split] = (x[:, self.perm].unsqueeze(-1), torch.from_numpy(np.asarray(cols["label"])).long())
        self.num_classes = int(max(int(y.max()) for _, y in self.data.values())) + 1

    def _loader(self, split: str, train: bool = False):
        self.setup()
        x, y = self.data[split]
        b = self.cfg.batch_size if train else (self.cfg.eval_batch_size or self.cfg.batch_size)
        if train:
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            x, y = x[order], y[order]
        batches = [(x[i:i + b], y[i:i + b]) for i in range(0, len(y), b)]
        skip = batches_done(self.trainer) if train else 0
        return DataLoader(batches, batch_size=None, sampler=SkipDone(range(len(batches)), skip),
                          num_workers=self.num_workers, generator=torch.Generator())

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("validation")

    def test_dataloader(self):
        return self._loader("test")

    def majority(self) -> int:
        return Counter(self.data["train"][1].tolist()).most_common(1)[0][0]


class PixelModule(TaskModule):
    def __init__(self, run_cfg, num_classes: int):
        super().__init__(run_cfg)
        m = run_cfg.model
        self.rnn = Recurrent(1, m)
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(self.rnn.output_size, num_classes)

    def forward(self, x):
        _, state = self.rnn(x)
        h = state[0]  # (layers*dirs, B, H)
        z = torch.cat([h[-2], h[-1]], -1) if self.run_cfg.model.bidirectional else h[-1]
        return self.head(self.drop(z))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        return self.train_loss(loss, len(y))

    def eval_step(self, batch, split):
        x, y = batch
        logits = self(x)
        self.log(f"{split}/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log(f"{split}/acc", (logits.argmax(-1) == y).float().mean(), on_epoch=True, batch_size=len(y),
                 sync_dist=True)


class PixelTask(Task):
    Config = PixelConfig
    Data = PixelData
    primary = "test/acc"
    mode = "max"
    long_dependency = False

    def module(self, datamodule=None) -> PixelModule:
        dm = datamodule or self.datamodule()
        dm.setup()
        return PixelModule(self.run, dm.num_classes)

    def baseline(self) -> dict[str, float]:
        """The majority training class on the test images."""
        dm = self.datamodule()
        dm.setup()
        y = dm.data["test"][1]
        return {"test/acc": float((y == dm.majority()).float().mean())}
