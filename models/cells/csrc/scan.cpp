// CPU scans of the custom path: the whole recurrence (forward and hand-written BPTT) in C++,
// one matmul (ATen, i.e. MKL/oneDNN) plus one elementwise loop per step and direction.
// Same equations and buffers as the Python scans in models/cells/{lstm,gru,rnn}.py, which stay
// the reference (and the path for CUDA, bf16 and machines without a C++ compiler).
// Registered as torch.ops.rnnbench_scan.*; loaded by models/cells/kernels.py.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "simd.h"

using at::Tensor;

// Fortran BLAS of torch's own build (MKL on x86 wheels); weak, so a build without it falls back
// to ATen matmuls. Row-major helpers below; every matrix is contiguous.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

namespace {

inline void blas(char ta, char tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                 float beta, float* c, int ldc) {
  const float one = 1.f;
  sgemm_(&ta, &tb, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}
inline void blas(char ta, char tb, int m, int n, int k, const double* a, int lda, const double* b, int ldb,
                 double beta, double* c, int ldc) {
  const double one = 1.;
  dgemm_(&ta, &tb, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}
template <typename T> inline bool have_blas();
template <> inline bool have_blas<float>() { return sgemm_ != nullptr; }
template <> inline bool have_blas<double>() { return dgemm_ != nullptr; }

template <typename T> inline Tensor wrap(const T* p, int64_t r, int64_t c) {
  return at::from_blob(const_cast<T*>(p), {r, c}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// out (r x n) = beta * out + x (r x k) . w^T, w (n x k): the recurrent matmul of a forward step
template <typename T> void mm_xwt(T* out, const T* x, const T* w, int64_t r, int64_t n, int64_t k, T beta) {
  if (have_blas<T>()) return blas('T', 'N', n, r, k, w, k, x, k, beta, out, n);
  Tensor o = wrap(out, r, n);
  if (beta == T(0)) at::mm_out(o, wrap(x, r, k), wrap(w, n, k).t());
  else o.addmm_(wrap(x, r, k), wrap(w, n, k).t());
}
// out (r x n) = beta * out + d (r x k) . w, w (k x n): the recurrent matmul of a backward step
template <typename T> void mm_dw(T* out, const T* d, const T* w, int64_t r, int64_t n, int64_t k, T beta) {
  if (have_blas<T>()) return blas('N', 'N', n, r, k, w, n, d, k, beta, out, n);
  Tensor o = wrap(out, r, n);
  if (beta == T(0)) at::mm_out(o, wrap(d, r, k), wrap(w, k, n));
  else o.addmm_(wrap(d, r, k), wrap(w, k, n));
}

// in place over n contiguous values: p = sigmoid(p), or p = tanh(p) (AVX2, simd.h)
using rnnbench_simd::vsig;
using rnnbench_simd::vtanh;

inline const bool* mask_ptr(const Tensor& mask) {
  return mask.numel() ? mask.data_ptr<bool>() : nullptr;
}

// spec: [oi, of, og, oo, peep, fgr, coupled, in_act, out_act, n_sig, sig_0, sig_1, sig_2]
// offsets are -1 for a gate that is absent; sig_k = offset of the k-th sigmoid gate (FGR sources)
struct Spec {
  int64_t oi, of, og, oo;
  bool peep, fgr, coupled, in_act, out_act;
  int64_t nsig, sig[3];
  explicit Spec(const std::vector<int64_t>& s)
      : oi(s[0]), of(s[1]), og(s[2]), oo(s[3]), peep(s[4]), fgr(s[5]), coupled(s[6]),
        in_act(s[7]), out_act(s[8]), nsig(s[9]), sig{s[10], s[11], s[12]} {}
  int64_t src(int64_t off) const {  // column of gate `off`'s activation in the FGR state
    for (int64_t k = 0; k < nsig; ++k) if (sig[k] == off) return k;
    return -1;
  }
};

// ------------------------------------------------------------------------------------ LSTM
template <typename T>
void lstm_fwd_loop(const Spec& sp, const Tensor& xp, Tensor& S, Tensor& C, Tensor& A, Tensor& HC,
                   const Tensor& w_rec, const Tensor& w_ci, const Tensor& w_cf, const Tensor& w_co,
                   const Tensor& mask, bool keep) {
  const int64_t Tn = xp.size(0), B = xp.size(1), GH = xp.size(2), H = C.size(2), HS = S.size(2);
  const bool* mk = mask_ptr(mask);
  const T* pci = sp.peep && sp.oi >= 0 ? w_ci.data_ptr<T>() : nullptr;
  const T* pcf = sp.peep && sp.of >= 0 ? w_cf.data_ptr<T>() : nullptr;
  const T* pco = sp.peep && sp.oo >= 0 ? w_co.data_ptr<T>() : nullptr;
  std::vector<T> cbuf(H);
  const T* pw = w_rec.data_ptr<T>();
  for (int64_t t = 0; t < Tn; ++t) {
    T* pa = A.data_ptr<T>() + (keep ? t : 0) * B * GH;
    std::memcpy(pa, xp.data_ptr<T>() + t * B * GH, B * GH * sizeof(T));
    mm_xwt<T>(pa, S.data_ptr<T>() + t * B * HS, pw, B, GH, HS, T(1));
    const T* cp = (C.data_ptr<T>() + (keep ? t : t % 2) * C.stride(0));
    T* cn = (C.data_ptr<T>() + (keep ? t + 1 : (t + 1) % 2) * C.stride(0));
    T* hcp = sp.out_act ? (HC.data_ptr<T>() + (keep ? t : 0) * HC.stride(0)) : nullptr;
    const T* sp_prev = (S.data_ptr<T>() + (t) * S.stride(0));
    T* sn = (S.data_ptr<T>() + (t + 1) * S.stride(0));
    for (int64_t b = 0; b < B; ++b) {
      const bool m = mk ? mk[t * B + b] : true;
      T* ar = pa + b * GH;
      const T* cpr = cp + b * H;
      T* cnr = cn + b * H;
      const T* spr = sp_prev + b * HS;
      T* snr = sn + b * HS;
      T* ct = cbuf.data();
      if (pci) for (int64_t j = 0; j < H; ++j) ar[sp.oi + j] += pci[j] * cpr[j];
      if (pcf) for (int64_t j = 0; j < H; ++j) ar[sp.of + j] += pcf[j] * cpr[j];
      if (sp.oi >= 0 && sp.of == sp.oi + H) vsig(ar + sp.oi, 2 * H);
      else {
        if (sp.oi >= 0) vsig(ar + sp.oi, H);
        if (sp.of >= 0) vsig(ar + sp.of, H);
      }
      if (sp.in_act) vtanh(ar + sp.og, H);
      const T* gi = sp.oi >= 0 ? ar + sp.oi : nullptr;
      const T* gf = sp.of >= 0 ? ar + sp.of : nullptr;
      const T* gg = ar + sp.og;
      if (sp.coupled) for (int64_t j = 0; j < H; ++j) ct[j] = cpr[j] + gi[j] * (gg[j] - cpr[j]);
      else if (gi && gf) for (int64_t j = 0; j < H; ++j) ct[j] = gi[j] * gg[j] + gf[j] * cpr[j];
      else if (gi) for (int64_t j = 0; j < H; ++j) ct[j] = gi[j] * gg[j] + cpr[j];
      else if (gf) for (int64_t j = 0; j < H; ++j) ct[j] = gg[j] + gf[j] * cpr[j];
      else for (int64_t j = 0; j < H; ++j) ct[j] = gg[j] + cpr[j];
      const T* hc = ct;
      if (sp.out_act) {
        T* hr = hcp + b * H;
        std::memcpy(hr, ct, H * sizeof(T));
        vtanh(hr, H);
        hc = hr;
      }
      if (sp.oo >= 0) {
        T* go = ar + sp.oo;
        if (pco) for (int64_t j = 0; j < H; ++j) go[j] += pco[j] * ct[j];
        vsig(go, H);
        for (int64_t j = 0; j < H; ++j) snr[j] = m ? go[j] * hc[j] : spr[j];
      } else {
        for (int64_t j = 0; j < H; ++j) snr[j] = m ? hc[j] : spr[j];
      }
      for (int64_t j = 0; j < H; ++j) cnr[j] = m ? ct[j] : cpr[j];
      if (sp.fgr) {
        for (int64_t k = 0; k < sp.nsig; ++k)
          for (int64_t j = 0; j < H; ++j)
            snr[H + k * H + j] = m ? ar[sp.sig[k] + j] : spr[H + k * H + j];
      }
    }
  }
}

std::vector<Tensor> lstm_forward(Tensor xp, Tensor h0, Tensor c0, Tensor a0, Tensor w_rec, Tensor w_ci,
                                 Tensor w_cf, Tensor w_co, Tensor mask, std::vector<int64_t> spec,
                                 bool keep) {
  const Spec sp(spec);
  xp = xp.contiguous();
  w_rec = w_rec.contiguous();
  const int64_t Tn = xp.size(0), B = xp.size(1), GH = xp.size(2), H = h0.size(-1);
  Tensor S = xp.new_empty({Tn + 1, B, w_rec.size(1)});
  S[0].narrow(1, 0, H).copy_(h0);
  if (sp.fgr) S[0].narrow(1, H, w_rec.size(1) - H).copy_(a0);
  Tensor C = xp.new_empty({keep ? Tn + 1 : 2, B, H});
  C[0].copy_(c0);
  Tensor A = xp.new_empty({keep ? Tn : 1, B, GH});
  Tensor HC = sp.out_act ? xp.new_empty({keep ? Tn : 1, B, H}) : xp.new_empty({0});
  w_ci = w_ci.contiguous(); w_cf = w_cf.contiguous(); w_co = w_co.contiguous();
  mask = mask.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "lstm_forward", [&] {
    lstm_fwd_loop<scalar_t>(sp, xp, S, C, A, HC, w_rec, w_ci, w_cf, w_co, mask, keep);
  });
  return {S, C, A, HC};
}

template <typename T>
void lstm_bwd_loop(const Spec& sp, const Tensor& dhs, Tensor& G, Tensor& G2, Tensor& DC, Tensor& DC2,
                   Tensor& dA, const Tensor& S, const Tensor& C, const Tensor& A, const Tensor& HC,
                   const Tensor& w_rec, const Tensor& w_ci, const Tensor& w_cf, const Tensor& w_co,
                   const Tensor& mask) {
  const int64_t Tn = A.size(0), B = A.size(1), GH = A.size(2), H = C.size(2), HS = S.size(2);
  const bool* mk = mask_ptr(mask);
  const T* pci = sp.peep && sp.oi >= 0 ? w_ci.data_ptr<T>() : nullptr;
  const T* pcf = sp.peep && sp.of >= 0 ? w_cf.data_ptr<T>() : nullptr;
  const T* pco = sp.peep && sp.oo >= 0 ? w_co.data_ptr<T>() : nullptr;
  const int64_t so = sp.fgr && sp.oo >= 0 ? H + sp.src(sp.oo) * H : -1;
  const int64_t si = sp.fgr && sp.oi >= 0 ? H + sp.src(sp.oi) * H : -1;
  const int64_t sf = sp.fgr && sp.of >= 0 ? H + sp.src(sp.of) * H : -1;
  const T* pdhs = dhs.data_ptr<T>();
  std::vector<T> dcb(H), zb(HS, T(0));
  const T* zero = zb.data();
  for (int64_t t = Tn - 1; t >= 0; --t) {
    T* g_ = G.data_ptr<T>();      // [dh | da] (B, HS), gradient w.r.t. the state after step t
    T* dc_ = DC.data_ptr<T>();
    T* dc2 = DC2.data_ptr<T>();
    const T* pa = (A.data_ptr<T>() + (t) * A.stride(0));
    T* pd = (dA.data_ptr<T>() + (t) * dA.stride(0));
    const T* cp = (C.data_ptr<T>() + (t) * C.stride(0));
    const T* cn = (C.data_ptr<T>() + (t + 1) * C.stride(0));
    const T* hcp = sp.out_act ? (HC.data_ptr<T>() + (t) * HC.stride(0)) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      T* gr = g_ + b * HS;
      const T* dhr = pdhs + (t * B + b) * H;
      for (int64_t j = 0; j < H; ++j) gr[j] += dhr[j];
      T* d = pd + b * GH;
      if (mk && !mk[t * B + b]) {          // step skipped: state and its gradient pass through
        for (int64_t j = 0; j < GH; ++j) d[j] = 0;
        for (int64_t j = 0; j < H; ++j) dc2[b * H + j] = dc_[b * H + j];
        continue;
      }
      const T* a = pa + b * GH;
      const T* c0 = cp + b * H;
      const T* hc = sp.out_act ? hcp + b * H : cn + b * H;
      T* dc = dcb.data();                  // total gradient w.r.t. c^t
      const T* dcin = dc_ + b * H;
      T* dcp = dc2 + b * H;                // -> gradient w.r.t. c^{t-1}
      if (sp.oo >= 0) {
        const T* o = a + sp.oo;
        T* dpo = d + sp.oo;
        const T* dao = so >= 0 ? gr + so : zero;
        const T* wco = pco ? pco : zero;
        for (int64_t j = 0; j < H; ++j) {
          dpo[j] = (gr[j] * hc[j] + dao[j]) * o[j] * (T(1) - o[j]);
          dc[j] = gr[j] * o[j];                          // d hc
        }
        if (sp.out_act) for (int64_t j = 0; j < H; ++j) dc[j] = dcin[j] + dc[j] * (T(1) - hc[j] * hc[j]) + dpo[j] * wco[j];
        else for (int64_t j = 0; j < H; ++j) dc[j] = dcin[j] + dc[j] + dpo[j] * wco[j];
      } else if (sp.out_act) {
        for (int64_t j = 0; j < H; ++j) dc[j] = dcin[j] + gr[j] * (T(1) - hc[j] * hc[j]);
      } else {
        for (int64_t j = 0; j < H; ++j) dc[j] = dcin[j] + gr[j];
      }
      const T* g = a + sp.og;
      const T* i = sp.oi >= 0 ? a + sp.oi : nullptr;
      const T* f = sp.of >= 0 ? a + sp.of : nullptr;
      T* dpg = d + sp.og;
      if (i) for (int64_t j = 0; j < H; ++j) dpg[j] = dc[j] * i[j];      // dg, activation below
      else for (int64_t j = 0; j < H; ++j) dpg[j] = dc[j];
      if (sp.coupled) {                    // c = c0 + i (g - c0)
        T* dpi = d + sp.oi;
        const T* dai = si >= 0 ? gr + si : zero;
        for (int64_t j = 0; j < H; ++j) {
          const T di = dc[j] * (g[j] - c0[j]) + dai[j];
          dpi[j] = di * i[j] * (T(1) - i[j]);
          dcp[j] = dc[j] - dpg[j];
        }
      } else {
        if (i) {
          T* dpi = d + sp.oi;
          const T* dai = si >= 0 ? gr + si : zero;
          for (int64_t j = 0; j < H; ++j) {
            const T di = dc[j] * g[j] + dai[j];
            dpi[j] = di * i[j] * (T(1) - i[j]);
          }
        }
        if (f) {
          T* dpf = d + sp.of;
          const T* daf = sf >= 0 ? gr + sf : zero;
          for (int64_t j = 0; j < H; ++j) {
            const T df = dc[j] * c0[j] + daf[j];
            dpf[j] = df * f[j] * (T(1) - f[j]);
            dcp[j] = dc[j] * f[j];
          }
        } else {
          for (int64_t j = 0; j < H; ++j) dcp[j] = dc[j];
        }
      }
      if (sp.in_act) for (int64_t j = 0; j < H; ++j) dpg[j] *= T(1) - g[j] * g[j];
      if (pci) for (int64_t j = 0; j < H; ++j) dcp[j] += d[sp.oi + j] * pci[j];
      if (pcf) for (int64_t j = 0; j < H; ++j) dcp[j] += d[sp.of + j] * pcf[j];
    }
    mm_dw<T>(G2.data_ptr<T>(), pd, w_rec.data_ptr<T>(), B, HS, GH, T(0));  // w.r.t. the state before t
    if (mk) {
      T* g2 = G2.data_ptr<T>();
      for (int64_t b = 0; b < B; ++b)
        if (!mk[t * B + b])
          for (int64_t j = 0; j < HS; ++j) g2[b * HS + j] = g_[b * HS + j];
    }
    std::swap(G, G2);
    std::swap(DC, DC2);
  }
}

std::vector<Tensor> lstm_backward(Tensor dhs, Tensor dhT, Tensor dcT, Tensor daT, Tensor S, Tensor C,
                                  Tensor A, Tensor HC, Tensor w_rec, Tensor w_ci, Tensor w_cf,
                                  Tensor w_co, Tensor mask, std::vector<int64_t> spec) {
  const Spec sp(spec);
  dhs = dhs.contiguous();
  w_rec = w_rec.contiguous();
  const int64_t Tn = A.size(0), B = A.size(1), GH = A.size(2), H = C.size(2), HS = S.size(2);
  Tensor G = dhs.new_zeros({B, HS}), G2 = dhs.new_empty({B, HS});
  G.narrow(1, 0, H).copy_(dhT);
  if (sp.fgr) G.narrow(1, H, HS - H).copy_(daT);
  Tensor DC = dcT.contiguous().clone(), DC2 = dhs.new_empty({B, H});
  Tensor dA = dhs.new_empty({Tn, B, GH});
  w_ci = w_ci.contiguous(); w_cf = w_cf.contiguous(); w_co = w_co.contiguous();
  mask = mask.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "lstm_backward", [&] {
    lstm_bwd_loop<scalar_t>(sp, dhs, G, G2, DC, DC2, dA, S, C, A, HC, w_rec, w_ci, w_cf, w_co, mask);
  });
  Tensor dW = at::mm(dA.reshape({Tn * B, GH}).t(), S.narrow(0, 0, Tn).reshape({Tn * B, HS}));
  Tensor none = dhs.new_empty({0});
  Tensor dci = none, dcf = none, dco = none;
  if (sp.peep) {
    Tensor Cp = C.narrow(0, 0, Tn), Cn = C.narrow(0, 1, Tn);
    if (sp.oi >= 0) dci = (dA.narrow(2, sp.oi, H) * Cp).sum({0, 1});
    if (sp.of >= 0) dcf = (dA.narrow(2, sp.of, H) * Cp).sum({0, 1});
    if (sp.oo >= 0) dco = (dA.narrow(2, sp.oo, H) * Cn).sum({0, 1});
  }
  Tensor dh0 = G.narrow(1, 0, H).clone();
  Tensor da0 = sp.fgr ? G.narrow(1, H, HS - H).clone() : none;
  return {dA, dh0, DC, da0, dW, dci, dcf, dco};
}

// ------------------------------------------------------------------------------------- GRU
// xp (T, B, 3H) = W x + b_ih + [b_hr, b_hz, 0]; G (T, B, 4H) = r, z, n, R_n h + b_hn per step
template <typename T>
void gru_fwd_loop(const Tensor& xp, Tensor& S, Tensor& G, Tensor& gh, const Tensor& w_hh,
                  const Tensor& bpad, const Tensor& mask, bool keep) {
  const int64_t Tn = xp.size(0), B = xp.size(1), H = S.size(2);
  const bool* mk = mask_ptr(mask);
  const T* px = xp.data_ptr<T>();
  const T* pb = bpad.data_ptr<T>();
  for (int64_t t = 0; t < Tn; ++t) {
    for (int64_t b = 0; b < B; ++b) std::memcpy(gh.data_ptr<T>() + b * 3 * H, pb, 3 * H * sizeof(T));
    mm_xwt<T>(gh.data_ptr<T>(), S.data_ptr<T>() + t * B * H, w_hh.data_ptr<T>(), B, 3 * H, H, T(1));
    const T* pg = gh.data_ptr<T>();
    T* pG = (G.data_ptr<T>() + (keep ? t : 0) * G.stride(0));
    const T* hp = (S.data_ptr<T>() + (t) * S.stride(0));
    T* hn = (S.data_ptr<T>() + (t + 1) * S.stride(0));
    for (int64_t b = 0; b < B; ++b) {
      const T* x = px + (t * B + b) * 3 * H;
      const T* g = pg + b * 3 * H;
      T* q = pG + b * 4 * H;
      const bool m = mk ? mk[t * B + b] : true;
      for (int64_t j = 0; j < 2 * H; ++j) q[j] = x[j] + g[j];
      vsig(q, 2 * H);
      for (int64_t j = 0; j < H; ++j) {
        q[3 * H + j] = g[2 * H + j];
        q[2 * H + j] = x[2 * H + j] + q[j] * g[2 * H + j];
      }
      vtanh(q + 2 * H, H);
      for (int64_t j = 0; j < H; ++j) {
        const T z = q[H + j], n = q[2 * H + j], h0 = hp[b * H + j];
        hn[b * H + j] = m ? n + z * (h0 - n) : h0;
      }
    }
  }
}

std::vector<Tensor> gru_forward(Tensor xp, Tensor h0, Tensor w_hh, Tensor b_hn, Tensor mask, bool keep) {
  xp = xp.contiguous();
  w_hh = w_hh.contiguous();
  const int64_t Tn = xp.size(0), B = xp.size(1), H = h0.size(-1);
  Tensor S = xp.new_empty({Tn + 1, B, H});
  S[0].copy_(h0);
  Tensor G = xp.new_empty({keep ? Tn : 1, B, 4 * H});
  Tensor gh = xp.new_empty({B, 3 * H});
  Tensor bpad = at::cat({b_hn.new_zeros({2 * H}), b_hn});
  mask = mask.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "gru_forward", [&] {
    gru_fwd_loop<scalar_t>(xp, S, G, gh, w_hh, bpad, mask, keep);
  });
  return {S, G};
}

template <typename T>
void gru_bwd_loop(const Tensor& dhs, Tensor& dh, Tensor& dh2, Tensor& dX, Tensor& dR, const Tensor& S,
                  const Tensor& G, const Tensor& w_hh, const Tensor& mask) {
  const int64_t Tn = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  const bool* mk = mask_ptr(mask);
  const T* pdhs = dhs.data_ptr<T>();
  for (int64_t t = Tn - 1; t >= 0; --t) {
    T* pdh = dh.data_ptr<T>();
    T* pz = dh2.data_ptr<T>();             // dh * z (dh where the step is skipped), then + dR R
    const T* pG = (G.data_ptr<T>() + (t) * G.stride(0));
    const T* hp = (S.data_ptr<T>() + (t) * S.stride(0));
    T* px = (dX.data_ptr<T>() + (t) * dX.stride(0));
    T* pr = (dR.data_ptr<T>() + (t) * dR.stride(0));
    for (int64_t b = 0; b < B; ++b) {
      const T* q = pG + b * 4 * H;
      T* dx = px + b * 3 * H;
      T* dr = pr + b * 3 * H;
      const T* dh = pdh + b * H;
      const T* dn = pdhs + (t * B + b) * H;
      T* hz = pz + b * H;
      if (mk && !mk[t * B + b]) {          // step skipped: the gradient passes through
        for (int64_t j = 0; j < 3 * H; ++j) dx[j] = dr[j] = 0;
        for (int64_t j = 0; j < H; ++j) hz[j] = dh[j] + dn[j];
        continue;
      }
      const T* r = q; const T* z = q + H; const T* n = q + 2 * H; const T* ghn = q + 3 * H;
      const T* h0 = hp + b * H;
      for (int64_t j = 0; j < H; ++j) {
        const T d = dh[j] + dn[j];
        const T dpn = d * (T(1) - z[j]) * (T(1) - n[j] * n[j]);
        const T dpr = dpn * ghn[j] * r[j] * (T(1) - r[j]);
        const T dpz = d * (h0[j] - n[j]) * z[j] * (T(1) - z[j]);
        dx[j] = dpr; dr[j] = dpr;
        dx[H + j] = dpz; dr[H + j] = dpz;
        dx[2 * H + j] = dpn;
        dr[2 * H + j] = dpn * r[j];
        hz[j] = d * z[j];
      }
    }
    mm_dw<T>(dh2.data_ptr<T>(), pr, w_hh.data_ptr<T>(), B, H, 3 * H, T(1));
    std::swap(dh, dh2);
  }
}

std::vector<Tensor> gru_backward(Tensor dhs, Tensor dhT, Tensor S, Tensor G, Tensor w_hh, Tensor mask) {
  dhs = dhs.contiguous();
  w_hh = w_hh.contiguous();
  const int64_t Tn = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  Tensor dh = dhT.contiguous().clone(), dh2 = dhs.new_empty({B, H});
  Tensor dX = dhs.new_empty({Tn, B, 3 * H}), dR = dhs.new_empty({Tn, B, 3 * H});
  mask = mask.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "gru_backward", [&] {
    gru_bwd_loop<scalar_t>(dhs, dh, dh2, dX, dR, S, G, w_hh, mask);
  });
  Tensor dW = at::mm(dR.reshape({Tn * B, 3 * H}).t(), S.narrow(0, 0, Tn).reshape({Tn * B, H}));
  Tensor db_hn = dR.narrow(2, 2 * H, H).sum({0, 1});
  return {dX, dh, dW, db_hn};
}

