/* Fused per-row cross-entropy kernel for logitlab.torch (float32, CPU), and at the end of the
 * file its class-major counterpart (logitlab_ce_cols_*) for chunks laid out classes x tokens.
 *
 * One call processes `n` rows of a float32 matrix in place. For every row it computes, with at
 * most three passes over the row (each row of up to ~128k classes stays in L2/L3 between passes):
 *   pass A  z = softcap(x) (formed on every load); row max a and its first index k
 *   pass B  s = sum_{i != k} exp(-d_i), sum_i e_i d_i (entropy), smoothing sums over finite z
 *   pass C  gradient g_i = gs * (A p_i - q_i w_i) * dy_i/dx_i, written over x (if requested)
 * with d_i = (a - z_i) / T >= 0 (the temperature on the difference) and p_i = exp(-d_i) / (1 + s).
 * lse = a / T + log1p(s) and -log p_t = d_t + log1p(s): no cancellation, never 0 * inf (classes
 * with z = -inf get exactly 0).
 *
 * Vectorised with GCC/Clang generic vectors (8 x float), so it compiles to AVX2/AVX-512/NEON
 * without intrinsics. exp is a Cody-Waite reduction + degree-7 polynomial in Estrin form (< 2 ulp
 * on [-87, 0]).
 * Accumulations use 8 float32 lanes over blocks of RB entries whose sums are added in double in a
 * fixed order, so the result is bitwise deterministic and independent of thread count.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* z = softcap(x), applied on every load so that the buffer stays untouched until the gradient
 * is written (the in-memory loss keeps the caller's logits intact in its forward). The
 * temperature is applied to differences, d = (a - z) / T: scaling z first would round every
 * z / T and carry eps |z / T| into d (1757 ulps on the loss of [-1e4, -1e4 - 2] at T = 0.7). */
static inline v8f tf(v8f x, float cap, int transform) {
    if (!transform) return x;
    return splat(cap) * vtanh(x / splat(cap));
}
/* scalar form: the same vector code, so that scalar and vector loads agree bit for bit */
static inline float tfs(float x, float cap, int transform) {
    if (!transform) return x;
    return tf(splat(x), cap, transform)[0];
}
/* d softcap(x) / dx = sech^2(x / c) = 4 e / (1 + e)^2 with e = exp(-2 |x / c|) */
static inline float dcaps(float x, float cap) {
    const float e = expf(-2.0f * fabsf(x / cap));
    return 4.0f * e / ((1.0f + e) * (1.0f + e));
}

/* Load up to 8 entries and transform; lanes past `len` become -inf (after the transform). */
static inline v8f ldz(const float *p, int64_t len, float cap, int transform) {
    if (len == VL) return tf(loadu(p), cap, transform);
    v8f z = tf(load_tail(p, len, 0.0f), cap, transform);
    for (int64_t j = len; j < VL; j++) z[j] = -INFINITY;
    return z;
}

static inline float dsum(v8d a) {
    double s = 0.0;
    for (int j = 0; j < VL; j++) s += a[j];
    return (float)s;
}

/* Row sums are taken in float32 lanes over blocks of RB entries and the block sums added in
 * double: the error then stays at a few ulps for any V (a float32 lane running over all of a
 * 200k-class row drifted to ~2e-5 relative). */
#define RB 1024


typedef struct {
    int64_t V;             /* classes per row */
    int64_t ld;            /* row stride (elements) */
    int64_t ignore_index;
    float inv_temp;        /* 1 / T */
    float softcap;         /* c > 0, or 0 for none */
    float eps;             /* label smoothing */
    float zloss;           /* coefficient of lse^2 */
    int64_t class_offset;  /* global index of column 0 (vocab-parallel shards) */
} ce_params;

