"""Batches of similar lengths (deterministic, sharded over ranks), padding and masks."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset, Sampler


def _rng(*parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class BucketBatchSampler(Sampler):
    """Batches of indices with similar lengths.

    shuffle=True (training): permute with (seed, epoch), cut into pools of `pool` batches, sort
    each pool by length, cut into batches, shuffle the batch order. shuffle=False (evaluation):
    all indices sorted by length (stable), cut into batches. Deterministic given seed and epoch;
    `set_epoch` is called by Lightning at every epoch start. Under torch.distributed each rank
    keeps every world-th batch (the list padded by repetition so all ranks get the same count).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 pool: int = 50, drop_last: bool = False, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None):
        self.lengths = list(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.pool, self.drop_last = pool, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _world(self) -> tuple[int, int]:
        if self.num_replicas is not None:
            return self.num_replicas, self.rank or 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def batches(self) -> list[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        lengths = self.lengths
        if self.shuffle:
            g = _rng(self.seed, self.epoch)
            order = torch.randperm(n, generator=g).tolist()
            out = []
            step = bs * self.pool
            for s in range(0, n, step):
                chunk = sorted(order[s:s + step], key=lambda i: lengths[i])
                out += [chunk[j:j + bs] for j in range(0, len(chunk), bs)]
            perm = torch.randperm(len(out), generator=g).tolist()
            out = [out[i] for i in perm]
        else:
            order = sorted(range(n), key=lambda i: lengths[i])
            out = [order[j:j + bs] for j in range(0, n, bs)]
        if self.drop_last:
            out = [b for b in out if len(b) == bs]
        world, rank = self._world()
        if world > 1:
            total = math.ceil(len(out) / world) * world
            out = (out + out[:total - len(out)])[rank::world]
        return out

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        if self.shuffle:
            step = bs * self.pool
            k = sum(math.ceil(min(step, n - s) / bs) if not self.drop_last else min(step, n - s) // bs
                    for s in range(0, n, step))
        else:
            k = n // bs if self.drop_last else math.ceil(n / bs)
        world, _ = self._world()
        return math.ceil(k / world)


def pad(seqs: Sequence, value: int = 0, dtype=torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """List of 1-D sequences -> ((B, T) tensor padded with `value`, (B,) lengths)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    T = int(lengths.max()) if len(seqs) else 0
    out = torch.full((len(seqs), max(T, 1)), value, dtype=dtype)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, :len(s)] = torch.as_tensor(s, dtype=dtype)
    return out, lengths


def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True on real steps."""
    T = int(lengths.max()) if max_len is None else max_len
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def last_valid(out: torch.Tensor, lengths: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """Sequence summary from a (B, T, H*dirs) output: forward half at step length-1, backward
    half at step 0 (the backward direction's final state) when bidirectional."""
    idx = (lengths - 1).clamp(min=0).to(out.device)
    last = out[torch.arange(out.size(0), device=out.device), idx]
    if not bidirectional:
        return last
    h = out.size(-1) // 2
    return torch.cat([last[:, :h], out[:, 0, h:]], dim=-1)


class ListDataset(Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]