// ----------------------------------------------------------------------------- Elman RNN
std::vector<Tensor> elman_forward(Tensor xp, Tensor h0, Tensor w_hh, Tensor mask, bool relu) {
  xp = xp.contiguous();
  w_hh = w_hh.contiguous();
  const int64_t Tn = xp.size(0), B = xp.size(1), H = xp.size(2);
  Tensor S = xp.new_empty({Tn + 1, B, H});
  S[0].copy_(h0);
  mask = mask.contiguous();
  const bool* mk = mask_ptr(mask);
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "elman_forward", [&] {
    using T = scalar_t;
    for (int64_t t = 0; t < Tn; ++t) {
      T* p = S.data_ptr<T>() + (t + 1) * B * H;
      std::memcpy(p, xp.data_ptr<T>() + t * B * H, B * H * sizeof(T));
      mm_xwt<T>(p, S.data_ptr<T>() + t * B * H, w_hh.data_ptr<T>(), B, H, H, T(1));
      const T* hp = (S.data_ptr<T>() + (t) * S.stride(0));
      if (relu) for (int64_t k = 0; k < B * H; ++k) p[k] = p[k] < T(0) ? T(0) : p[k];  // NaN stays NaN, as relu_
      else vtanh(p, B * H);
      if (mk)
        for (int64_t b = 0; b < B; ++b)
          if (!mk[t * B + b]) std::memcpy(p + b * H, hp + b * H, H * sizeof(T));
    }
  });
  return {S};
}