static inline __attribute__((always_inline)) void one_row(
    float *x, const ce_params *P, int64_t t, const float *cw, float gs, int want_grad,
    float *loss, float *lse_out, float *ent_out, int64_t *amax_out) {
    const int64_t V = P->V;
    const int64_t nv = V / VL * VL;
    const float it = P->inv_temp, cap = P->softcap;
    const int transform = cap > 0.0f;
    /* pass A: max and first argmax of z = softcap(x) */
    v8f vmax = splat(-INFINITY);
    for (int64_t i = 0; i < nv; i += VL) {
        v8f z = tf(loadu(x + i), cap, transform);
        v8i gt = (v8i)(z > vmax) | (v8i)(z != z);
        vmax = (v8f)(((v8i)z & gt) | ((v8i)vmax & ~gt));
    }
    for (int64_t i = nv; i < V; i++) {
        float z = tfs(x[i], cap, transform);
        if (z > vmax[0] || z != z) vmax[0] = z;
    }
    float a = -INFINITY;
    int has_nan = 0;
    for (int j = 0; j < VL; j++) {
        if (vmax[j] != vmax[j]) has_nan = 1;
        else if (vmax[j] > a) a = vmax[j];
    }
    /* first index of the maximum: whole vectors are compared until one holds it */
    int64_t k = -1;
    const v8f vmx = splat(a);
    for (int64_t i = 0; i < nv && k < 0; i += VL) {
        v8i eq = (v8i)(tf(loadu(x + i), cap, transform) == vmx);
        for (int j = 0; j < VL; j++) {
            if (eq[j]) { k = i + j; break; }
        }
    }
    for (int64_t i = nv; i < V && k < 0; i++) {
        if (tfs(x[i], cap, transform) == a) k = i;
    }
    if (k < 0) k = 0;
    const int ignored = (t == P->ignore_index);
    if (amax_out) *amax_out = k + P->class_offset;
    if (has_nan || a == INFINITY || a == -INFINITY) {
        /* NaN propagates; an all -inf row has lse = -inf, target probability 0 (loss +inf). */
        float bad = has_nan ? NAN : (a == INFINITY ? NAN : INFINITY);
        *lse_out = has_nan ? NAN : a;
        if (ent_out) *ent_out = has_nan ? NAN : 0.0f;
        *loss = ignored ? 0.0f : bad;
        if (want_grad) {
            if (has_nan || a == INFINITY) {
                for (int64_t i = 0; i < V; i++) x[i] = ignored ? 0.0f : NAN;
            } else {
                memset(x, 0, (size_t)V * sizeof(float));
            }
        }
        return;
    }
    const int64_t tl = t - P->class_offset; /* local target index; outside [0, V) on other shards */
    const int local = (tl >= 0 && tl < V);
    const float xt = local ? x[tl] : 0.0f; /* pass C overwrites it */
    const float zt = local ? tfs(xt, cap, transform) : 0.0f;
    /* Without a transform, temperature or smoothing, pass B stores w_i = exp(z_i - a) over the
     * row (pass C then needs one multiply per entry instead of a second exp); the row is in L2
     * either way. */
    const int keep_w =
        want_grad && !ignored && gs != 0.0f && !transform && it == 1.0f && P->eps <= 0.0f;
    /* pass B. The first maximal entry is left out of s (it contributes exactly 1, which float32
     * lanes would otherwise absorb the small terms into) by zeroing its lane. */
    const v8f va = splat(a), vit = splat(it);
    const int smooth = P->eps > 0.0f;
    const int64_t kb = k / VL * VL;
    v8i klane = splati(0);
    klane[k - kb] = -1;
    v8d S = {0}, E = {0}, Fs = {0}, Cs = {0};
    for (int64_t ib = 0; ib < V; ib += RB) {
        const int64_t ie = ib + RB < V ? ib + RB : V;
        v8f s0 = splat(0), e0 = splat(0), f0 = splat(0), c0 = splat(0);
        for (int64_t i = ib; i < ie; i += VL) {
            int64_t len = V - i < VL ? V - i : VL;
            /* Pass B is bound by the exp, not by memory: fetch the next row (one request per
             * 64-byte line; prefetches never fault past the end) so that its pass A reads
             * cache instead of memory. benchmarks/ab_ce_kernel.py, without vs with: read-only
             * rows 0.942, loss + gradient rows 0.902 (32000 classes) and 0.909 (128256). */
            if ((i & 15) == 0) __builtin_prefetch(x + P->ld + i);
            v8f z0 = ldz(x + i, len, cap, transform);
            v8f d0 = (va - z0) * vit;
            v8f w0 = vexp_nonan(-d0);
            if (keep_w) {
                if (len == VL) storeu(x + i, w0);
                else for (int64_t q = 0; q < len; q++) x[i + q] = w0[q];
            }
            /* d = +inf where z = -inf: select 0 instead of 0 * inf */
            v8i fin0 = (v8i)(z0 > splat(-INFINITY));
            if (i == kb) fin0 &= ~klane, w0 = (v8f)((v8i)w0 & ~klane);
            s0 += w0;
            e0 += (v8f)((v8i)(w0 * d0) & fin0);
            if (smooth) {
                v8f dd0 = (v8f)((v8i)d0 & fin0);
                v8f one0 = (v8f)((v8i)splat(1.0f) & fin0);
                if (cw) {
                    v8f cw0 = len == VL ? loadu(cw + i) : load_tail(cw + i, len, 0.0f);
                    dd0 *= cw0;
                    one0 *= cw0;
                }
                f0 += dd0;
                c0 += one0;
            }
        }
        S += __builtin_convertvector(s0, v8d);
        E += __builtin_convertvector(e0, v8d);
        Fs += __builtin_convertvector(f0, v8d);
        Cs += __builtin_convertvector(c0, v8d);
    }
    /* the max entry itself: d = 0, contributes 0 to the entropy and smoothing distance sums */
    const float s = dsum(S);
    const float l1 = log1pf(s);
    const float lse = a * it + l1;
    *lse_out = lse;
    if (ent_out) *ent_out = l1 + dsum(E) / (1.0f + s);
    float wk = cw ? cw[k] : 1.0f;
    float fsum = dsum(Fs);
    float wsum = dsum(Cs) + (smooth ? wk : 0.0f); /* sum of w_c over finite classes */
    float csum = 0.0f;                                 /* number of finite classes */
    if (smooth) {
        if (cw) {
            int64_t cnt = 0;
            for (int64_t j = 0; j < V; j++) cnt += (tfs(x[j], cap, transform) > -INFINITY);
            csum = (float)cnt;
        } else {
            csum = wsum;
        }
    }
    if (ignored) {
        *loss = 0.0f;
        if (want_grad) memset(x, 0, (size_t)V * sizeof(float));
        return;
    }
    const float wt = cw && local ? cw[tl] : 1.0f;
    const float es = smooth ? P->eps / csum : 0.0f;
    float l = 0.0f;
    if (local) l += (1.0f - P->eps) * wt * ((a - zt) * it + l1);
    if (smooth) l += es * (fsum + wsum * l1);
    l += P->zloss * lse * lse;
    *loss = l;
    if (!want_grad) return;
    if (gs == 0.0f) {
        memset(x, 0, (size_t)V * sizeof(float));
        return;
    }
    /* A = sum_c alpha_c + 2 zloss lse; g = gs * (A p - alpha) * dz/dx */
    float A = (local ? (1.0f - P->eps) * wt : 0.0f) + es * wsum + 2.0f * P->zloss * lse;
    const float inv1s = 1.0f / (1.0f + s);
    const v8f vA = splat(gs * A * inv1s), ves = splat(gs * es);
    if (keep_w) {
        for (int64_t j = 0; j < nv; j += VL) storeu(x + j, vA * loadu(x + j));
        for (int64_t j = nv; j < V; j++) x[j] = vA[0] * x[j];
    } else {
        for (int64_t j = 0; j < V; j += VL) {
            int64_t len = V - j < VL ? V - j : VL;
            v8f z, dz = vit;
            if (transform) {
                /* the same z as ldz, and e for dz/dx = sech^2(x / c) / T = 4 e / (1 + e)^2 / T */
                v8f e;
                z = splat(cap) * vtanh_e((len == VL ? loadu(x + j) : load_tail(x + j, len, 0.0f)) /
                                         splat(cap), &e);
                for (int64_t q = len; q < VL; q++) z[q] = -INFINITY;
                const v8f ope = splat(1.0f) + e;
                dz = vit * (splat(4.0f) * e / (ope * ope));
            } else {
                z = ldz(x + j, len, cap, transform);
            }
            v8f w = vexp_nonan((z - va) * vit);
            v8f g = vA * w;
            if (smooth) {
                v8i fin = (v8i)(z > splat(-INFINITY));
                v8f sm = cw ? ves * (len == VL ? loadu(cw + j) : load_tail(cw + j, len, 0.0f)) : ves;
                g -= (v8f)((v8i)sm & fin);
            }
            if (transform || it != 1.0f) {
                /* z = -inf cannot occur after a softcap; without one, g is already exactly 0 there */
                g = (v8f)((v8i)(g * dz) & (v8i)(z > splat(-INFINITY)));
            }
            if (len == VL) storeu(x + j, g);
            else for (int64_t q = 0; q < len; q++) x[j + q] = g[q];
        }
    }
    if (local) {
        const float dz = cap > 0.0f ? it * dcaps(xt, cap) : it;
        x[tl] -= gs * (1.0f - P->eps) * wt * dz;
    }
}

