/* Fused per-row cross-entropy kernel for logitlab.torch (float32, CPU); its class-major
 * counterpart (logitlab_ce_cols_*) is in ce_cols.c.
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
 * Accumulations use 8 float32 lanes over blocks of RB entries whose sums are added in double in a
 * fixed order, so the result is bitwise deterministic and independent of how the caller splits
 * the rows over threads (one native thread per call).
 */
#include "logitlab.h"

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

/* Row sums are taken in float32 lanes over blocks of RB entries and the block sums added in
 * double: the error then stays at a few ulps for any V (a float32 lane running over all of a
 * 200k-class row drifted to ~2e-5 relative). */
#define RB 1024

typedef struct {
    int64_t V;             /* classes per row */
    int64_t ld;            /* row stride (elements) */
    int64_t ignore_index;
    float temp;            /* T */
    float inv_temp;        /* 1 / T */
    float softcap;         /* c > 0, or 0 for none */
    float eps;             /* label smoothing */
    float zloss;           /* coefficient of lse^2 */
    int64_t class_offset;  /* global index of column 0 (vocab-parallel shards) */
} ce_params;

/* The row sums of pass B (in double: the blocks' float32 lane sums added in a fixed order). */
typedef struct {
    v8d S; /* sum_{i != k} exp(-d_i) */
    v8d E; /* sum_i exp(-d_i) d_i (entropy) */
    v8d F; /* sum_i w_i d_i over finite z (smoothing) */
    v8d C; /* sum_i w_i over finite z (smoothing) */
} row_sums;

/* Pass B of one_row. `form` is a literal at every call, so each form compiles to a loop of its
 * own (GCC's unswitching gives up on a body this size and tests it per vector):
 * 0 cheap exp(-d); 1 TwoSum-compensated (T = 1); 2 as 1 with the subnormal-range exp; 3 d
 * formed in double (T != 1) with its remainder put back and the subnormal-range exp. */
static inline __attribute__((always_inline)) row_sums pass_b(
    float *x, const ce_params *P, const float *cw, float a, int64_t k, int keep_w,
    const int form) {
    const int64_t V = P->V;
    const float it = P->inv_temp, cap = P->softcap;
    const double td = P->temp;
    const int transform = cap > 0.0f;
    const v8f va = splat(a), vit = splat(it);
    const int smooth = P->eps > 0.0f;
    const int64_t kb = k / VL * VL;
    v8i klane = splati(0);
    klane[k - kb] = -1;
    row_sums R = {{0}, {0}, {0}, {0}};
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
            v8f d0, w0;
            if (form == 1 || form == 2) {
                /* d = a - z rounds; TwoSum keeps its error r: exp(-d) = exp(-fl(d)) (1 - r) */
                d0 = va - z0;
                const v8f bp = d0 - va;
                v8f r = (va - (d0 - bp)) + (-z0 - bp);
                r = (v8f)((v8i)r & (v8i)(z0 > splat(-INFINITY)));
                w0 = (form == 2 ? vexp_neg_sub(-d0) : vexp_nonan(-d0)) * (splat(1.0f) - r);
            } else if (form == 3) {
                /* d = (a - z) / T in double (a - z exact there), rounded to float; the
                 * remainder r = d - fl(d) goes back in the same way */
                const v8d dd = (__builtin_convertvector(va, v8d) -
                                __builtin_convertvector(z0, v8d)) / td;
                d0 = __builtin_convertvector(dd, v8f);
                v8f r = __builtin_convertvector(dd - __builtin_convertvector(d0, v8d), v8f);
                r = (v8f)((v8i)r & (v8i)(z0 > splat(-INFINITY)));
                w0 = vexp_neg_sub(-d0) * (splat(1.0f) - r);
            } else {
                d0 = (va - z0) * vit;
                w0 = vexp_nonan(-d0);
            }
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
        R.S += __builtin_convertvector(s0, v8d);
        R.E += __builtin_convertvector(e0, v8d);
        R.F += __builtin_convertvector(f0, v8d);
        R.C += __builtin_convertvector(c0, v8d);
    }
    return R;
}

