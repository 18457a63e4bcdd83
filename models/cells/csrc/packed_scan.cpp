// Packed CPU scans: K members of one shape (a packed group of runs, models/packed.py) in one call,
// forward and hand-written BPTT, zero initial state, no masks. Same equations as the single-run
// scans in scan.cpp (torch's GRU/RNN; LSTM i, f, g, o), to float rounding. Every member's scan is
// a loop over time with one small matmul per step (packed_simd.h: a register-blocked kernel on
// weights packed once per call, which stay in L1/L2) and one elementwise pass; members run one after the
// other (or in parallel with at::parallel_for when torch has more than one thread).
// Layout: per member contiguous, time-major: xp (K, T, B, G*H), hs (K, T, B, H), w_hh (K, G*H, H).
// Registered as torch.ops.rnnbench_packed.*; loaded by models/cells/packed_kernels.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "packed_simd.h"

using at::Tensor;

namespace rnnbench_packed {

// The input projection of one member at step t, row b: xp's row, or for one-hot inputs given by
// their tokens the token's row of W^T (I, G) plus b_in (= the gathered xp, exactly)
template <typename T> struct Input {
  const T* xp; const int64_t* ids; const T* wt; const T* bias; int64_t G;
  const T* row(int64_t i) const { return ids ? wt + ids[i] * G : xp + i * G; }
};

// the member's dW^T (I, G) += sum over its steps of d's rows at their tokens (one-hot inputs)
template <typename T> void token_grads(const T* d, const int64_t* ids, T* dwt, int64_t n, int64_t G) {
  for (int64_t i = 0; i < n; ++i) {
    T* __restrict__ o = dwt + ids[i] * G;
    const T* __restrict__ r = d + i * G;
    _Pragma("GCC ivdep") for (int64_t j = 0; j < G; ++j) o[j] += r[j];
  }
}

// (K, T, B) of a call: from xp (K, T, B, G), or from ids (K, T, B) for one-hot inputs
inline int64_t hs_dims(const Tensor& xp, const Tensor& ids, int d) { return ids.numel() ? ids.size(d) : xp.size(d); }

template <typename T> Input<T> input(const Tensor& xp, const Tensor& ids, const Tensor& wt, const Tensor& b_in,
                                     int64_t k, int64_t n, int64_t G) {
  thread_local std::vector<T> zero;
  if (ids.numel()) return {nullptr, ids.data_ptr<int64_t>() + k * n, wt.data_ptr<T>() + k * wt.size(1) * G,
                           b_in.data_ptr<T>() + k * G, G};
  zero.assign(G, T(0));
  return {xp.data_ptr<T>() + k * n * G, nullptr, nullptr, zero.data(), G};
}

// ------------------------------------------------------------------ Elman: h_t = act(xp_t + R h_{t-1})
template <typename T> void elman_fwd(const Input<T>& in, const T* w, T* hs, int64_t Tn, int64_t B, int64_t H, bool relu) {
  const int64_t Hp = pad8(H);
  std::vector<T> wp = pack_t(w, H, H), c(B * Hp), zero(B * H, T(0));
  for (int64_t t = 0; t < Tn; ++t) {
    const T* hprev = t ? hs + (t - 1) * B * H : zero.data();
    T* h = hs + t * B * H;
    gemm(hprev, H, wp.data(), Hp, c.data(), Hp, B, H, Hp, false);
    for (int64_t b = 0; b < B; ++b) {
      const T* __restrict__ x = in.row(t * B + b);
      const T* __restrict__ bi = in.bias;
      _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j) h[b * H + j] = (x[j] + bi[j]) + c[b * Hp + j];
    }
    if (relu) for (int64_t i = 0; i < B * H; ++i) h[i] = h[i] < T(0) ? T(0) : h[i];   // NaN stays NaN
    else vtanh(h, B * H);
  }
}