/* The common case (no class weights, smoothing, softcap or temperature) runs one_row with
 * those options and `grad`/`stats` as literal constants, so that each of the four loops below
 * compiles to its own copy without the unused sums (the general copy accumulates the entropy
 * and smoothing sums whether asked for or not; with the prefetch below, read-only rows of
 * 8192 x 32000 went from 0.325 to 0.247 s in benchmarks/ab_ce_kernel.py).
 * The constants must be literals inside the loop: OpenMP outlines the loop body before
 * inlining, so a constant passed in as a function argument would reach it as a variable. */
#define PLAIN_ROWS(GRAD, STATS)                                                                \
    do {                                                                                       \
        _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                     \
        for (int64_t r = 0; r < n; r++) {                                                      \
            const ce_params Q = {V, ld, ignore_index, 1.0f, 0.0f, 0.0f, zloss, class_offset};  \
            one_row(x + r * ld, &Q, target[r], NULL, (GRAD) ? gs[r] : 0.0f, (GRAD), loss + r, \
                    lse + r, (STATS) ? ent + r : NULL, (STATS) ? amax + r : NULL);             \
        }                                                                                      \
    } while (0)

/* Rows [0, n). Outputs: loss[n], lse[n]; ent/amax may be NULL; gs (per-row gradient scale) NULL
 * means "no gradient": the buffer is then left untouched. */
