"""The layer stack: `Recurrent(input_size, model_cfg)`, see README.md (Models).

    out, state = net(x, lengths=None, state=None)

* `x` (B, T, I) batch-first; `out` (B, T, H * dirs); `state` a tuple in torch layout, each
  tensor (num_layers * dirs, B, width), index layer * dirs + direction: `(h,)` for RNN/GRU,
  `(h, c)` for LSTM, `(h, c, a)` for LSTM with FGR (a = previous gate activations, (.., 3H)).
* `lengths` (B,) optional: steps t >= lengths[b] give zero outputs and leave the state as it
  was; the backward direction starts at each sequence's last valid step, and its final state
  is the one after step 0 (as torch's packed sequences).
* Stacking: `num_layers` layers, `dropout` between layers (not after the last one).
* Residual (`residual: true`, needs num_layers >= 2): for every layer l >= 1 (whose input, the
  previous layer's output after dropout, has the layer's output size H * dirs) the layer's
  input is added to its output: out_l = layer_l(u) + u, u = dropout(out_{l-1}). Layer 0 has
  no residual connection (its input is the raw features).
* Two implementations, `net.implementation` "fused" or "custom" (`net.fused` is the same as a
  bool). Fused: torch.nn.RNN/LSTM/GRU, for the variants the cell class says they can express:
  one multi-layer torch module, or one per layer when residual; `lengths` go through
  pack_padded_sequence. Custom: per layer and direction, the input projection of all steps is
  one matmul and only the recurrence loops (`cell.scan`, a hand-written BPTT; on CPU in C++,
  models/cells/kernels.py). `model.impl` fused/custom forces one; auto picks by `choose()`.
* Both implementations have the same parameters in the same order (optimizer states line up)
  and the same initial values for a seed; a state dict of either loads into the other.
* Initialisation: models.init per gate block, identical for both paths.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench.schema import ConfigError
from models import init as minit
from models.cells import kernels
from models.registry import CELLS, TREE_CELLS, cell_class

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def choose(cls, cfg, device_type: str | None = None) -> str:
    """The implementation `model.impl=auto` takes, from measurements (python -m bench.benchmarks.small).

    A fixed table per (cell, device type), never timed at run time, so a config gets the same
    implementation on the same kind of machine. On CPU, torch has oneDNN kernels for the LSTM
    only; its GRU and RNN are a loop of ATen ops, slower than the custom path's C++ scans at
    every size measured (hidden 40-256, one thread: GRU 1.1-5x, RNN 1.2-3.5x). So GRU and RNN
    (tanh, ReLU, IRNN) take the custom path on CPU when the C++ scans are built. The LSTM stays
    on oneDNN: the custom scans are within about 15 % of it either way, and its stored results
    keep their implementation. Stacked layers with dropout stay fused (torch draws those
    dropout masks inside its kernel, so the random numbers would differ). On CUDA (cuDNN)
    every fusable variant is fused. The device type is CUDA when torch sees a GPU (as
    Lightning's `accelerator=auto`), else CPU.
    """
    if cfg.impl == "custom" or not cls.fusable(cfg):
        return "custom"
    if cfg.impl == "fused":
        return "fused"
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if (device_type == "cpu" and cls.torch_module in (nn.GRU, nn.RNN)
            and (cfg.num_layers == 1 or cfg.dropout == 0) and kernels.available()):
        return "custom"
    return "fused"


def _reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse time-major x (T, B, F) within each sequence's valid length (an involution)."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)             # (T, 1)
    L = lengths.to(x.device).unsqueeze(0)                         # (1, B)
    idx = torch.where(t < L, L - 1 - t, t)                        # (T, B)
    return x.gather(0, idx.unsqueeze(-1).expand_as(x))


def param_keys(num_layers: int, dirs: int, residual: bool, fused: bool) -> dict:
    out = {}
    for l in range(num_layers):
        for d, sfx in enumerate(("", "_reverse")[:dirs]):
            for n in _NAMES:
                if not fused:
                    out[(l, d, n)] = f"layers.{l}.{d}.{n}"
                elif residual:
                    out[(l, d, n)] = f"rnns.{l}.{n}_l0{sfx}"
                else:
                    out[(l, d, n)] = f"rnns.0.{n}_l{l}{sfx}"
    return out


def _convert_state_dict(module, state_dict, prefix, *args) -> None:
    """Load-time hook: rename the keys of a state dict saved by the other implementation
    (e.g. a fused GRU's checkpoint resumed where auto now picks the custom path)."""
    if not module.fusable_cfg:
        return
    mine, other = module.param_keys(), module.param_keys(not module.fused)
    if any(prefix + k in state_dict for k in mine.values()):
        return
    for key, old in other.items():
        if prefix + old in state_dict:
            state_dict[prefix + mine[key]] = state_dict.pop(prefix + old)


class Recurrent(nn.Module):
    def __init__(self, input_size: int, model_cfg):
        super().__init__()
        cfg = model_cfg
        if cfg.cell in TREE_CELLS:
            raise ConfigError(f"model.cell: {cfg.cell!r} is a tree cell, for task.name=treebank only; "
                              f"allowed here: {', '.join(CELLS)}")
        self.cfg = cfg
        self.cell_cls = cls = cell_class(cfg.cell)
        self.input_size, self.hidden_size = input_size, cfg.hidden_size
        self.num_layers = cfg.num_layers
        self.dirs = 2 if cfg.bidirectional else 1
        self.residual = bool(cfg.residual)
        self.output_size = cfg.hidden_size * self.dirs
        self.implementation = choose(cls, cfg)
        self.fusable_cfg = cls.fusable(cfg)
        self.fused = self.implementation == "fused"
        self.drop = nn.Dropout(cfg.dropout)
        H = cfg.hidden_size
        sizes = [input_size] + [self.output_size] * (self.num_layers - 1)
        if self.fused:
            kw = dict(hidden_size=H, batch_first=True, bidirectional=cfg.bidirectional, **cls.torch_kwargs)
            if self.residual:
                self.rnns = nn.ModuleList(cls.torch_module(s, num_layers=1, **kw) for s in sizes)
            else:
                self.rnns = nn.ModuleList([cls.torch_module(input_size, num_layers=self.num_layers,
                                                            dropout=cfg.dropout if self.num_layers > 1 else 0.0,
                                                            **kw)])
            blocks = cls.block_names(cfg)
            for rnn in self.rnns:
                for layer in range(rnn.num_layers):
                    for sfx in ("", "_reverse")[:self.dirs]:
                        p = [getattr(rnn, f"{n}_l{layer}{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                        minit.init_from_config(*p, blocks, cfg)
            self.state_size = 2 if cls.torch_module is nn.LSTM else 1
            self.state_widths = [H] * self.state_size
        else:
            self.layers = nn.ModuleList(
                nn.ModuleList(cls(s, H, cfg) for _ in range(self.dirs)) for s in sizes)
            for layer in self.layers:
                for cell in layer:
                    minit.init_from_config(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                           cell.blocks, cfg)
            first = self.layers[0][0]
            self.state_size = first.state_size
            self.state_widths = first.state_widths()
        self.register_load_state_dict_pre_hook(_convert_state_dict)

    def param_keys(self, fused: bool | None = None) -> dict:
        """(layer, direction, name) -> state-dict key of the 4 torch-layout weights of each layer
        and direction, in this implementation (or in the fused / custom one)."""
        return param_keys(self.num_layers, self.dirs, self.residual, self.fused if fused is None else fused)

    # ------------------------------------------------------------------ helpers
    def init_state(self, batch: int, device=None, dtype=None) -> tuple:
        p = next(self.parameters())
        n = self.num_layers * self.dirs
        return tuple(torch.zeros(n, batch, w, device=device or p.device, dtype=dtype or p.dtype)
                     for w in self.state_widths)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: tuple | None = None):
        if state is not None and not isinstance(state, (tuple, list)):
            state = (state,)
        if state is not None and len(state) != self.state_size:
            raise ValueError(f"state: expected a tuple of {self.state_size} tensors, got {len(state)}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths)
        if self.fused:
            return self._forward_fused(x, lengths, state)
        return self._forward_custom(x, lengths, state)

    # ------------------------------------------------------------------ fused path
    def _run_torch(self, rnn, x, lengths, hx):
        if hx is not None and self.state_size == 1:
            hx = hx[0]
        T = x.shape[1]
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, hn = rnn(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            out, hn = rnn(x, hx)
        return out, (hn if isinstance(hn, tuple) else (hn,))

    def _forward_fused(self, x, lengths, state):
        if not self.residual:
            return self._run_torch(self.rnns[0], x, lengths, state)
        finals = []
        inp = x
        for l, rnn in enumerate(self.rnns):
            if l > 0:
                inp = self.drop(inp)
            hx = None if state is None else tuple(s[l * self.dirs:(l + 1) * self.dirs] for s in state)
            out, hn = self._run_torch(rnn, inp, lengths, hx)
            if l > 0:
                out = out + inp
            finals.append(hn)
            inp = out
        return inp, tuple(torch.cat(parts, 0) for parts in zip(*finals))

    # ------------------------------------------------------------------ custom path
    def _forward_custom(self, x, lengths, state):
        B, T, _ = x.shape
        if state is None:
            state = self.init_state(B, x.device, x.dtype)
        mask = None
        if lengths is not None:
            mask = (torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)
        inp = x.transpose(0, 1)                                        # (T, B, I) time-major
        finals = [[] for _ in range(self.state_size)]
        for l, layer in enumerate(self.layers):
            if l > 0:
                inp = self.drop(inp)
            outs = []
            for d, cell in enumerate(layer):
                k = l * self.dirs + d
                s0 = tuple(s[k] for s in state)
                src = inp if d == 0 else _reverse_padded(inp, lengths)
                hs, sT = cell.scan(cell.project(src), s0, mask)
                if d == 1:
                    hs = _reverse_padded(hs, lengths)
                outs.append(hs)
                for lst, s in zip(finals, sT):
                    lst.append(s)
            out = outs[0] if self.dirs == 1 else torch.cat(outs, -1)
            if mask is not None:
                out = torch.where(mask, out, 0.0)
            if self.residual and l > 0:
                out = out + inp
            inp = out
        return inp.transpose(0, 1), tuple(torch.stack(f, 0) for f in finals)
