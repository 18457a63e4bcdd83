"""LSTM cell with the Greff et al. (2015) switches, torch.nn.LSTM layout, hand-written BPTT."""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from models.cells import kernels
from models.cells.base import Cell

_SIG = ("i", "f", "o")


def _flags(cfg) -> dict:
    get = (lambda k, d: d) if cfg is None else (lambda k, d: getattr(cfg, k, d))
    return {"peepholes": get("peepholes", False), "input_gate": get("input_gate", True),
            "forget_gate": get("forget_gate", True), "output_gate": get("output_gate", True),
            "input_activation": get("input_activation", True),
            "output_activation": get("output_activation", True),
            "coupled": get("coupled", False), "gate_recurrence": get("gate_recurrence", False)}


_sig_bwd = torch.ops.aten.sigmoid_backward.grad_input      # g * s * (1 - s), one kernel
_tanh_bwd = torch.ops.aten.tanh_backward.grad_input         # g * (1 - t^2), one kernel


class _LSTMScan(torch.autograd.Function):
    """The LSTM recurrence given xp = W x + b for all steps (T, B, G*H).

    `w_rec` is (G*H, H [+ Gs*H]): R, with the FGR matrix scattered into the sigmoid-gate rows
    (the state row then is [y^{t-1}, gate activations^{t-1}], so each step is ONE matmul).
    Forward runs under no_grad and keeps the gate activations A (T, B, G*H), the cell states
    C (T+1, B, H), tanh(c) HC (T, B, H) and the recurrent inputs S (T+1, B, H [+ Gs*H]);
    backward is BPTT with one matmul per step and fused elementwise kernels
    (sigmoid_backward/tanh_backward); the recurrent-weight and peephole gradients are single
    reductions after the loop. `keep=False` (inference): rolling buffers, no history.
    """

    @staticmethod
    def forward(ctx, xp, h0, c0, a0, w_rec, w_ci, w_cf, w_co, mask, spec, keep=True):
        T, B, GH = xp.shape
        H = h0.shape[-1]
        oi, of, og, oo = spec["i"], spec["f"], spec["g"], spec["o"]
        peep, fgr, coupled = spec["peepholes"], spec["fgr"], spec["coupled"]
        out_act = spec["output_activation"]
        both = oi is not None and of is not None            # i, f adjacent: one op for both
        w_if = torch.stack([w_ci, w_cf]) if peep and both else None
        S = xp.new_empty(T + 1, B, w_rec.shape[1])
        S[0, :, :H] = h0
        if fgr:
            S[0, :, H:] = a0
        C = xp.new_empty(T + 1 if keep else 2, B, H)
        C[0] = c0
        A = xp.new_empty(T if keep else 1, B, GH)
        HC = xp.new_empty(T if keep else 1, B, H) if out_act else None
        rt = w_rec.t()
        for t in range(T):
            a = A[t if keep else 0]
            torch.addmm(xp[t], S[t], rt, out=a)
            cp, cn = C[t if keep else t % 2], C[t + 1 if keep else (t + 1) % 2]
            if peep:
                if both:
                    a[:, oi:of + H].view(B, 2, H).addcmul_(cp.unsqueeze(1), w_if)
                elif oi is not None:
                    a[:, oi:oi + H].addcmul_(cp, w_ci)
                elif of is not None:
                    a[:, of:of + H].addcmul_(cp, w_cf)
            if both:
                a[:, oi:of + H].sigmoid_()
            elif oi is not None:
                a[:, oi:oi + H].sigmoid_()
            elif of is not None:
                a[:, of:of + H].sigmoid_()
            g = a[:, og:og + H]
            if spec["input_activation"]:
                g.tanh_()
            i = a[:, oi:oi + H] if oi is not None else None
            f = a[:, of:of + H] if of is not None else None
            c = cn if mask is None else torch.empty_like(cp)
            if coupled:                                      # c = (1 - i) c_prev + i g
                torch.addcmul(cp, i, g - cp, out=c)
            elif i is not None and f is not None:
                torch.mul(i, g, out=c).addcmul_(f, cp)
            elif i is not None:                              # NFG: f = 1
                torch.addcmul(cp, i, g, out=c)
            elif f is not None:                              # NIG: i = 1
                torch.addcmul(g, f, cp, out=c)
            else:
                torch.add(g, cp, out=c)
            if out_act:
                hc = torch.tanh(c, out=HC[t if keep else 0])
            else:
                hc = c
            hout = S[t + 1, :, :H] if mask is None else torch.empty_like(cp)
            if oo is not None:
                o = a[:, oo:oo + H]
                if peep:
                    o.addcmul_(c, w_co)
                o.sigmoid_()
                torch.mul(o, hc, out=hout)
            else:
                hout.copy_(hc)
            if mask is not None:
                m = mask[t]
                torch.where(m, c, cp, out=cn)
                torch.where(m, hout, S[t, :, :H], out=S[t + 1, :, :H])
            if fgr:
                col = H
                for off in spec["sig"]:
                    src = a[:, off:off + H]
                    if mask is not None:
                        src = torch.where(m, src, S[t, :, col:col + H])
                    S[t + 1, :, col:col + H] = src
                    col += H
        ctx.spec = spec
        ctx.save_for_backward(S, C, A, HC, w_rec, w_ci, w_cf, w_co, mask)
        aT = S[T, :, H:].clone() if fgr else xp.new_zeros(0)
        return S[1:, :, :H].clone(), S[T, :, :H].clone(), C[T if keep else T % 2].clone(), aT

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dhT, dcT, daT):  # long function on purpose: hand-written backward (one BPTT loop)
        S, C, A, HC, w_rec, w_ci, w_cf, w_co, mask = ctx.saved_tensors
        spec = ctx.spec
        T, B, GH = A.shape
        H = C.shape[-1]
        oi, of, og, oo = spec["i"], spec["f"], spec["g"], spec["o"]
        peep, fgr, coupled = spec["peepholes"], spec["fgr"], spec["coupled"]
        in_act, out_act = spec["input_activation"], spec["output_activation"]
        both = oi is not None and of is not None
        # where each sigmoid gate's FGR source sits in the extra state columns (offset in da)
        src = {off: k * H for k, off in enumerate(spec["sig"])} if fgr else {}
        dA = torch.empty_like(A)
        dh, dc = dhT.clone(), dcT.clone()
        da = daT.clone() if fgr else None
        t2 = dhs.new_empty(B, 2 * H) if both and not coupled else None
        for t in range(T - 1, -1, -1):
            dh += dhs[t]
            if mask is not None:
                m = mask[t]
                carry = [torch.where(m, 0.0, v) for v in (dh, dc, da) if v is not None]
                dh, dc = torch.where(m, dh, 0.0), torch.where(m, dc, 0.0)
                if fgr:
                    da = torch.where(m, da, 0.0)
            a, d = A[t], dA[t]
            cp, c = C[t], C[t + 1]
            hc = HC[t] if out_act else c
            if oo is not None:
                o = a[:, oo:oo + H]
                do = dh * hc
                if fgr:
                    do += da[:, src[oo]:src[oo] + H]
                dpo = _sig_bwd(do, o, grad_input=d[:, oo:oo + H])
                dhc = dh * o
            else:
                dhc = dh
            if out_act:
                dc += torch.ops.aten.tanh_backward(dhc, hc)
            else:
                dc += dhc
            if peep and oo is not None:
                dc.addcmul_(dpo, w_co)
            g = a[:, og:og + H]
            i = a[:, oi:oi + H] if oi is not None else None
            f = a[:, of:of + H] if of is not None else None
            dg = dc * i if i is not None else dc
            if coupled:                                   # c = cp + i (g - cp)
                di = dc * (g - cp)
                if fgr:
                    di += da[:, src[oi]:src[oi] + H]
                _sig_bwd(di, i, grad_input=d[:, oi:oi + H])
                dcp = dc - dg
            elif both:
                torch.mul(dc, g, out=t2[:, :H])
                torch.mul(dc, cp, out=t2[:, H:])
                if fgr:                                   # i, f sources are adjacent too
                    t2 += da[:, src[oi]:src[oi] + 2 * H]
                _sig_bwd(t2, a[:, oi:of + H], grad_input=d[:, oi:of + H])
                dcp = dc * f
            elif i is not None:                           # NFG
                di = dc * g
                if fgr:
                    di += da[:, src[oi]:src[oi] + H]
                _sig_bwd(di, i, grad_input=d[:, oi:oi + H])
                dcp = dc
            elif f is not None:                           # NIG
                df = dc * cp
                if fgr:
                    df += da[:, src[of]:src[of] + H]
                _sig_bwd(df, f, grad_input=d[:, of:of + H])
                dcp = dc * f
            else:
                dcp = dc
            if in_act:
                _tanh_bwd(dg, g, grad_input=d[:, og:og + H])
            else:
                d[:, og:og + H] = dg
            if peep:
                if dcp is dc:
                    dcp = dc.clone()
                if oi is not None:
                    dcp.addcmul_(d[:, oi:oi + H], w_ci)
                if of is not None:
                    dcp.addcmul_(d[:, of:of + H], w_cf)
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
        return dA, dh, dc, da, dW, dci, dcf, dco, None, None, None


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
        self._cspec = None
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

    @classmethod
    def block_names(cls, model_cfg):
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
        dt = xp.dtype                               # e.g. bf16 under autocast: one dtype inside
        cast = lambda t: None if t is None else t.to(dt)
        a0 = state[2] if self.flags["gate_recurrence"] else None
        args = (xp, cast(state[0]), cast(state[1]), cast(a0), cast(self.recurrent_matrix()),
                cast(self._peep("i")), cast(self._peep("f")), cast(self._peep("o")), mask)
        if kernels.usable(xp):                      # C++ scan (CPU, float32/64)
            if self._cspec is None:
                self._cspec = kernels.lstm_spec(self.spec)
            hs, hT, cT, aT = kernels.LSTMScan.apply(*args, self._cspec, torch.is_grad_enabled())
        else:
            hs, hT, cT, aT = _LSTMScan.apply(*args, self.spec, torch.is_grad_enabled())
        return hs, ((hT, cT, aT) if self.flags["gate_recurrence"] else (hT, cT))