void logitlab_ce_rows(float *x, int64_t n, const int64_t *target, const float *cw,
                      const float *gs, float *loss, float *lse, float *ent, int64_t *amax,
                      int64_t V, int64_t ld, int64_t ignore_index, float inv_temp, float softcap,
                      float eps, float zloss, int64_t class_offset, int nthreads) {
    if (!cw && eps <= 0.0f && softcap <= 0.0f && inv_temp == 1.0f && (!ent) == (!amax)) {
        if (gs && ent) PLAIN_ROWS(1, 1);
        else if (gs) PLAIN_ROWS(1, 0);
        else if (ent) PLAIN_ROWS(0, 1);
        else PLAIN_ROWS(0, 0);
        return;
    }
    ce_params P = {V, ld, ignore_index, inv_temp, softcap, eps, zloss, class_offset};
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < n; r++) {
        one_row(x + r * ld, &P, target[r], cw, gs ? gs[r] : 0.0f, gs != NULL, loss + r, lse + r,
                ent ? ent + r : NULL, amax ? amax + r : NULL);
    }
}

/* Gradient only (dst may be src), from the lse saved by a read-only forward (no smoothing, no softcap):
 * g_i = gs w_t (exp(z_i - lse) - [i = t]) / T with z = x / T. One pass over each row. */
