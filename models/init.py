"""Initialisers, applied per gate block (each H x H or H x I block on its own, never the fused
matrix as a whole), to torch.nn.RNN/LSTM/GRU modules and to the custom cells alike.

The initialisers are plain functions `fn(block) -> None` (in place) passed in explicitly:
`apply_per_block(weight, gates, fn)`; the config names map to them through RECURRENT/INPUT.

* recurrent (weight_hh): `default` (torch: U(-1/sqrt(H), 1/sqrt(H))), `orthogonal` (each block
  Q with Q^T Q = I), `identity` (each block = I, and both biases zeroed, as in Le et al. 2015's
  IRNN).
* input (weight_ih): `default`, `xavier_uniform`, `orthogonal` (per H x I block).
* forget bias (LSTM): bias_ih's forget block = value, bias_hh's forget block = 0, so the
  effective bias b_ih + b_hh of the forget gate equals the configured value.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn


def orthogonal_(block: torch.Tensor) -> None:
    nn.init.orthogonal_(block)


def identity_(block: torch.Tensor) -> None:
    with torch.no_grad():
        block.copy_(torch.eye(*block.shape, dtype=block.dtype, device=block.device))


def xavier_uniform_(block: torch.Tensor) -> None:
    nn.init.xavier_uniform_(block)


RECURRENT: dict[str, Optional[Callable]] = {"default": None, "orthogonal": orthogonal_, "identity": identity_}
INPUT: dict[str, Optional[Callable]] = {"default": None, "xavier_uniform": xavier_uniform_,
                                        "orthogonal": orthogonal_}


def apply_per_block(weight: torch.Tensor, gates: int, fn: Callable) -> None:
    """Apply `fn` in place to each of the `gates` row blocks of a (gates*H, K) weight."""
    H = weight.shape[0] // gates
    with torch.no_grad():
        for k in range(gates):
            block = weight[k * H:(k + 1) * H].detach().clone()
            fn(block)
            weight[k * H:(k + 1) * H] = block


def init_layer(weight_ih, weight_hh, bias_ih, bias_hh, *, gates: int,
               recurrent: Optional[Callable] = None, input: Optional[Callable] = None,
               forget_block: Optional[int] = None, forget_bias: Optional[float] = None,
               zero_bias: bool = False) -> None:
    """Initialise one layer-direction's torch-layout parameters, block by block, in place."""
    with torch.no_grad():
        if recurrent is not None:
            apply_per_block(weight_hh, gates, recurrent)
        if input is not None:
            apply_per_block(weight_ih, gates, input)
        if zero_bias:
            bias_ih.zero_()
            bias_hh.zero_()
        if forget_bias is not None and forget_block is not None:
            H = weight_hh.shape[1]
            bias_ih[forget_block * H:(forget_block + 1) * H] = forget_bias
            bias_hh[forget_block * H:(forget_block + 1) * H] = 0.0


def init_from_config(weight_ih, weight_hh, bias_ih, bias_hh, blocks: tuple, model_cfg) -> None:
    """The config's initialisers for one layer-direction whose gate blocks are named `blocks`."""
    rec = getattr(model_cfg, "recurrent_init", "default")
    init_layer(weight_ih, weight_hh, bias_ih, bias_hh, gates=len(blocks),
               recurrent=RECURRENT[rec],
               input=INPUT[getattr(model_cfg, "input_init", "default")],
               forget_block=blocks.index("f") if "f" in blocks else None,
               forget_bias=getattr(model_cfg, "forget_bias", None),
               zero_bias=rec == "identity")


def uniform_all_(module: nn.Module, r: float) -> None:
    """Every parameter of `module` U(-r, r) (model.init_range)."""
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-r, r)
