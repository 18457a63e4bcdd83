"""The training step of a packed group (bench/packed.py), vectorised over its members.

    logits = forward(members, x)               # x (K, B, T[, I]) -> (K, B, T, O), one call per layer
    loss = losses(members, logits, y)          # (K,) each member's loss, as its unpacked run's
    opt = Optimizers(members); opt.zero_grad(); opt.clip_and_step()
    batches = train_batches(member, epoch)     # a member's training batches, without a DataLoader
    x, y = batch(batches, device, dtype); kept = drop_diverged(...); log_train(...); evaluate(...)

Nothing here changes what a member computes, only how many calls it takes: the recurrence of the
K members is one C++ call per layer (models.packed `cpp`; `bmm` / `members` elsewhere), the head one
bmm, the loss one call where the task has a packed loss (`packed_loss`), gradient clipping one
norm per parameter and one scaling per member (the per-member global norm of
torch.nn.utils.clip_grad_norm_), and the optimizer step one foreach step over all members whose
optimizer settings are equal (the members' own optimizers keep their state: each state dict is
shared, so checkpoints hold what an unpacked run's do).
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch

from bench.divergence import at_validation
from models.packed import packed_linear, packed_recurrent_tm, recurrence


def forward(members: list, x: torch.Tensor) -> torch.Tensor:
    """The members' SequenceModule forward, packed: inputs -> recurrence -> linear head, time-major
    inside; returns batch-major logits (K, B, T, O) (a transposed view)."""
    m0 = members[0].module
    rnns = [m.module.rnn for m in members]
    mode = recurrence(x.device, rnns[0])
    if m0.task.one_hot:   # the tokens; (K, T, B, I) rows of the identity where a layer needs them
        ids = x.transpose(1, 2)
        hs = packed_recurrent_tm(rnns, lambda: m0.eye[ids], mode, ids=ids)
    else:
        hs = packed_recurrent_tm(rnns, x.transpose(1, 2), mode)
    return packed_linear([m.module.head for m in members], hs).transpose(1, 2)


def losses(members: list, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K,) the members' training losses: the task's packed loss, or one loss_and_metrics each."""
    task = members[0].task
    if hasattr(task, "packed_loss"):
        return task.packed_loss(logits, y)
    return torch.stack([m.task.loss_and_metrics(logits[k], y[k], metrics=False)[0] for k, m in enumerate(members)])


def train_batches(member, epoch: int):
    """The member's training batches of `epoch`: exactly its DataLoader's (batch_size=None: the
    dataset's items in the sampler's order), without the loader's per-batch machinery."""
    loader = member.loader("train", epoch)
    return (loader.dataset[i] for i in loader.sampler)


class Optimizers:
    """The members' optimizers stepped together: one optimizer of the members' class over all
    parameters of the members with equal settings, whose per-parameter state is the members' own
    state dicts (the same dict objects). Members leave with `drop`."""

    def __init__(self, members: list):
        self.members = list(members)
        self._build()

    def _build(self) -> None:
        by_key = defaultdict(list)
        for m in self.members:
            groups = m.opt.param_groups
            key = (type(m.opt), repr([sorted((k, repr(v)) for k, v in g.items() if k != "params") for g in groups]))
            by_key[key].append(m)
        self.opts = []
        for (cls, _), ms in by_key.items():
            groups = []
            for i, g in enumerate(ms[0].opt.param_groups):
                groups.append({**{k: v for k, v in g.items() if k != "params"},
                               "params": [p for m in ms for p in m.opt.param_groups[i]["params"]]})
            opt = cls(groups, **({"lr": groups[0]["lr"]} if "lr" in groups[0] else {}))
            for m in ms:
                for p in (p for g in m.opt.param_groups for p in g["params"]):
                    opt.state[p] = m.opt.state[p]      # one dict: updates land in the member's optimizer
            self.opts.append(opt)
        self.params = [p for m in self.members for p in m.params]
        self.sizes = [len(m.params) for m in self.members]

    def drop(self, member) -> None:
        self.members.remove(member)
        self._build()

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def clip_and_step(self) -> None:
        self._clip()
        for opt in self.opts:
            opt.step()

    def _clip(self) -> None:
        """torch.nn.utils.clip_grad_norm_ (norm 2, foreach) of each member at its grad_clip,
        vectorised: coef = clamp(max_norm / (‖g‖ + 1e-6), max=1) per member, g *= coef."""
        clipped = [(m, n) for m, n in zip(self.members, self.sizes) if m.cfg.optim.grad_clip is not None]
        if not clipped:
            return
        grads = [p.grad for m, _ in clipped for p in m.params]
        if any(g is None for g in grads):           # a parameter without a gradient: member by member
            for m, _ in clipped:
                torch.nn.utils.clip_grad_norm_(m.params, m.cfg.optim.grad_clip)
            return
        n = self.sizes[0]                           # members have one shape: n parameters each
        norms = torch.stack(torch._foreach_norm(grads, 2.0)).view(len(clipped), n)
        total = torch.linalg.vector_norm(norms, 2.0, dim=1)
        max_norm = torch.tensor([m.cfg.optim.grad_clip for m, _ in clipped], dtype=total.dtype)
        coef = ((total + 1e-6).reciprocal() * max_norm).clamp(max=1.0).tolist()   # as clip_grad_norm_'s max_norm / t
        torch._foreach_mul_(grads, [c for c in coef for _ in range(n)])


