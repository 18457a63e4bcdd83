"""The LightningDataModule base of the text families: load, build, bucketed loaders, vocabularies
in checkpoints."""
from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader

from tasks.base import SkipDone, batches_done
from tasks.text.batching import BucketBatchSampler, ListDataset
from tasks.text.sources import load_splits, sources
from tasks.text.vocab import Vocab


class TextDataModule(L.LightningDataModule):
    """Base for text datamodules. Subclasses implement `build(raw: DatasetDict)` (fill
    `self.examples`, `self.lengths`, `self.vocabs`) and `collate(items) -> batch`."""

    def __init__(self, cfg, seed: int = 0, num_workers: int = 0, path: str = "task."):
        super().__init__()
        self.cfg, self.seed, self.num_workers, self.path = cfg, seed, num_workers, path
        self.examples: dict[str, list] = {}
        self.lengths: dict[str, list[int]] = {}
        self.vocabs: dict[str, Vocab] = {}
        self.info: dict = {}      # recorded in result.json under "data": sources, unseen labels
        self._restored: Optional[dict] = None
        self.ready = False

    # -- to implement
    def build(self, raw) -> None:
        raise NotImplementedError

    def collate(self, items: list):
        raise NotImplementedError

    # -- lifecycle
    def setup(self, stage: Optional[str] = None) -> None:
        if self.ready:
            return
        self.info["source"] = sources(self.cfg, self.path)
        self.build(load_splits(self.cfg, self.path))
        if self._restored is not None:
            self._check_restored()
        self.ready = True

    def _check_restored(self):
        for name, d in self._restored.items():
            if name in self.vocabs and self.vocabs[name].to_dict() != d:
                raise ValueError(f"checkpoint vocabulary {name!r} differs from the one built from "
                                 f"the training data ({len(d['itos'])} vs {len(self.vocabs[name])} tokens)")

    def state_dict(self) -> dict:
        return {"vocabs": {k: v.to_dict() for k, v in self.vocabs.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._restored = dict(state.get("vocabs", {}))
        if self.ready:
            self._check_restored()

    # -- loaders
    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        c = self.cfg
        bs = c.batch_size if train else (c.eval_batch_size or c.batch_size)
        sampler = BucketBatchSampler(self.lengths[split], bs, shuffle=train, seed=self.seed,
                                     pool=c.bucket_pool)
        if train and self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
            sampler = SkipDone(sampler, batches_done(self.trainer))
        # its own generator: making an iterator must not draw from the global (dropout) RNG
        return DataLoader(ListDataset(self.examples[split]), batch_sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, generator=torch.Generator())

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("validation", False)

    def test_dataloader(self):
        return self._loader("test", False)