static inline __attribute__((always_inline)) void one_row(
    float *x, const ce_params *P, int64_t t, const float *cw, float gs, int want_grad,
    float *loss, float *lse_out, float *ent_out, int64_t *amax_out) {
    const int64_t V = P->V;
    const int64_t nv = V / VL * VL;
    const float it = P->inv_temp, cap = P->softcap;
    const double td = P->temp;
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
    int has_nan = 0, ja = -1;
    for (int j = 0; j < VL; j++) {
        if (vmax[j] != vmax[j]) has_nan = 1;
        else if (vmax[j] > a) a = vmax[j], ja = j;
    }
    /* A lower bound of the row's second largest value: the largest maximum of the other lanes
     * (the runner-up may share the maximum's lane). The gap a - second it gives is never
     * smaller than the true one, so every confident row below is found; a row it wrongly takes
     * for confident only pays for the compensated form, which is exact on every row. Tracking
     * the true runner-up cost pass A three more operations per vector, on every row. */
    float second = -INFINITY;
    for (int j = 0; j < VL; j++) {
        if (j != ja && vmax[j] > second) second = vmax[j];
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
    /* A confident row (every other class more than 8 nats down) has s < V e^-8, a sum of terms
     * exp(-d) whose relative error is d times that of d = a - z: 15 ulps on the loss 30 nats
     * down. Its pass B keeps the rounding error e of a - z (TwoSum) and puts it back,
     * exp(-(d + e)) = exp(-d) (1 - e); past 50 nats (s < V e^-50) it also takes the exp that
     * keeps the subnormal range, whose flush below e^-87 read the loss of [88, 0 x 8] as 0
     * instead of 4.8e-38. On other rows the largest terms are within 8 nats of the maximum (at
     * most 4 ulps): they keep the cheap form. */
    const int near = (a - second) * it > 8.0f, sub = (a - second) * it > 50.0f;
    const int keep_w =
        want_grad && !ignored && gs != 0.0f && !transform && it == 1.0f && P->eps <= 0.0f;
    /* pass B. The first maximal entry is left out of s (it contributes exactly 1, which float32
     * lanes would otherwise absorb the small terms into) by zeroing its lane. */
    const int smooth = P->eps > 0.0f;
    row_sums R;
    if (!near) R = pass_b(x, P, cw, a, k, keep_w, 0);
    else if (it != 1.0f) R = pass_b(x, P, cw, a, k, keep_w, 3);
    else if (sub) R = pass_b(x, P, cw, a, k, keep_w, 2);
    else R = pass_b(x, P, cw, a, k, keep_w, 1);
    const v8d S = R.S, E = R.E, Fs = R.F, Cs = R.C;
    const v8f va = splat(a), vit = splat(it);
    /* the max entry itself: d = 0, contributes 0 to the entropy and smoothing distance sums */
    const float s = dsum(S);
    const float l1 = log1pf(s);
    const float lse = (it == 1.0f ? a : (float)((double)a / td)) + l1;
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
    if (local) l += (1.0f - P->eps) * wt * ((float)(((double)a - (double)zt) / td) + l1);
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
        if (tl == k) {
            /* The target is the row maximum: its entry A p_k - alpha_k holds (1 - eps) w_t
             * (p_k - 1), and p_k - 1 = -s / (1 + s) exactly; subtracting alpha_k from the stored
             * A p_k would cancel to 0 on a confident row ([0, -40]: -4.2e-18, not 0). */
            float gk = (1.0f - P->eps) * wt * (-s * inv1s) + (A - (1.0f - P->eps) * wt) * inv1s;
            if (smooth) gk -= es * (cw ? cw[k] : 1.0f);
            x[tl] = gs * gk * dz;
        } else {
            x[tl] -= gs * (1.0f - P->eps) * wt * dz;
        }
    }
}

/* The common case (no class weights, smoothing, softcap or temperature) runs one_row with
 * those options and `grad`/`stats` as literal constants, so that each of the four loops below
 * compiles to its own copy without the unused sums (the general copy accumulates the entropy
 * and smoothing sums whether asked for or not; with the prefetch below, read-only rows of
 * 8192 x 32000 went from 0.325 to 0.247 s in benchmarks/ab_ce_kernel.py). */
#define PLAIN_ROWS(GRAD, STATS)                                                                \
    do {                                                                                       \
        for (int64_t r = 0; r < n; r++) {                                                      \
            const ce_params Q = {V, ld, ignore_index, 1.0f, 1.0f, 0.0f, 0.0f, zloss,           \
                                 class_offset};                                                 \
            one_row(x + r * ld, &Q, target[r], NULL, (GRAD) ? gs[r] : 0.0f, (GRAD), loss + r, \
                    lse + r, (STATS) ? ent + r : NULL, (STATS) ? amax + r : NULL);             \
        }                                                                                      \
    } while (0)

/* Rows [0, n). Outputs: loss[n], lse[n]; ent/amax may be NULL; gs (per-row gradient scale) NULL
 * means "no gradient": the buffer is then left untouched. */
void logitlab_ce_rows(float *x, int64_t n, const int64_t *target, const float *cw,
                      const float *gs, float *loss, float *lse, float *ent, int64_t *amax,
                      int64_t V, int64_t ld, int64_t ignore_index, float temp, float softcap,
                      float eps, float zloss, int64_t class_offset) {
    if (!cw && eps <= 0.0f && softcap <= 0.0f && temp == 1.0f && (!ent) == (!amax)) {
        if (gs && ent) PLAIN_ROWS(1, 1);
        else if (gs) PLAIN_ROWS(1, 0);
        else if (ent) PLAIN_ROWS(0, 1);
        else PLAIN_ROWS(0, 0);
        return;
    }
    ce_params P = {V, ld, ignore_index, temp, 1.0f / temp, softcap, eps, zloss, class_offset};
    for (int64_t r = 0; r < n; r++) {
        one_row(x + r * ld, &P, target[r], cw, gs ? gs[r] : 0.0f, gs != NULL, loss + r, lse + r,
                ent ? ent + r : NULL, amax ? amax + r : NULL);
    }
}

/* Gradient only (dst may be src), from the lse saved by a read-only forward (no smoothing, no softcap):
 * g_i = gs w_t (exp(z_i - lse) - [i = t]) / T with z = x / T. One pass over each row. */
void logitlab_ce_grad_rows(float *dst, const float *src, int64_t n, const int64_t *target,
                           const float *cw, const float *gs, const float *lse, int64_t V,
                           int64_t ld_dst, int64_t ld_src, int64_t ignore_index,
                           float inv_temp) {
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
        if (row[t] / scale > 0.5f) {
            /* p_t > 1/2: the target is the row maximum and p_t - 1 would cancel (to 0 on a
             * confident row). 1 - p_t is the sum of the other probabilities, all positive: sum
             * the entries just written (in cache, no exp), in float32 blocks added in double. */
            row[t] = 0.0f;
            double acc = 0.0;
            for (int64_t b = 0; b < V; b += RB) {
                const int64_t e = b + RB < V ? b + RB : V;
                v8f blk = splat(0.0f);
                int64_t j = b;
                for (; j + VL <= e; j += VL) blk += loadu(row + j);
                acc += hsumd(blk);
                for (; j < e; j++) acc += (double)row[j];
            }
            row[t] = -(float)acc;
        } else {
            row[t] -= scale;
        }
    }
}
