// The small-matrix kernels of packed_scan.cpp: C = [C +] A . B with B (weights) packed once per call
// (AVX-512 register blocks where the CPU has them, else a loop the compiler vectorises), and in-place
// sigmoid / tanh (Sleef, the functions torch's own vectorised ops use). Compiled with -mavx2 -mfma;
// the AVX-512 functions carry their own target attribute and run only where the CPU reports it.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "simd.h"

extern "C" {
__m512 Sleef_expf16_u10avx512f(__m512);
__m512 Sleef_tanhf16_u10avx512f(__m512);
}

namespace rnnbench_packed {

inline int64_t pad8(int64_t n) { return (n + 7) / 8 * 8; }

// ------------------------------------------------------------------ C = [C +] A . B, B (Kd x N, ldb)
// A register-blocked kernel (AVX-512, where the CPU has it): rows of C in blocks of up to 10, two
// 16-wide column strips (20 accumulators), each row of B loaded once per block; B stays in L1.
#define T512 __attribute__((target("avx512f")))
template <int R>
T512 void kern512(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                  int64_t Kd, int64_t N, bool acc) {
  int64_t j = 0;
  for (; j + 32 <= N; j += 32) {
    __m512 c0[R], c1[R];
    for (int r = 0; r < R; ++r) {
      c0[r] = acc ? _mm512_loadu_ps(C + r * ldc + j) : _mm512_setzero_ps();
      c1[r] = acc ? _mm512_loadu_ps(C + r * ldc + j + 16) : _mm512_setzero_ps();
    }
    const float* b = B + j;
    for (int64_t k = 0; k < Kd; ++k, b += ldb) {
      const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
      for (int r = 0; r < R; ++r) {
        const __m512 a = _mm512_set1_ps(A[r * lda + k]);
        c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
        c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_ps(C + r * ldc + j, c0[r]);
      _mm512_storeu_ps(C + r * ldc + j + 16, c1[r]);
    }
  }
  for (; j < N; j += 16) {
    const __mmask16 m = N - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - j)) - 1);
    __m512 c0[R];
    for (int r = 0; r < R; ++r) c0[r] = acc ? _mm512_maskz_loadu_ps(m, C + r * ldc + j) : _mm512_setzero_ps();
    const float* b = B + j;
    for (int64_t k = 0; k < Kd; ++k, b += ldb) {
      const __m512 b0 = _mm512_maskz_loadu_ps(m, b);
      for (int r = 0; r < R; ++r) c0[r] = _mm512_fmadd_ps(_mm512_set1_ps(A[r * lda + k]), b0, c0[r]);
    }
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(C + r * ldc + j, m, c0[r]);
  }
}

T512 void gemm512(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                  int64_t M, int64_t Kd, int64_t N, bool acc) {
  // row blocks of up to 10: 20 accumulators of the 32 registers, each B load feeds 10 rows
  for (int64_t i = 0; i < M;) {
    const int64_t r = std::min<int64_t>(10, M - i);
    const float* a = A + i * lda;
    float* c = C + i * ldc;
    switch (r) {
      case 10: kern512<10>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 9: kern512<9>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 8: kern512<8>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 7: kern512<7>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 6: kern512<6>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 5: kern512<5>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 4: kern512<4>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 3: kern512<3>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      case 2: kern512<2>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
      default: kern512<1>(a, lda, B, ldb, c, ldc, Kd, N, acc); break;
    }
    i += r;
  }
}

const bool k512 = __builtin_cpu_supports("avx512f");

// C (M x N, ldc; N a multiple of 8, the columns past the real width are scratch) = [C +] A (M x Kd, lda) . B;
// without AVX-512 a plain loop the compiler vectorises (AVX2)
template <typename T> void gemm_loop(const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
                                     int64_t M, int64_t Kd, int64_t N, bool acc) {
  for (int64_t i = 0; i < M; ++i) {
    T* __restrict__ c = C + i * ldc;
    if (!acc) std::fill(c, c + N, T(0));
    for (int64_t k = 0; k < Kd; ++k) {
      const T a = A[i * lda + k];
      const T* __restrict__ b = B + k * ldb;
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}
inline void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                 int64_t M, int64_t Kd, int64_t N, bool acc) {
  if (k512) return gemm512(A, lda, B, ldb, C, ldc, M, Kd, N, acc);
  gemm_loop(A, lda, B, ldb, C, ldc, M, Kd, N, acc);
}
inline void gemm(const double* A, int64_t lda, const double* B, int64_t ldb, double* C, int64_t ldc,
                 int64_t M, int64_t Kd, int64_t N, bool acc) {
  gemm_loop(A, lda, B, ldb, C, ldc, M, Kd, N, acc);
}

// W (R x C) -> P (C x pad8(R)) = W^T, zero-padded columns (forward: out = h . W^T)
template <typename T> std::vector<T> pack_t(const T* w, int64_t R, int64_t C) {
  const int64_t Rp = pad8(R);
  std::vector<T> p(C * Rp, T(0));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) p[c * Rp + r] = w[r * C + c];
  return p;
}
// W (R x C) -> P (R x pad8(C)), zero-padded columns (backward: dh = d . W)
template <typename T> std::vector<T> pack_n(const T* w, int64_t R, int64_t C) {
  const int64_t Cp = pad8(C);
  std::vector<T> p(R * Cp, T(0));
  for (int64_t r = 0; r < R; ++r) std::memcpy(p.data() + r * Cp, w + r * C, C * sizeof(T));
  return p;
}

// ------------------------------------------------------------------ sigmoid / tanh in place (Sleef)
T512 void vsig512(float* p, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, p + i);
    _mm512_mask_storeu_ps(p + i, m, _mm512_div_ps(one, _mm512_add_ps(one, Sleef_expf16_u10avx512f(_mm512_sub_ps(zero, x)))));
  }
}
T512 void vtanh512(float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(p + i, m, Sleef_tanhf16_u10avx512f(_mm512_maskz_loadu_ps(m, p + i)));
  }
}

// the AVX2 forms of simd.h, AVX-512 (float) where the CPU has it
inline void vsig(float* p, int64_t n) { k512 ? vsig512(p, n) : rnnbench_simd::vsig(p, n); }
inline void vsig(double* p, int64_t n) { rnnbench_simd::vsig(p, n); }
inline void vtanh(float* p, int64_t n) { k512 ? vtanh512(p, n) : rnnbench_simd::vtanh(p, n); }
inline void vtanh(double* p, int64_t n) { rnnbench_simd::vtanh(p, n); }

template <typename F> void each_member(int64_t K, F f) {
  at::parallel_for(0, K, 1, [&](int64_t a, int64_t b) { for (int64_t k = a; k < b; ++k) f(k); });
}

}  // namespace rnnbench_packed
