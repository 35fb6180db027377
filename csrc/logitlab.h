/* Shared helpers of logitlab's native kernels (every .c file of csrc/): the 8-lane vector
 * types, loads and stores, the exp and tanh polynomials, and the horizontal sums that add
 * float32 block sums in double.
 *
 * Vectorised with GCC/Clang generic vectors (8 x float), so the same source compiles to SSE2,
 * AVX2, AVX-512 or NEON without intrinsics: the build compiles every kernel once per ISA level
 * and the loader (logitlab._native) picks the one the CPU runs. exp is a Cody-Waite reduction +
 * degree-7 polynomial in Estrin form (< 2 ulp on [-87, 0]); the cross-entropy kernels compile it
 * with -ffp-contract=fast (fused multiply-adds), the other kernels without, each as before the
 * move to this header (see logitlab/_native/_build.py).
 */
#ifndef LOGITLAB_H
#define LOGITLAB_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX__)
#include <immintrin.h>
#endif

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

#define VL 8

static inline v8f splat(float x) { return (v8f){x, x, x, x, x, x, x, x}; }
static inline v8i splati(int32_t x) { return (v8i){x, x, x, x, x, x, x, x}; }

static inline v8f loadu(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof(v));
    return v;
}
static inline void storeu(float *p, v8f v) { memcpy(p, &v, sizeof(v)); }

/* exp(x) for x <= 0; exactly 0 for x < -87 (including -inf) and for NaN. One mask does both the
 * clamp and the flush. The hot loops, which never see NaN (NaN rows are handled before them),
 * call this directly: a quarter fewer operations than vexp_neg's NaN propagation. */
static inline v8f vexp_nonan(v8f x) {
    const v8f log2e = splat(1.44269504088896341f);
    const v8f ln2hi = splat(0.693359375f);
    const v8f ln2lo = splat(-2.12194440e-4f);
    const v8f magic = splat(12582912.0f);
    const v8i keep = (v8i)(x >= splat(-87.0f));
    const v8f xc = (v8f)(((v8i)x & keep) | ((v8i)splat(-87.0f) & ~keep));
    v8f t = xc * log2e + magic;
    v8f n = t - magic;
    v8f r = xc - n * ln2hi;
    r = r - n * ln2lo;
    /* Estrin's scheme: the degree-5 factor as three independent pairs joined by r^2, a chain
     * of 4 dependent steps instead of Horner's 7. benchmarks/ab_ce_kernel.py, Horner vs this:
     * 0.964 read-only rows, 0.876 the one-pass backward, 0.946 loss + gradient (128256). */
    v8f r2 = r * r;
    v8f q01 = splat(1.6666665459e-1f) * r + splat(5.0000001201e-1f);
    v8f q23 = splat(8.3334519073e-3f) * r + splat(4.1665795894e-2f);
    v8f p = splat(1.9875691500e-4f) * r + splat(1.3981999507e-3f);
    p = (p * r2 + q23) * r2 + q01;
    p = p * r2 + (r + splat(1.0f));
    v8i scale = (((v8i)t - (v8i)magic) + splati(127)) << 23;
    return (v8f)((v8i)(p * (v8f)scale) & keep);
}

/* exp(x) for x <= 0; returns exactly 0 for x < -87 (including -inf), NaN for NaN. */
static inline v8f vexp_neg(v8f x) {
    const v8i isnan = (v8i)(x != x);
    return (v8f)(((v8i)vexp_nonan(x) & ~isnan) | ((v8i)x & isnan));
}

/* tanh(y) = sign(y) (1 - e) / (1 + e), e = exp(-2|y|): absolute error ~1e-7, never overflows.
 * *e_out (if not NULL) receives e: tanh'(y) = 1 - tanh^2 = 4 e / (1 + e)^2 without the
 * cancellation of 1 - tanh^2 (relative error eps / sech^2, 100% once |y| > 9). */
