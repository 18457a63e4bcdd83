"""Output feedback: the previous output is an input of the next step (`model.output_feedback`).

Solberg slides: S^t = h(X^t, S^{t-1}, Y^{t-1}), h = a(U x^t + V s^{t-1} + W y^{t-1} + b). Here the
recurrent stack (models.recurrent.Recurrent, any registry cell) reads u^t = [x^t ; e(y^{t-1})] and
the head gives the output:

    s^t = cell(u^t, s^{t-1}),   z^t = head(dropout(s^t)) (logits over C classes),   y^t = argmax z^t

e(c) is the one-hot of class c and e(y^0) = 0 (no output before the first step). The first layer's
input weight is [U W] (its first I columns act on x^t, the last C on e(y^{t-1})); the cell's own
recurrent weight is V (none for `jordan`: h^t = tanh(U x^t + W y^{t-1} + b), the Jordan network).

What is fed as y^{t-1} (`model.output_feedback`):
* `prediction`: the model's own argmax y^{t-1} (free-running; no gradient through the choice);
* `teacher`: the target y*^{t-1} (teacher forcing);
* `scheduled`: scheduled sampling (Bengio et al. 2015): per sequence and step, the target with
  probability eps_i, else the model's own argmax, eps_i at training step i (`teacher_ratio`):
      constant          eps_i = r
      linear            eps_i = r * max(0, 1 - i / k)              (0 from step k on)
      inverse_sigmoid   eps_i = r * k / (k + exp(i / k))           (Bengio et al.'s, k >= 1)
  with r = `model.feedback_ratio`, k = `model.feedback_k`.
Evaluation always runs free-running (the targets are never fed): the metrics are those of the
model on its own. With every step teacher-forced (eps = 1) all of u^{1..T} is known beforehand and
the stack runs over the whole sequence in one call (`OutputFeedback.decode(parallel=True)`): for
`jordan` no step depends on another, so training is parallel over time (bench.benchmarks.scaling,
the "BPTT h(x, y*)" row); any other ratio goes step by step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.recurrent import Recurrent

FEEDBACK = ("none", "prediction", "teacher", "scheduled")
SCHEDULES = ("constant", "linear", "inverse_sigmoid")


def teacher_ratio(model_cfg, step: int) -> float:
    """eps_i: the probability of feeding the target y*^{t-1} at training step `step`."""
    mode = model_cfg.output_feedback
    if mode in ("none", "prediction"):
        return 0.0
    if mode == "teacher":
        return 1.0
    r, k = model_cfg.feedback_ratio, model_cfg.feedback_k
    if model_cfg.feedback_schedule == "linear":
        return r * max(0.0, 1.0 - step / k)
    if model_cfg.feedback_schedule == "inverse_sigmoid":
        return r * k / (k + math.exp(min(step / k, 700.0)))
    return r


class OutputFeedback(nn.Module):
    """Recurrent stack + head whose previous output (one-hot over `n_classes`) is fed back."""

    def __init__(self, input_size: int, n_classes: int, model_cfg):
        super().__init__()
        self.n_classes = n_classes
        self.rnn = Recurrent(input_size + n_classes, model_cfg)
        self.drop = nn.Dropout(model_cfg.dropout)
        self.head = nn.Linear(self.rnn.output_size, n_classes)
        self.register_buffer("eye", torch.eye(n_classes), persistent=False)

    def forward(self, x, y=None, ratio: float = 0.0):
        """Logits (B, T, C) of x (B, T, I); y (B, T) the targets, needed when ratio > 0."""
        return self.decode(x, y, ratio)[0]

    def decode(self, x, y=None, ratio: float = 0.0, parallel: bool | None = None, generator=None):
        """(logits (B, T, C), fed (B, T, C): e(y^{t-1}) as fed at each step).

        parallel: the whole sequence in one call of the stack (ratio 1 only); default: when
        ratio >= 1. generator: the draws of scheduled sampling (default the global RNG, seeded
        by the run and saved in checkpoints, tasks.base)."""
        B, T, _ = x.shape
        if ratio > 0 and y is None:
            raise ValueError("y: the targets are needed to feed them (ratio > 0)")
        parallel = ratio >= 1.0 if parallel is None else parallel
        if parallel:
            if ratio < 1.0:
                raise ValueError(f"parallel: only with every step teacher-forced (ratio 1); got ratio {ratio}")
            fed = torch.cat([x.new_zeros(B, 1, self.n_classes), self.eye[y[:, :-1]].to(x.dtype)], 1)
            out, _ = self.rnn(torch.cat([x, fed], -1))
            return self.head(self.drop(out)), fed
        state, prev, logits, fed = None, x.new_zeros(B, self.n_classes), [], []
        for t in range(T):
            fed.append(prev)
            out, state = self.rnn(torch.cat([x[:, t], prev], -1).unsqueeze(1), state=state)
            logits.append(self.head(self.drop(out[:, 0])))
            if t + 1 < T:
                prev = self.eye[logits[-1].detach().argmax(-1)].to(x.dtype)
                if ratio > 0:
                    gold = torch.rand(B, 1, device=x.device, generator=generator) < ratio
                    prev = torch.where(gold, self.eye[y[:, t]].to(x.dtype), prev)
        return torch.stack(logits, 1), torch.stack(fed, 1)
