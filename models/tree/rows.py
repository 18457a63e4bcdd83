"""Row-sparse word-vector gradients: the same numbers as a dense embedding, without touching the
rows of the words a batch does not hold.

A tree batch reads a few hundred of the ~18,000 word vectors, yet a dense `nn.Embedding` gradient
is the whole (V, E) table: zero-filled, clipped and updated by AdaGrad over every row at every step
(most of a RecNN step, half of a Tree-LSTM step on CPU). Here:

* `row_lookup(weight, rows, inv)` = `weight[rows][inv]` for `rows` the batch's distinct word ids
  (sorted) and `inv` each position's index into them; its gradient for `weight` is a coalesced
  sparse COO tensor holding the rows of `rows` only. Each row is the sum of its positions'
  gradients in position order, as the dense embedding backward sums them, so the values equal the
  dense gradient's rows bit for bit.
* `RowAdagrad`: torch's AdaGrad (dense parameters go through it unchanged) that applies AdaGrad's
  dense formula (sum += g*g; p -= lr * g / (sqrt(sum) + eps)) to the rows of a sparse gradient
  only. The rows a dense gradient leaves at zero would not move (sum + 0, p - 0), so the result is
  the dense update bit for bit (torch's own sparse AdaGrad rounds differently: lr * (g / std)).
  Weight decay moves every row, so `RowAdagrad` refuses a sparse gradient with weight_decay != 0,
  unless its param group sets `row_decay`: then the decay is the L2 of the gradient's rows only
  (g + weight_decay * p on those rows; Socher et al.'s code regularises the words of a batch so).
* `clip_grad_norm(params, max_norm)`: torch.nn.utils.clip_grad_norm_ for dense and sparse
  gradients alike (the norm of a sparse gradient from its values). The total norm sums the same
  squares in another order than over the dense table, so a step that is clipped may differ from a
  dense run in the last bits of the scale; an unclipped step scales by exactly 1.
"""
from __future__ import annotations

import torch


class _RowGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, rows, pad_id: int):
        ctx.save_for_backward(rows)
        ctx.shape, ctx.pad_id = weight.shape, pad_id
        return weight.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        if ctx.pad_id >= 0 and bool((rows == ctx.pad_id).any()):  # as nn.Embedding(padding_idx=...)
            grad = grad.masked_fill((rows == ctx.pad_id).unsqueeze(1), 0.0)
        g = torch.sparse_coo_tensor(rows.unsqueeze(0), grad, ctx.shape, is_coalesced=True,
                                    check_invariants=False)
        return g, None, None


def row_lookup(weight: torch.Tensor, rows: torch.Tensor, inv: torch.Tensor, pad_id=None) -> torch.Tensor:
    """weight[rows][inv] with a row-sparse gradient for weight (rows sorted and distinct)."""
    x = _RowGrad.apply(weight, rows, -1 if pad_id is None else int(pad_id))
    return x.index_select(0, inv)


class RowAdagrad(torch.optim.Adagrad):
    """torch.optim.Adagrad whose update of a row-sparse gradient is the dense update of its rows."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        held = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    if (group["weight_decay"] != 0 and not group.get("row_decay")) or group["maximize"]:
                        raise ValueError("optim.weight_decay: row-sparse word-vector gradients need 0 "
                                         "(decay moves every row); allowed: 0")
                    held.append((p, p.grad, group))
                    p.grad = None
        super().step()
        for p, grad, group in held:
            p.grad = grad
            self._rows(p, grad.coalesce(), group)
        return loss

    def _rows(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        state["step"] += 1
        clr = group["lr"] / (1 + (float(state["step"]) - 1) * group["lr_decay"])
        rows, g = grad._indices()[0], grad._values()
        new = p.index_select(0, rows)
        if group["weight_decay"] != 0:   # row_decay (checked in step): the L2 of these rows only
            g = g.add(new, alpha=group["weight_decay"])
        s = state["sum"].index_select(0, rows)
        s.addcmul_(g, g, value=1)
        std = s.sqrt().add_(group["eps"])
        new.addcdiv_(g, std, value=-clr)
        state["sum"].index_copy_(0, rows, s)
        p.index_copy_(0, rows, new)


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their total 2-norm is at most max_norm, as
    torch.nn.utils.clip_grad_norm_ does; sparse gradients count by their (coalesced) values."""
    grads = []
    for p in params:
        if p.grad is not None:
            if p.grad.is_sparse:
                p.grad = p.grad.coalesce()
            grads.append(p.grad)
    if not grads:
        return torch.tensor(0.0)
    norms = [torch.linalg.vector_norm(g._values() if g.is_sparse else g, 2.0) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef)
    return total