void logitlab_ce_grad_rows(float *dst, const float *src, int64_t n, const int64_t *target,
                           const float *cw, const float *gs, const float *lse, int64_t V,
                           int64_t ld_dst, int64_t ld_src, int64_t ignore_index, float inv_temp,
                           int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < n; r++) {
        float *row = dst + r * ld_dst;
        const float *in = src + r * ld_src;
        const int64_t t = target[r];
        const float l = lse[r];
        const float wt = (t != ignore_index && cw) ? cw[t] : 1.0f;
        const float scale = gs[r] * wt * inv_temp;
        if (t == ignore_index || scale == 0.0f || l == -INFINITY) {
            memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        if (l != l || l == INFINITY) {
            /* a NaN or +inf logit (lse NaN / +inf): NaN gradient, as one_row gives it */
            for (int64_t j = 0; j < V; j++) row[j] = NAN;
            continue;
        }
        const v8f vs = splat(scale), vl = splat(l), vit = splat(inv_temp);
        for (int64_t j = 0; j < V; j += VL) {
            int64_t len = V - j < VL ? V - j : VL;
            v8f z = (len == VL ? loadu(in + j) : load_tail(in + j, len, -INFINITY)) * vit;
            /* z - lse <= 0 up to rounding; -inf logits give exactly 0; no NaN is left here */
            v8f g = vs * vexp_nonan(z - vl);
            if (len == VL) storeu(row + j, g);
            else for (int64_t q = 0; q < len; q++) row[j + q] = g[q];
        }
        row[t] -= scale;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Class-major chunks: x holds V rows (classes) of ld floats, column j is token j. MKL computes
 * z^T = W h^T faster than z = h W^T for short chunks of a large vocabulary (512 tokens, d = 512,
 * V = 128256: 11% on this 2-core VM), and this layout lets two threads own contiguous class
 * ranges. These three calls are one_row for that layout, without softcap, temperature or
 * smoothing:
 *
 * ce_cols_part (one per thread, rows [v0, v1)) walks its classes in blocks of cb rows
 *   (cb x m floats <= 256 KiB, resident in L2): the block maximum of every column, then
 *   w = exp(z - R) stored over the block, R the running maximum of the column: an online
 *   softmax whose double sums are rescaled by exp(R_old - R_new) (in double) when R moves up.
 *   As in one_row the first maximal entry is kept out of s (its 1 would absorb the small
 *   terms): it is -inf during the exponential pass and its w is then exactly 1. R is kept per
 *   block for the gradient.
 * ce_cols_merge combines the threads' partial sums in class order (so the first maximum wins
 *   ties, as in one_row), and writes loss, lse, entropy, argmax and the per-column factors.
 * ce_cols_grad (one per thread) writes g = gs A w exp(R_b - a) / (1 + s) block by block and
 *   subtracts gs at the target: p = exp(z - a) / (1 + s) with one more rounding than one_row
 *   for blocks visited before the column's final maximum.
 * Two passes over the chunk in memory (a column does not fit in cache) against one_row's three
 * in-cache passes over each row.
 */
static inline v8f ld8(const float *p, int64_t len) {
    return len == VL ? loadu(p) : load_tail(p, len, -INFINITY);
}
static inline void st8(float *p, v8f v, int64_t len) {
    if (len == VL) storeu(p, v);
    else for (int64_t q = 0; q < len; q++) p[q] = v[q];
}
static inline v8i loadi(const int32_t *p) {
    v8i v;
    memcpy(&v, p, sizeof(v));
    return v;
}
static inline void storei(int32_t *p, v8i v) { memcpy(p, &v, sizeof(v)); }

/* Moves a column's partial state (R, S, E) to a larger reference r: the old first maximum, which
 * S leaves out, becomes an ordinary entry exp(R - r). R = -inf: no entry above -inf yet. */
static inline void rebase(float *R, double *S, double *E, float r) {
    if (*R == -INFINITY) {
        *S = 0.0, *E = 0.0, *R = r;
        return;
    }
    const double f = exp((double)*R - (double)r);
    *E = f * (*E + ((double)r - (double)*R) * (*S + 1.0));
    *S = f * (*S + 1.0);
    *R = r;
}

/* Partial state of columns [0, mv) over classes [v0, v1) into Rc, S, E, K, nan (mv entries each,
 * mv = m rounded up to 8) and the running maximum after each block into Rb. zt[j] receives the
 * target logit of column j when the target lies in [v0, v1) (left alone otherwise).
 * Returns -1 when scratch memory cannot be allocated. */
int logitlab_ce_cols_part(float *x, int64_t m, int64_t ld, int64_t v0, int64_t v1, int64_t cb,
                          const int64_t *target, float *Rb, float *Rc, double *S, double *E,
                          int32_t *K, int32_t *nan, float *zt, int want_grad, int want_ent) {
    const int64_t mv = (m + VL - 1) / VL * VL;
    float *fl = malloc(sizeof(float) * (size_t)mv * 5);
    if (!fl) return -1;
    float *mb = fl, *sf = mb + mv, *ef = sf + mv, *zk = ef + mv, *rq = zk + mv;
    for (int64_t j = 0; j < mv; j++) Rc[j] = -INFINITY, S[j] = 0.0, E[j] = 0.0, K[j] = 0, nan[j] = 0;
    for (int64_t j = 0; j < m; j++) {
        if (target[j] >= v0 && target[j] < v1) zt[j] = x[target[j] * ld + j];
    }
    for (int64_t b0 = v0, b = 0; b0 < v1; b0 += cb, b++) {
        const int64_t b1 = b0 + cb < v1 ? b0 + cb : v1;
        for (int64_t j = 0; j < mv; j += VL) storeu(mb + j, splat(-INFINITY));
        /* block maximum, NaN-sticky; its row is looked up below only where the running maximum
         * moves (every column in the first block, then rarely), not tracked entry by entry */
        for (int64_t v = b0; v < b1; v++) {
            const float *row = x + v * ld;
            for (int64_t j = 0; j < m; j += VL) {
                const int64_t len = m - j < VL ? m - j : VL;
                v8f z = ld8(row + j, len), mx = loadu(mb + j);
                v8i gt = (v8i)(z > mx) | (v8i)(z != z);
                storeu(mb + j, (v8f)(((v8i)z & gt) | ((v8i)mx & ~gt)));
            }
        }
        for (int64_t j = 0; j < m; j++) {
            zk[j] = NAN;
            if (mb[j] != mb[j]) {
                nan[j] = 1;
            } else if (mb[j] > Rc[j]) {
                int64_t k = b0;
                while (x[k * ld + j] != mb[j]) k++;
                rebase(Rc + j, S + j, E + j, mb[j]);
                K[j] = (int32_t)k;
                float *p = x + k * ld + j;
                zk[j] = *p;
                *p = -INFINITY;
            }
        }
        memcpy(Rb + b * mv, Rc, sizeof(float) * (size_t)mv);
        /* R = -inf (a column all -inf so far) is taken as -FLT_MAX: w = exp(-inf) = 0 */
        for (int64_t j = 0; j < mv; j++) rq[j] = Rc[j] < -FLT_MAX ? -FLT_MAX : Rc[j];
        /* tiles of 32 columns: the references and the sums stay in registers while the tile
         * walks down the block (in L2 since the maximum pass; the same tiling of the maximum
         * pass, which reads the block from memory, was 14% slower than its row order) */
        int64_t j0 = 0;
        for (; j0 + 4 * VL <= m; j0 += 4 * VL) {
            v8f r[4], sa[4], ea[4];
            for (int q = 0; q < 4; q++) r[q] = loadu(rq + j0 + q * VL), sa[q] = ea[q] = splat(0.0f);
            for (int64_t v = b0; v < b1; v++) {
                float *row = x + v * ld + j0;
                for (int q = 0; q < 4; q++) {
                    v8f z = loadu(row + q * VL);
                    v8f w = vexp_nonan(z - r[q]);
                    if (want_grad) storeu(row + q * VL, w);
                    sa[q] += w;
                    if (want_ent) ea[q] += (v8f)((v8i)(w * (r[q] - z)) & (v8i)(z > splat(-INFINITY)));
                }
            }
            for (int q = 0; q < 4; q++) storeu(sf + j0 + q * VL, sa[q]), storeu(ef + j0 + q * VL, ea[q]);
        }
        for (; j0 < m; j0 += VL) {
            const int64_t len = m - j0 < VL ? m - j0 : VL;
            v8f r = loadu(rq + j0), sa = splat(0.0f), ea = splat(0.0f);
            for (int64_t v = b0; v < b1; v++) {
                float *row = x + v * ld + j0;
                v8f z = ld8(row, len);
                v8f w = vexp_nonan(z - r);
                if (want_grad) st8(row, w, len);
                sa += w;
                if (want_ent) ea += (v8f)((v8i)(w * (r - z)) & (v8i)(z > splat(-INFINITY)));
            }
            storeu(sf + j0, sa), storeu(ef + j0, ea);
        }
        for (int64_t j = 0; j < m; j++) {
            S[j] += sf[j];
            E[j] += ef[j];
            if (zk[j] == zk[j]) x[(int64_t)K[j] * ld + j] = want_grad ? 1.0f : zk[j];
        }
    }
    free(fl);
    return 0;
}

/* Combines np partial states (row p of each np x mv array, in class order) into the outputs and,
 * for ce_cols_grad, a (final maximum), fac = gs A / (1 + s) (0 for ignored or special columns)
 * and fix: NaN for a column whose gradient is NaN, 0 for one that is all zero, else 1. */
void logitlab_ce_cols_merge(int64_t m, int64_t np, float *Rc, double *S, double *E,
                            const int32_t *K, const int32_t *nan, const float *zt,
                            const int64_t *target, const float *gs, float *loss, float *lse,
                            float *ent, int64_t *amax, int64_t ignore_index, float zloss,
                            float *a_out, float *fac, float *fix) {
    const int64_t mv = (m + VL - 1) / VL * VL;
    for (int64_t j = 0; j < m; j++) {
        int64_t best = 0, has_nan = 0;
        for (int64_t p = 0; p < np; p++) {
            if (Rc[p * mv + j] > Rc[best * mv + j]) best = p;
            has_nan |= nan[p * mv + j];
        }
        float a = Rc[best * mv + j];
        double s = 0.0, e = 0.0;
        for (int64_t p = 0; p < np; p++) {
            const int64_t q = p * mv + j;
            if (p != best) rebase(Rc + q, S + q, E + q, a);
            s += S[q];
            e += E[q];
        }
        const int ignored = target[j] == ignore_index;
        if (amax) amax[j] = K[best * mv + j];
        a_out[j] = a;
        fac[j] = 0.0f;
        fix[j] = 1.0f;
        if (has_nan || a == INFINITY || a == -INFINITY) {
            /* NaN propagates; an all -inf column has lse = -inf, target probability 0 */
            lse[j] = has_nan ? NAN : a;
            if (ent) ent[j] = has_nan ? NAN : 0.0f;
            loss[j] = ignored ? 0.0f : (has_nan || a == INFINITY ? NAN : INFINITY);
            fix[j] = (has_nan || a == INFINITY) && !ignored ? NAN : 0.0f;
            continue;
        }
        const float sf = (float)s, l1 = log1pf(sf), L = a + l1;
        lse[j] = L;
        if (ent) ent[j] = l1 + (float)e / (1.0f + sf);
        if (ignored) {
            loss[j] = 0.0f;
            continue;
        }
        float zt_j = 0.0f;
        for (int64_t p = 0; p < np; p++) zt_j += zt[p * mv + j];
        loss[j] = ((a - zt_j) + l1) + zloss * L * L;
        if (gs) fac[j] = gs[j] * (1.0f + 2.0f * zloss * L) / (1.0f + sf);
    }
    for (int64_t j = m; j < mv; j++) a_out[j] = 0.0f, fac[j] = 0.0f, fix[j] = 1.0f;
}

/* Gradient over classes [v0, v1) from ce_cols_part's w and Rb (this range's blocks) and
 * ce_cols_merge's a, fac and fix. */
int logitlab_ce_cols_grad(float *x, int64_t m, int64_t ld, int64_t v0, int64_t v1, int64_t cb,
                          const float *Rb, const float *a, const float *fac, const float *fix,
                          const int64_t *target, const float *gs, int64_t ignore_index) {
    const int64_t mv = (m + VL - 1) / VL * VL;
    float *fb = malloc(sizeof(float) * (size_t)mv);
    if (!fb) return -1;
    for (int64_t b0 = v0, b = 0; b0 < v1; b0 += cb, b++) {
        const int64_t b1 = b0 + cb < v1 ? b0 + cb : v1;
        for (int64_t j = 0; j < mv; j += VL)
            storeu(fb + j, loadu(fac + j) * vexp_nonan(loadu(Rb + b * mv + j) - loadu(a + j)));
        for (int64_t v = b0; v < b1; v++) {
            float *row = x + v * ld;
            for (int64_t j = 0; j < m; j += VL) {
                const int64_t len = m - j < VL ? m - j : VL;
                st8(row + j, ld8(row + j, len) * loadu(fb + j), len);
            }
        }
    }
    for (int64_t j = 0; j < m; j++) {
        const int64_t t = target[j];
        if (fix[j] != 1.0f) {
            for (int64_t v = v0; v < v1; v++) x[v * ld + j] = fix[j];
        } else if (t != ignore_index && t >= v0 && t < v1) {
            x[t * ld + j] -= gs[j];
        }
    }
    free(fb);
    return 0;
}