static inline v8f vtanh_e(v8f y, v8f *e_out) {
    v8i sign = (v8i)y & splati((int32_t)0x80000000);
    v8f ay = (v8f)((v8i)y & splati(0x7fffffff));
    v8f e = vexp_neg(splat(-2.0f) * ay);
    v8f t = (splat(1.0f) - e) / (splat(1.0f) + e);
    if (e_out) *e_out = e;
    return (v8f)((v8i)t | sign);
}
static inline v8f vtanh(v8f y) { return vtanh_e(y, NULL); }

/* Load 8 floats starting at p, filling lanes past `len` with `fill`. */
static inline v8f load_tail(const float *p, int64_t len, float fill) {
    v8f v = splat(fill);
    for (int64_t j = 0; j < len; j++) v[j] = p[j];
    return v;
}

/* exp(x) for x <= 0 including the float32 subnormal range (-103.97, -87.3], as libm's expf: the
 * fused CE kernel's vexp_neg flushes x < -87 to 0, which is harmless inside a sum next to 1 but
 * not for a statistic of one tiny term (the loss of a near-certain row, exp(-100) = 3.7e-44, and
 * its condition number). Lanes below -87 are shifted up by 64 ln 2 and scaled back by 2^-64:
 * one extra rounding, in the subnormal result only. */
static inline v8f vexp_neg_sub(v8f x) {
    const v8i low = (v8i)(x < splat(-87.0f));
    const v8f shifted = x + splat(44.3614195558365f); /* 64 ln 2 */
    v8f r = vexp_neg((v8f)(((v8i)shifted & low) | ((v8i)x & ~low)));
    v8f scaled = r * splat(5.42101086242752217e-20f); /* 2^-64 */
    return (v8f)(((v8i)scaled & low) | ((v8i)r & ~low));
}

/* Horizontal sums: the double lanes of a block-sum accumulator to float (dsum), the float32
 * lanes of one block to double (hsumd). */
static inline float dsum(v8d a) {
    double s = 0.0;
    for (int j = 0; j < VL; j++) s += a[j];
    return (float)s;
}
static inline double hsumd(v8f a) {
    double s = 0.0;
    for (int j = 0; j < VL; j++) s += (double)a[j];
    return s;
}

/* One row of logitlab_diag_rows' output (csrc/diag_rows.c). logitlab.diagnostics.rows.ROW_DTYPE
 * declares the same fields, all double, in the same order, and the NumPy pass fills the same
 * record; tests/test_diagnostics_rows.py reads this declaration and compares the two.
 * With a = max z (first index k), d_i = z_i - a and w_i = exp(d_i) for i != k, w_k = 0: */
typedef struct {
    double max;         /* a */
    double min;         /* min z */
    double sum_w;       /* s = sum w: lse = a + log1p(s), 1 - p_max = s / (1 + s) */
    double ent_w;       /* -sum d w >= 0: entropy = log1p(s) + ent_w / (1 + s) */
    double mean;        /* mean of z */
    double std;         /* population standard deviation of z */
    double sum_w_half;  /* temperature 1/2: sum w^2 */
    double ent_w_half;  /* -sum d w^2 / (1/2) */
    double sum_w_two;   /* temperature 2: sum sqrt(w) */
    double ent_w_two;   /* -sum d sqrt(w) / 2 */
    double abs_z_w;     /* sum |z| w */
    double min_abs;     /* min |z| */
    double p_target;    /* p at the target (the argmax without targets), as the kernel rounds it */
} logitlab_diag_row;

/* lane-wise min, |a| and sqrt */
static inline v8f vmin8(v8f a, v8f b) { return (v8f)(((v8i)a & (v8i)(a < b)) | ((v8i)b & ~(v8i)(a < b))); }
static inline v8f vabs8(v8f a) { return (v8f)((v8i)a & splati(0x7fffffff)); }
static inline v8f vsqrt8(v8f a) {
#ifdef __AVX__
    return (v8f)_mm256_sqrt_ps((__m256)a);
#else
    v8f r;
    for (int j = 0; j < VL; j++) r[j] = sqrtf(a[j]);
    return r;
#endif
}

#endif /* LOGITLAB_H */