template <typename T> void elman_bwd(const T* dhs, const T* hs, const T* w, T* dA, T* __restrict__ db, int64_t Tn,
                                     int64_t B, int64_t H, bool relu) {
  const int64_t Hp = pad8(H);
  std::vector<T> wp = pack_n(w, H, H), dh(B * Hp, T(0));
  for (int64_t t = Tn - 1; t >= 0; --t) {
    const T* __restrict__ h = hs + t * B * H;
    const T* __restrict__ g = dhs + t * B * H;
    T* __restrict__ d = dA + t * B * H;
    for (int64_t b = 0; b < B; ++b) {
      const T* __restrict__ hb = h + b * H;
      const T* __restrict__ gb = g + b * H;
      const T* __restrict__ dn = dh.data() + b * Hp;
      T* __restrict__ o = d + b * H;
      if (relu) _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j) o[j] = hb[j] > T(0) ? dn[j] + gb[j] : T(0);
      else _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j) o[j] = (dn[j] + gb[j]) * (T(1) - hb[j] * hb[j]);
      _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j) db[j] += o[j];
    }
    if (t) gemm(d, H, wp.data(), Hp, dh.data(), Hp, B, H, Hp, false);
  }
}

// ids (K, T*B) int64, wt (K, I, H), b_in (K, H): one-hot inputs by their tokens (xp unused); else ids empty
std::vector<Tensor> elman_forward(Tensor xp, Tensor w_hh, bool relu, Tensor ids, Tensor wt, Tensor b_in) {
  xp = xp.contiguous(); w_hh = w_hh.contiguous(); ids = ids.contiguous(); wt = wt.contiguous(); b_in = b_in.contiguous();
  const int64_t K = hs_dims(xp, ids, 0), Tn = hs_dims(xp, ids, 1), B = hs_dims(xp, ids, 2), H = w_hh.size(2);
  Tensor hs = w_hh.new_empty({K, Tn, B, H});
  AT_DISPATCH_FLOATING_TYPES(w_hh.scalar_type(), "packed_elman_forward", [&] {
    each_member(K, [&](int64_t k) {
      const Input<scalar_t> in = input<scalar_t>(xp, ids, wt, b_in, k, Tn * B, H);
      elman_fwd<scalar_t>(in, w_hh.data_ptr<scalar_t>() + k * H * H, hs.data_ptr<scalar_t>() + k * Tn * B * H,
                          Tn, B, H, relu);
    });
  });
  return {hs};
}

template <typename T> Tensor wrap(T* p, int64_t r, int64_t c) {
  return at::from_blob(p, {r, c}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// dW[k] = sum_t d_t^T h_{t-1} (h_{-1} = 0) over member k's (T*B, G) gradient d, one gemm
template <typename T> void weight_grad(T* d, T* hs, Tensor& dW, int64_t k, int64_t Tn, int64_t B, int64_t G, int64_t H) {
  Tensor out = dW[k];
  if (Tn > 1) at::mm_out(out, wrap(d + B * G, (Tn - 1) * B, G).t(), wrap(hs, (Tn - 1) * B, H));
  else out.zero_();
}

// dA (K, T, B, H): the gradient w.r.t. the pre-activations, written in place (one-hot inputs, ids given:
// a scratch buffer instead, and dwt (K, I, H) += the token rows' gradients); -> dW (K, H, H), db (K, H)
std::vector<Tensor> elman_backward(Tensor dhs, Tensor hs, Tensor w_hh, bool relu, Tensor dA, Tensor ids, Tensor dwt) {
  dhs = dhs.contiguous(); w_hh = w_hh.contiguous(); ids = ids.contiguous();
  const int64_t K = hs.size(0), Tn = hs.size(1), B = hs.size(2), H = hs.size(3);
  Tensor dW = hs.new_empty({K, H, H}), db = hs.new_zeros({K, H});
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "packed_elman_backward", [&] {
    each_member(K, [&](int64_t k) {
      thread_local std::vector<scalar_t> scratch;
      const int64_t o = k * Tn * B * H;
      scalar_t* d = ids.numel() ? (scratch.resize(Tn * B * H), scratch.data()) : dA.data_ptr<scalar_t>() + o;
      elman_bwd<scalar_t>(dhs.data_ptr<scalar_t>() + o, hs.data_ptr<scalar_t>() + o,
                          w_hh.data_ptr<scalar_t>() + k * H * H, d, db.data_ptr<scalar_t>() + k * H, Tn, B, H, relu);
      weight_grad<scalar_t>(d, hs.data_ptr<scalar_t>() + o, dW, k, Tn, B, H, H);
      if (ids.numel()) token_grads<scalar_t>(d, ids.data_ptr<int64_t>() + k * Tn * B,
                                             dwt.data_ptr<scalar_t>() + k * dwt.size(1) * H, Tn * B, H);
    });
  });
  return {dW, db};
}

// ------------------------------------------------------------------ GRU (torch's, b_hn inside the reset gate)
// xp (T, B, 3H) = W x + b_ih + [b_hr, b_hz, 0]; G (T, B, 4H) = r, z, n, R_n h + b_hn per step
template <typename T> void gru_fwd(const Input<T>& in, const T* w, const T* bhn, T* hs, T* G, int64_t Tn, int64_t B,
                                   int64_t H) {
  const int64_t G3 = 3 * H, Gp = pad8(G3);
  std::vector<T> wp = pack_t(w, G3, H), gh(B * Gp), zero(B * H, T(0));
  for (int64_t t = 0; t < Tn; ++t) {
    const T* hp = t ? hs + (t - 1) * B * H : zero.data();
    T* hn = hs + t * B * H;
    gemm(hp, H, wp.data(), Gp, gh.data(), Gp, B, H, Gp, false);
    for (int64_t b = 0; b < B; ++b) {
      const T* __restrict__ x = in.row(t * B + b);
      const T* __restrict__ bi = in.bias;
      const T* __restrict__ g = gh.data() + b * Gp;
      T* __restrict__ q = G + (t * B + b) * 4 * H;
      _Pragma("GCC ivdep") for (int64_t j = 0; j < 2 * H; ++j) q[j] = (x[j] + bi[j]) + g[j];
      vsig(q, 2 * H);
      _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j) {
        q[3 * H + j] = g[2 * H + j] + bhn[j];
        q[2 * H + j] = (x[2 * H + j] + bi[2 * H + j]) + q[j] * q[3 * H + j];
      }
      vtanh(q + 2 * H, H);
      const T* __restrict__ h0 = hp + b * H;
      T* __restrict__ h1 = hn + b * H;
      _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j) {
        const T z = q[H + j], n = q[2 * H + j];
        h1[j] = n + z * (h0[j] - n);
      }
    }
  }
}

