"""LSTM cell with the Greff et al. (2015) switches, torch.nn.LSTM layout, hand-written BPTT."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.cells.base import Cell

_SIG = ("i", "f", "o")


def _flags(cfg) -> dict:
    get = (lambda k, d: d) if cfg is None else (lambda k, d: getattr(cfg, k, d))
    return {"peepholes": get("peepholes", False), "input_gate": get("input_gate", True),
            "forget_gate": get("forget_gate", True), "output_gate": get("output_gate", True),
            "input_activation": get("input_activation", True),
            "output_activation": get("output_activation", True),
            "coupled": get("coupled", False), "gate_recurrence": get("gate_recurrence", False)}


class _LSTMScan(torch.autograd.Function):
    """The LSTM recurrence given xp = W x + b for all steps (T, B, G*H).

    `w_rec` is (G*H, H [+ Gs*H]): R, with the FGR matrix scattered into the sigmoid-gate rows
    (the state row then is [y^{t-1}, gate activations^{t-1}], so each step is ONE matmul).
    Forward runs under no_grad and keeps the gate activations A (T, B, G*H), the cell states
    C (T+1, B, H) and the recurrent inputs S (T+1, B, H [+ Gs*H]); backward is BPTT with one
    matmul per step, the recurrent-weight and peephole gradients as single reductions after it.
    """

    @staticmethod
    def forward(ctx, xp, h0, c0, a0, w_rec, w_ci, w_cf, w_co, mask, spec):
        T, B, GH = xp.shape
        H = h0.shape[-1]
        oi, of, og, oo = spec["i"], spec["f"], spec["g"], spec["o"]
        peep, fgr, coupled = spec["peepholes"], spec["fgr"], spec["coupled"]
        S = xp.new_empty(T + 1, B, w_rec.shape[1])
        S[0, :, :H] = h0
        if fgr:
            S[0, :, H:] = a0
        C = xp.new_empty(T + 1, B, H)
        C[0] = c0
        A = xp.new_empty(T, B, GH)
        rt = w_rec.t()
        # contiguous runs of sigmoid gates that need no peephole from c_t: i and f are adjacent
        for t in range(T):
            a = A[t]
            torch.addmm(xp[t], S[t], rt, out=a)
            cp = C[t]
            if peep:
                if oi is not None:
                    a[:, oi:oi + H].addcmul_(cp, w_ci)
                if of is not None:
                    a[:, of:of + H].addcmul_(cp, w_cf)
            if oi is not None and of is not None:
                a[:, oi:of + H].sigmoid_()
            elif oi is not None:
                a[:, oi:oi + H].sigmoid_()
            elif of is not None:
                a[:, of:of + H].sigmoid_()
            g = a[:, og:og + H]
            if spec["input_activation"]:
                g.tanh_()
            if oi is not None:
                ig = a[:, oi:oi + H]
                if coupled:                              # c = (1 - i) c_prev + i g
                    c = torch.addcmul(cp, ig, g - cp)
                else:
                    c = ig * g
            else:
                c = g.clone()
            if not coupled:
                if of is not None:
                    c.addcmul_(a[:, of:of + H], cp)
                else:
                    c += cp
            hc = c.tanh() if spec["output_activation"] else c
            if oo is not None:
                o = a[:, oo:oo + H]
                if peep:
                    o.addcmul_(c, w_co)
                o.sigmoid_()
                h = o * hc
            else:
                h = hc
            if mask is not None:
                m = mask[t]
                c = torch.where(m, c, cp)
                h = torch.where(m, h, S[t, :, :H])
            C[t + 1] = c
            S[t + 1, :, :H] = h
            if fgr:
                col = H
                for off in spec["sig"]:
                    src = a[:, off:off + H]
                    if mask is not None:
                        src = torch.where(m, src, S[t, :, col:col + H])
                    S[t + 1, :, col:col + H] = src
                    col += H
        ctx.spec = spec
        ctx.save_for_backward(S, C, A, w_rec, w_ci, w_cf, w_co, mask)
        aT = S[T, :, H:].clone() if fgr else xp.new_zeros(0)
        return S[1:, :, :H].clone(), S[T, :, :H].clone(), C[T].clone(), aT

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dhT, dcT, daT):
        S, C, A, w_rec, w_ci, w_cf, w_co, mask = ctx.saved_tensors
        spec = ctx.spec
        T, B, GH = A.shape
        H = C.shape[-1]
        oi, of, og, oo = spec["i"], spec["f"], spec["g"], spec["o"]
        peep, fgr, coupled = spec["peepholes"], spec["fgr"], spec["coupled"]
        in_act, out_act = spec["input_activation"], spec["output_activation"]
        # where each sigmoid gate's FGR source sits in the extra state columns
        src = {off: H + k * H for k, off in enumerate(spec["sig"])} if fgr else {}
        dA = torch.empty_like(A)
        dh, dc = dhT, dcT
        da = daT if fgr else None
        for t in range(T - 1, -1, -1):
            dh = dh + dhs[t]
            if mask is not None:
                m = mask[t]
                carry = [torch.where(m, 0.0, v) for v in (dh, dc, da) if v is not None]
                dh, dc = torch.where(m, dh, 0.0), torch.where(m, dc, 0.0)
                if fgr:
                    da = torch.where(m, da, 0.0)
            a, d = A[t], dA[t]
            cp, c = C[t], C[t + 1]
            hc = c.tanh() if out_act else c
            if oo is not None:
                o = a[:, oo:oo + H]
                do = dh * hc
                if fgr:
                    do += da[:, src[oo] - H:src[oo]]
                dpo = d[:, oo:oo + H]
                torch.mul(do, o * (1 - o), out=dpo)
                dhc = dh * o
            else:
                dhc = dh
            dc = dc + (dhc * (1 - hc * hc) if out_act else dhc)
            if peep and oo is not None:
                dc.addcmul_(dpo, w_co)
            g = a[:, og:og + H]
            if oi is not None:
                i = a[:, oi:oi + H]
                if coupled:
                    di = dc * (g - cp)
                    dcp = dc * (1 - i)
                else:
                    di = dc * g
                if fgr:
                    di += da[:, src[oi] - H:src[oi]]
                dpi = d[:, oi:oi + H]
                torch.mul(di, i * (1 - i), out=dpi)
                dg = dc * i
            else:
                dg = dc
            if not coupled:
                if of is not None:
                    f = a[:, of:of + H]
                    df = dc * cp
                    if fgr:
                        df += da[:, src[of] - H:src[of]]
                    dpf = d[:, of:of + H]
                    torch.mul(df, f * (1 - f), out=dpf)
                    dcp = dc * f
                else:
                    dcp = dc
            if in_act:
                torch.mul(dg, 1 - g * g, out=d[:, og:og + H])
            else:
                d[:, og:og + H] = dg
            if peep:
                if oi is not None:
                    dcp.addcmul_(dpi, w_ci)
                if of is not None:
                    dcp.addcmul_(dpf, w_cf)
            dS = d @ w_rec
            dh, dc = dS[:, :H], dcp
            if fgr:
                da = dS[:, H:]
            if mask is not None:
                dh = dh + carry[0]
                dc = dc + carry[1]
                if fgr:
                    da = da + carry[2]
        dW = dA.reshape(-1, GH).t() @ S[:T].reshape(T * B, -1)
        dci = dcf = dco = None
        if peep:
            if oi is not None:
                dci = (dA[:, :, oi:oi + H] * C[:T]).sum((0, 1))
            if of is not None:
                dcf = (dA[:, :, of:of + H] * C[:T]).sum((0, 1))
            if oo is not None:
                dco = (dA[:, :, oo:oo + H] * C[1:]).sum((0, 1))
        return dA, dh, dc, da, dW, dci, dcf, dco, None, None


class LSTMCell(Cell):
    r"""LSTM block with the switches of Greff et al. (2015), "LSTM: A Search Space Odyssey".

    Notation of the paper (W input weights, R recurrent weights, p peepholes, b biases; sigma =
    logistic sigmoid, g = h = tanh, * = elementwise):

        z^t = g(W_z x^t + R_z y^{t-1} + b_z)                              block input
        i^t = sigma(W_i x^t + R_i y^{t-1} + p_i * c^{t-1} + b_i)          input gate
        f^t = sigma(W_f x^t + R_f y^{t-1} + p_f * c^{t-1} + b_f)          forget gate
        c^t = z^t * i^t + c^{t-1} * f^t                                   cell
        o^t = sigma(W_o x^t + R_o y^{t-1} + p_o * c^t + b_o)              output gate
        y^t = h(c^t) * o^t                                                block output

    Switches (models.config): `peepholes` adds the p terms (diagonal; i, f from c^{t-1}, o from
    c^t; without them the cell is torch.nn.LSTM); NIG `input_gate=False`: i^t = 1; NFG
    `forget_gate=False`: f^t = 1; NOG `output_gate=False`: o^t = 1; NIAF `input_activation=False`:
    g(x) = x; NOAF `output_activation=False`: h(x) = x; CIFG `coupled=True`: f^t = 1 - i^t;
    FGR `gate_recurrence=True`: each gate a in {i, f, o} gets sum_b R_ba b^{t-1} over the gates
    b in {i, f, o} (9 matrices), the previous gate activations starting at 0 -- they are then
    a third state tensor, `(h, c, a)`, a (B, 3H) = [i, f, o]^{t-1}.
    `forget_bias` is an initial value (models.init), not a structural switch.

    Parameters in torch layout: `weight_ih` (G*H, I) = W, `weight_hh` (G*H, H) = R, `bias_ih`,
    `bias_hh` (G*H), blocks in torch order i, f, g(=z), o; a block whose gate is switched off
    (NIG: i; NFG, CIFG: f; NOG: o) is left out, so G = len(self.blocks) is 3 for those variants.
    Extras: `w_ci`, `w_cf`, `w_co` (H) peepholes p_i, p_f, p_o (only for gates present);
    `weight_fgr` (Gs*H, Gs*H) the FGR matrices R_ba stacked like weight_hh (rows: target gate,
    columns: source gate, both over the sigmoid gates present, in order i, f, o).
    """

    switches = {"forget_bias", "peepholes", "input_gate", "forget_gate", "output_gate",
                "input_activation", "output_activation", "coupled", "gate_recurrence"}
    gates = 4
    torch_module = nn.LSTM
    torch_kwargs: dict = {}

    def __init__(self, input_size, hidden_size, model_cfg=None):
        self.flags = _flags(model_cfg)
        super().__init__(input_size, hidden_size, model_cfg)
        H, fl = hidden_size, self.flags
        off = {b: k * H for k, b in enumerate(self.blocks)}
        self.sig_blocks = tuple(b for b in self.blocks if b in _SIG)
        self.spec = {"i": off.get("i"), "f": off.get("f"), "g": off["g"], "o": off.get("o"),
                     "peepholes": fl["peepholes"], "coupled": fl["coupled"],
                     "fgr": fl["gate_recurrence"], "input_activation": fl["input_activation"],
                     "output_activation": fl["output_activation"],
                     "sig": tuple(off[b] for b in self.sig_blocks)}
        if fl["peepholes"]:
            for b in ("i", "f", "o"):
                if b in self.blocks:
                    setattr(self, f"w_c{b}", nn.Parameter(torch.empty(H)))
        if fl["gate_recurrence"]:
            n = len(self.sig_blocks) * H
            self.weight_fgr = nn.Parameter(torch.empty(n, n))
        self.reset_parameters()

    @classmethod
    def fusable(cls, model_cfg) -> bool:
        fl = _flags(model_cfg)
        return (not fl["peepholes"] and fl["input_gate"] and fl["forget_gate"] and fl["output_gate"]
                and fl["input_activation"] and fl["output_activation"] and not fl["coupled"]
                and not fl["gate_recurrence"])

    def block_names(self, model_cfg):
        fl = _flags(model_cfg)
        return tuple(b for b, on in (("i", fl["input_gate"]),
                                     ("f", fl["forget_gate"] and not fl["coupled"]),
                                     ("g", True), ("o", fl["output_gate"])) if on)

    @property
    def state_size(self) -> int:
        return 3 if self.flags["gate_recurrence"] else 2

    def state_widths(self):
        H = self.hidden_size
        return [H, H] + ([len(self.sig_blocks) * H] if self.flags["gate_recurrence"] else [])

    def recurrent_matrix(self) -> torch.Tensor:
        """R, or [R | FGR scattered into the sigmoid-gate rows] for FGR (one matmul per step)."""
        if not self.flags["gate_recurrence"]:
            return self.weight_hh
        H, n = self.hidden_size, len(self.sig_blocks) * self.hidden_size
        rows, k = [], 0
        for b in self.blocks:
            if b == "g":
                rows.append(self.weight_fgr.new_zeros(H, n))
            else:
                rows.append(self.weight_fgr[k * H:(k + 1) * H])
                k += 1
        return torch.cat([self.weight_hh, torch.cat(rows, 0)], 1)

    def _peep(self, b):
        return getattr(self, f"w_c{b}", None)

    def step(self, xp_t, state):
        """One step straight from the equations (autograd reference of the scan)."""
        H, fl = self.hidden_size, self.flags
        h, c = state[0], state[1]
        pre = xp_t + h @ self.weight_hh.t()
        if fl["gate_recurrence"]:
            rows = self.weight_fgr @ state[2].t()          # (Gs*H, B)
            gate_in = {b: rows[k * H:(k + 1) * H].t() for k, b in enumerate(self.sig_blocks)}
        blk = {b: pre[:, k * H:(k + 1) * H] for k, b in enumerate(self.blocks)}
        if fl["gate_recurrence"]:
            blk = {b: v + gate_in[b] if b in gate_in else v for b, v in blk.items()}
        z = torch.tanh(blk["g"]) if fl["input_activation"] else blk["g"]
        one = torch.ones_like(c)
        i = torch.sigmoid(blk["i"] + (self.w_ci * c if fl["peepholes"] else 0)) if "i" in blk else one
        if fl["coupled"]:
            f = 1 - i
        else:
            f = torch.sigmoid(blk["f"] + (self.w_cf * c if fl["peepholes"] else 0)) if "f" in blk else one
        c_new = z * i + c * f
        o = torch.sigmoid(blk["o"] + (self.w_co * c_new if fl["peepholes"] else 0)) if "o" in blk else one
        y = (torch.tanh(c_new) if fl["output_activation"] else c_new) * o
        if not fl["gate_recurrence"]:
            return y, c_new
        acts = {"i": i, "f": f, "o": o}
        return y, c_new, torch.cat([acts[b] for b in self.sig_blocks], 1)

    def scan(self, xp, state, mask=None):
        a0 = state[2] if self.flags["gate_recurrence"] else None
        hs, hT, cT, aT = _LSTMScan.apply(xp, state[0], state[1], a0, self.recurrent_matrix(),
                                         self._peep("i"), self._peep("f"), self._peep("o"),
                                         mask, self.spec)
        return hs, ((hT, cT, aT) if self.flags["gate_recurrence"] else (hT, cT))