std::vector<Tensor> elman_backward(Tensor dhs, Tensor dhT, Tensor S, Tensor w_hh, Tensor mask, bool relu) {
  dhs = dhs.contiguous();
  w_hh = w_hh.contiguous();
  const int64_t Tn = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  Tensor dA = dhs.new_empty({Tn, B, H});
  Tensor dh = dhT.contiguous().clone(), dh2 = dhs.new_empty({B, H});
  mask = mask.contiguous();
  const bool* mk = mask_ptr(mask);
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "elman_backward", [&] {
    using T = scalar_t;
    const T* pdhs = dhs.data_ptr<T>();
    for (int64_t t = Tn - 1; t >= 0; --t) {
      const T* h = (S.data_ptr<T>() + (t + 1) * S.stride(0));
      T* d = (dA.data_ptr<T>() + (t) * dA.stride(0));
      T* pdh = dh.data_ptr<T>();
      const T* dn = pdhs + t * B * H;
      for (int64_t k = 0; k < B * H; ++k) pdh[k] += dn[k];
      if (relu) for (int64_t k = 0; k < B * H; ++k) d[k] = h[k] > T(0) ? pdh[k] : T(0);
      else for (int64_t k = 0; k < B * H; ++k) d[k] = pdh[k] * (T(1) - h[k] * h[k]);
      if (mk)
        for (int64_t b = 0; b < B; ++b) {
          if (mk[t * B + b]) std::memset(pdh + b * H, 0, H * sizeof(T));
          else std::memset(d + b * H, 0, H * sizeof(T));   // skipped step: gradient passes through
        }
      if (mk) std::memcpy(dh2.data_ptr<T>(), dh.data_ptr<T>(), B * H * sizeof(T));
      mm_dw<T>(dh2.data_ptr<T>(), d, w_hh.data_ptr<T>(), B, H, H, mk ? T(1) : T(0));
      std::swap(dh, dh2);
    }
  });
  Tensor dW = at::mm(dA.reshape({Tn * B, H}).t(), S.narrow(0, 0, Tn).reshape({Tn * B, H}));
  return {dA, dh, dW};
}

}  // namespace

