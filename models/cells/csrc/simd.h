// In-place AVX2 sigmoid / tanh over n contiguous values (Sleef, linked into libtorch_cpu: the same
// functions torch's own vectorised sigmoid/tanh use), shared by scan.cpp and packed_simd.h. Both
// are compiled with -mavx2 -mfma and loaded only where torch reports AVX2 or better; ninja tracks
// this header through the compiler's dependency files, so an edit rebuilds both extensions.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

extern "C" {
__m256 Sleef_expf8_u10avx2(__m256);
__m256 Sleef_tanhf8_u10avx2(__m256);
__m256d Sleef_expd4_u10avx2(__m256d);
__m256d Sleef_tanhd4_u10avx2(__m256d);
}

namespace rnnbench_simd {

// f over p[0..n) in W-wide vectors; the tail goes through a zero-padded buffer
template <typename V, int W, typename T, typename F>
inline void vmap(T* p, int64_t n, F f, V (*load)(const T*), void (*store)(T*, V)) {
  int64_t i = 0;
  for (; i + W <= n; i += W) store(p + i, f(load(p + i)));
  if (i < n) {
    T buf[W] = {};
    std::memcpy(buf, p + i, (n - i) * sizeof(T));
    store(buf, f(load(buf)));
    std::memcpy(p + i, buf, (n - i) * sizeof(T));
  }
}

inline __m256 ldf(const float* p) { return _mm256_loadu_ps(p); }
inline void stf(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline __m256d ldd(const double* p) { return _mm256_loadu_pd(p); }
inline void std_(double* p, __m256d v) { _mm256_storeu_pd(p, v); }

// p = sigmoid(p) = 1 / (1 + exp(-p))
inline void vsig(float* p, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
  vmap<__m256, 8>(p, n, [&](__m256 x) {
    return _mm256_div_ps(one, _mm256_add_ps(one, Sleef_expf8_u10avx2(_mm256_sub_ps(zero, x))));
  }, ldf, stf);
}
inline void vsig(double* p, int64_t n) {
  const __m256d one = _mm256_set1_pd(1.), zero = _mm256_setzero_pd();
  vmap<__m256d, 4>(p, n, [&](__m256d x) {
    return _mm256_div_pd(one, _mm256_add_pd(one, Sleef_expd4_u10avx2(_mm256_sub_pd(zero, x))));
  }, ldd, std_);
}
// p = tanh(p)
inline void vtanh(float* p, int64_t n) {
  vmap<__m256, 8>(p, n, [](__m256 x) { return Sleef_tanhf8_u10avx2(x); }, ldf, stf);
}
inline void vtanh(double* p, int64_t n) {
  vmap<__m256d, 4>(p, n, [](__m256d x) { return Sleef_tanhd4_u10avx2(x); }, ldd, std_);
}

}  // namespace rnnbench_simd