template <typename T> void gru_bwd(const T* dhs, const T* hs, const T* G, const T* w, T* dX, T* dR,
                                   T* __restrict__ db, T* __restrict__ dbn, int64_t Tn, int64_t B, int64_t H) {
  const int64_t G3 = 3 * H, Hp = pad8(H);
  std::vector<T> wp = pack_n(w, G3, H), dh(B * Hp, T(0)), zero(B * H, T(0));
  for (int64_t t = Tn - 1; t >= 0; --t) {
    const T* hprev = t ? hs + (t - 1) * B * H : zero.data();
    for (int64_t b = 0; b < B; ++b) {
      const T* __restrict__ q = G + (t * B + b) * 4 * H;
      const T* __restrict__ h0 = hprev + b * H;
      const T* __restrict__ dn = dhs + (t * B + b) * H;
      T* __restrict__ dx = dX + (t * B + b) * G3;
      T* __restrict__ dr = dR + (t * B + b) * G3;
      T* __restrict__ dhb = dh.data() + b * Hp;
      _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j) {
        const T r = q[j], z = q[H + j], n = q[2 * H + j], ghn = q[3 * H + j];
        const T d = dhb[j] + dn[j];
        const T dpn = d * (T(1) - z) * (T(1) - n * n);
        const T dpr = dpn * ghn * r * (T(1) - r);
        const T dpz = d * (h0[j] - n) * z * (T(1) - z);
        dx[j] = dpr; dr[j] = dpr;
        dx[H + j] = dpz; dr[H + j] = dpz;
        dx[2 * H + j] = dpn;
        dr[2 * H + j] = dpn * r;
        dhb[j] = d * z;
        db[j] += dpr; db[H + j] += dpz; db[2 * H + j] += dpn;
        dbn[j] += dpn * r;
      }
    }
    if (t) gemm(dR + t * B * G3, G3, wp.data(), Hp, dh.data(), Hp, B, G3, Hp, true);
  }
}