TORCH_LIBRARY(rnnbench_scan, m) {
  m.def("lstm_forward(Tensor xp, Tensor h0, Tensor c0, Tensor a0, Tensor w_rec, Tensor w_ci, Tensor w_cf, "
        "Tensor w_co, Tensor mask, int[] spec, bool keep) -> Tensor[]", &lstm_forward);
  m.def("lstm_backward(Tensor dhs, Tensor dhT, Tensor dcT, Tensor daT, Tensor S, Tensor C, Tensor A, "
        "Tensor HC, Tensor w_rec, Tensor w_ci, Tensor w_cf, Tensor w_co, Tensor mask, int[] spec) -> Tensor[]",
        &lstm_backward);
  m.def("gru_forward(Tensor xp, Tensor h0, Tensor w_hh, Tensor b_hn, Tensor mask, bool keep) -> Tensor[]",
        &gru_forward);
  m.def("gru_backward(Tensor dhs, Tensor dhT, Tensor S, Tensor G, Tensor w_hh, Tensor mask) -> Tensor[]",
        &gru_backward);
  m.def("elman_forward(Tensor xp, Tensor h0, Tensor w_hh, Tensor mask, bool relu) -> Tensor[]", &elman_forward);
  m.def("elman_backward(Tensor dhs, Tensor dhT, Tensor S, Tensor w_hh, Tensor mask, bool relu) -> Tensor[]",
        &elman_backward);
}