def batch(batches, device, dtype):
    """Stack the members' batches (x, y) into (K, ...) tensors; floating ones in the run's dtype."""
    out = []
    for part in zip(*batches):
        t = torch.stack(part).to(device)
        out.append(t.to(dtype) if t.is_floating_point() else t)
    return out


def drop_diverged(alive, loss, opt, results, step, wall) -> list[int]:
    """Members whose loss is not finite (and that stop on divergence) are recorded diverged at this
    step and leave the pack (masked: their gradients are never used); -> the kept members' indices."""
    finite = torch.isfinite(loss).tolist()
    kept = []
    for k, m in enumerate(list(alive)):
        if finite[k] or not m.cfg.trainer.stop_on_divergence:
            kept.append(k)
            continue
        alive.remove(m)
        opt.drop(m)
        results[m.h] = m.finish("diverged", step, wall(m), f"loss became {float(loss[k])} at step {step}")
    return kept


def drop_exploded(alive, opt, results, step, wall) -> None:
    """Members whose validation loss explodes (bench.divergence.at_validation) are recorded diverged
    at this step and leave the pack, before this validation's checkpoint, as bench.train's
    StopWhenExploded ends their unpacked runs."""
    for m in list(alive):
        why = at_validation(m.cfg, m.result, m.val)
        if why:
            alive.remove(m)
            opt.drop(m)
            results[m.h] = m.finish("diverged", step, wall(m), f"{why} at step {step}")


@torch.no_grad()
def log_train(alive, kept, loss, logits, y, epoch, step) -> None:
    """A train/ row for each member (its loss and the task's metrics), as Lightning's on_step log."""
    for m, k in zip(alive, kept):
        _, metrics = m.task.loss_and_metrics(logits[k], y[k])
        m.add({"epoch": epoch, "step": step, "train/loss": float(loss[k]),
               **{f"train/{key}": float(v) for key, v in metrics.items()}})


def solved(m) -> bool:
    """trainer.stop_when_solved: this validation meets the task's solved threshold (strictly, as
    bench.train's StopWhenSolved, an EarlyStopping with stopping_threshold)."""
    if not m.cfg.trainer.stop_when_solved:
        return False
    key, mode, threshold = m.task.solved_threshold()
    value = m.val.get(key, math.nan)
    return value > threshold if mode == "max" else value < threshold


@torch.no_grad()
def evaluate(alive: list, split: str, epoch: int, log_step: int, device, dtype) -> None:
    """Weighted means over the split's batches (as Lightning's epoch-level self.log), one row each."""
    limit = alive[0].cfg.trainer.limit_val_batches if split == "val" else None
    for m in alive:
        m.module.eval()
    sums: list[dict] = [{} for _ in alive]
    n = 0
    for i, batches in enumerate(zip(*(m.loader(split) for m in alive))):
        if limit is not None and i >= limit:
            break
        x, y = batch(batches, device, dtype)
        logits = forward(alive, x)
        n += y.shape[1]
        for k, m in enumerate(alive):
            loss, metrics = m.task.loss_and_metrics(logits[k], y[k])
            for key, v in {"loss": loss, **metrics}.items():
                sums[k][key] = sums[k].get(key, 0.0) + v * y.shape[1]
    for m, s in zip(alive, sums):
        m.module.train()
        values = {f"{split}/{k}": float(v / n) for k, v in s.items()}
        setattr(m, split, values)
        m.add({"epoch": epoch, "step": log_step, **values})