// ids, wt (K, I, 3H), b_in (K, 3H): as elman_forward
std::vector<Tensor> gru_forward(Tensor xp, Tensor w_hh, Tensor b_hn, Tensor ids, Tensor wt, Tensor b_in) {
  xp = xp.contiguous(); w_hh = w_hh.contiguous(); b_hn = b_hn.contiguous();
  ids = ids.contiguous(); wt = wt.contiguous(); b_in = b_in.contiguous();
  const int64_t K = hs_dims(xp, ids, 0), Tn = hs_dims(xp, ids, 1), B = hs_dims(xp, ids, 2), H = w_hh.size(2);
  Tensor hs = w_hh.new_empty({K, Tn, B, H}), G = w_hh.new_empty({K, Tn, B, 4 * H});
  AT_DISPATCH_FLOATING_TYPES(w_hh.scalar_type(), "packed_gru_forward", [&] {
    each_member(K, [&](int64_t k) {
      const Input<scalar_t> in = input<scalar_t>(xp, ids, wt, b_in, k, Tn * B, 3 * H);
      gru_fwd<scalar_t>(in, w_hh.data_ptr<scalar_t>() + k * 3 * H * H, b_hn.data_ptr<scalar_t>() + k * H,
                        hs.data_ptr<scalar_t>() + k * Tn * B * H, G.data_ptr<scalar_t>() + k * Tn * B * 4 * H, Tn, B, H);
    });
  });
  return {hs, G};
}

// dX (K, T, B, 3H): the gradient w.r.t. xp, written in place (ids given: a scratch buffer, and dwt
// (K, I, 3H) += its token rows); -> dW (K, 3H, H), db_ih (K, 3H), db_hn (K, H). The recurrent-gate
// gradient dR of one member lives in a scratch buffer (L2-sized) reused member by member.
std::vector<Tensor> gru_backward(Tensor dhs, Tensor hs, Tensor G, Tensor w_hh, Tensor dX, Tensor ids, Tensor dwt) {
  dhs = dhs.contiguous(); w_hh = w_hh.contiguous(); ids = ids.contiguous();
  const int64_t K = hs.size(0), Tn = hs.size(1), B = hs.size(2), H = hs.size(3);
  Tensor dW = hs.new_empty({K, 3 * H, H}), dbn = hs.new_zeros({K, H}), db = hs.new_zeros({K, 3 * H});
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "packed_gru_backward", [&] {
    each_member(K, [&](int64_t k) {
      thread_local std::vector<scalar_t> dR, scratch;
      dR.resize(Tn * B * 3 * H);
      const int64_t o = k * Tn * B * H, o3 = 3 * o;
      scalar_t* dx = ids.numel() ? (scratch.resize(Tn * B * 3 * H), scratch.data()) : dX.data_ptr<scalar_t>() + o3;
      gru_bwd<scalar_t>(dhs.data_ptr<scalar_t>() + o, hs.data_ptr<scalar_t>() + o,
                        G.data_ptr<scalar_t>() + 4 * o, w_hh.data_ptr<scalar_t>() + k * 3 * H * H,
                        dx, dR.data(), db.data_ptr<scalar_t>() + k * 3 * H, dbn.data_ptr<scalar_t>() + k * H, Tn, B, H);
      weight_grad<scalar_t>(dR.data(), hs.data_ptr<scalar_t>() + o, dW, k, Tn, B, 3 * H, H);
      if (ids.numel()) token_grads<scalar_t>(dx, ids.data_ptr<int64_t>() + k * Tn * B,
                                             dwt.data_ptr<scalar_t>() + k * dwt.size(1) * 3 * H, Tn * B, 3 * H);
    });
  });
  return {dW, db, dbn};
}

}  // namespace rnnbench_packed

TORCH_LIBRARY(rnnbench_packed, m) {
  m.def("elman_forward(Tensor xp, Tensor w_hh, bool relu, Tensor ids, Tensor wt, Tensor b_in) -> Tensor[]",
        &rnnbench_packed::elman_forward);
  m.def("elman_backward(Tensor dhs, Tensor hs, Tensor w_hh, bool relu, Tensor(a!) dA, Tensor ids, Tensor(b!) dwt) "
        "-> Tensor[]", &rnnbench_packed::elman_backward);
  m.def("gru_forward(Tensor xp, Tensor w_hh, Tensor b_hn, Tensor ids, Tensor wt, Tensor b_in) -> Tensor[]",
        &rnnbench_packed::gru_forward);
  m.def("gru_backward(Tensor dhs, Tensor hs, Tensor G, Tensor w_hh, Tensor(a!) dX, Tensor ids, Tensor(b!) dwt) "
        "-> Tensor[]", &rnnbench_packed::gru_backward);
}
