/* Fused float32 row kernels for the exact core (logitlab._fast): log-softmax and log-sum-exp.
 *
 * Reuses the vector helpers of the fused cross-entropy kernel (vexp_neg: exp on (-inf, 0],
 * < 2 ulp). Per row, three passes that stay in cache:
 *   A  a = max z and the first index k of it
 *   B  s = sum_{i != k} exp(-(d_i + e_i)) in double, d_i = fl(a - z_i) and e_i its exact
 *      rounding error (Knuth's TwoSum), used as exp(-d_i) (1 - e_i): exp amplifies an error in
 *      d by |d|, which would cost near-deterministic rows 7-17 ulps
 *   C  out_i = fl(z_i - a) - log1p(s)   (two roundings: the dominant entry keeps its tiny value)
 * Rows whose maximum is not finite (+-inf, NaN) are flagged for the caller's general path.
 */
#include "torch/_ce_rows.c"

typedef double v8d __attribute__((vector_size(64)));

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

static int lsm_row(const float *x, float *out, int64_t V, int mode) {
    const int64_t nv = V / VL * VL;
    v8f vmax = splat(-INFINITY);
    int nan = 0;
    for (int64_t i = 0; i < nv; i += VL) {
        v8f z = loadu(x + i);
        v8i gt = (v8i)(z > vmax);
        vmax = (v8f)(((v8i)z & gt) | ((v8i)vmax & ~gt));
        v8i isn = (v8i)(z != z);
        for (int j = 0; j < VL; j++) nan |= isn[j];
    }
    float a = -INFINITY;
    for (int j = 0; j < VL; j++) if (vmax[j] > a) a = vmax[j];
    for (int64_t i = nv; i < V; i++) {
        if (x[i] != x[i]) nan = 1;
        if (x[i] > a) a = x[i];
    }
    if (nan || a == INFINITY || a == -INFINITY) return 1;
    int64_t k = 0;
    while (x[k] != a) k++;
    const v8f va = splat(a);
    v8d acc = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i < V; i += VL) {
        int64_t len = V - i < VL ? V - i : VL;
        v8f z = len == VL ? loadu(x + i) : load_tail(x + i, len, -INFINITY);
        v8f d = va - z;
        v8f bp = d - va;
        v8f ap = d - bp;
        v8f e = (va - ap) + (-z - bp);
        v8i fin = (v8i)(z > splat(-INFINITY));
        v8f w = vexp_neg(-d) * (splat(1.0f) - (v8f)((v8i)e & fin));
        w = (v8f)((v8i)w & fin);
        if (k >= i && k < i + VL) w[k - i] = 0.0f;
        acc += __builtin_convertvector(w, v8d);
    }
    double s = 0.0;
    for (int j = 0; j < VL; j++) s += acc[j];
    const double l1 = log1p(s);
    if (mode == 1) {
        out[0] = (float)((double)a + l1);
        return 0;
    }
    const v8f vl = splat((float)l1);
    for (int64_t i = 0; i < nv; i += VL) storeu(out + i, (loadu(x + i) - va) - vl);
    for (int64_t i = nv; i < V; i++) out[i] = (x[i] - a) - (float)l1;
    return 0;
}

/* mode 0: out is (n, V) log-softmax (row stride ld_out); mode 1: out[r] = lse of row r.
 * flag[r] = 1 marks rows left to the caller (non-finite maximum). */
void logitlab_lsm_rows(const float *x, float *out, int32_t *flag, int64_t n, int64_t V,
                       int64_t ld_in, int64_t ld_out, int mode, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < n; r++) {
        flag[r] = lsm_row(x + r * ld_in, mode == 1 ? out + r : out + r * ld_out, V, mode);
    }
}

/* ------------------------------------------------------------------------------------------
 * Streaming-evaluation rows (logitlab.metrics.Evaluator), float32 input.
 *
 * Classification outputs have few classes (10, 100, 1000), so the vector lanes run across 8 rows
 * rather than along one: a row of 10 classes would waste 6 of 16 lanes and need a horizontal
 * reduction per quantity. Per block of 8 rows, two passes over the (cache-resident) columns:
 *   1  a = max_i z_i and the first index k of it; NaN is flagged
 *   2  d_i = max(z_i - a, -FLT_MAX) (a masked class, z = -inf, has e_i = 0 and e_i d_i = 0, never
 *      0 * inf), e_i = exp(d_i) with e_k := 0, and in double: s = sum e_i, sum e_i d_i,
 *      sum e_i^2; the number of classes with z_i > z_t
 * then per row, in double (log1p of s: no "1 +" to round the tiny NLL of a confident row away):
 *   nll = log1p(s) - d_t,  conf = max p = 1 / (1 + s),  H = log1p(s) - sum e d / (1 + s),
 *   Brier = (s^2 + sum e^2) / (1 + s)^2 for t = k, else ((1 + s - e_t)^2 + 1 + sum e^2 - e_t^2)
 *   / (1 + s)^2 (non-negative terms: no cancellation for a confident row),
 * and the confidence goes into the fine histogram with the bin rule of Evaluator._add_hist.
 * conf is rounded to float32 first: the same value a float32 softmax gives, so the equal-width
 * bins agree with the batch metrics computed in the input dtype.
 * Returns -1, or the first row whose maximum is not finite or that holds a NaN (the caller
 * raises its error; nothing of the call's output is used then).
 * acc: [nll, top1, top5, brier, entropy] sums; hist: [count | sum conf | correct] x F.
 */
static inline int64_t fine_bin(double conf, int64_t F, const double *edges) {
    double c = ceil(conf * (double)F) - 1.0;
    int64_t idx = c < 0.0 ? 0 : (c > (double)(F - 1) ? F - 1 : (int64_t)c);
    if (idx > 0 && conf <= edges[idx]) idx--;
    if (idx < F - 1 && conf > edges[idx + 1]) idx++;
    return idx;
}

/* column i of the 8 rows p[0..7] */
static inline v8f gather8(const float *const *p, int64_t i) {
    return (v8f){p[0][i], p[1][i], p[2][i], p[3][i], p[4][i], p[5][i], p[6][i], p[7][i]};
}
/* max(d, -FLT_MAX): a masked class (d = -inf) gets e = 0 and e d = -0, never 0 * inf */
static inline v8f clamp_finite(v8f d) {
    const v8f lo = splat(-3.40282347e38f);
    const v8i cl = (v8i)(d < lo);
    return (v8f)(((v8i)lo & cl) | ((v8i)d & ~cl));
}

int64_t logitlab_eval_rows(const float *x, const int64_t *y, int64_t n, int64_t C, int64_t ld,
                           int64_t F, const double *edges, double *acc, double *hist) {
    double a_nll = 0, a_top1 = 0, a_top5 = 0, a_brier = 0, a_ent = 0;
    for (int64_t r0 = 0; r0 < n; r0 += VL) {
        const int64_t cnt = n - r0 < VL ? n - r0 : VL;
        const float *p[VL];
        int64_t t[VL];
        for (int j = 0; j < VL; j++) {
            int64_t r = r0 + (j < cnt ? j : cnt - 1); /* tail lanes repeat the last row */
            p[j] = x + r * ld;
            t[j] = y[r];
        }
        v8f m = splat(-INFINITY);
        v8i kk = splati(0), nan = splati(0);
        for (int64_t i = 0; i < C; i++) {
            const v8f z = gather8(p, i);
            v8i gt = (v8i)(z > m);
            m = (v8f)(((v8i)z & gt) | ((v8i)m & ~gt));
            kk = (splati((int32_t)i) & gt) | (kk & ~gt);
            nan |= (v8i)(z != z);
        }
        for (int j = 0; j < cnt; j++)
            if (nan[j] || m[j] == INFINITY || m[j] == -INFINITY) return r0 + j;
        v8f zt;
        for (int j = 0; j < VL; j++) zt[j] = p[j][t[j]];
        v8d s = {0}, sed = {0}, see = {0};
        v8i higher = splati(0);
        for (int64_t i = 0; i < C; i++) {
            const v8f z = gather8(p, i);
            const v8f d = clamp_finite(z - m);
            v8f e = vexp_neg_sub(d);
            e = (v8f)((v8i)e & ~(v8i)(kk == splati((int32_t)i)));
            v8d ed = __builtin_convertvector(e, v8d);
            s += ed;
            sed += ed * __builtin_convertvector(d, v8d);
            see += ed * ed;
            higher -= (v8i)(z > zt);
        }
        const v8f dt = zt - m;
        const v8f et = vexp_neg_sub(clamp_finite(dt));
        for (int j = 0; j < cnt; j++) {
            const double l1p = log1p(s[j]);
            const double inv = 1.0 / (1.0 + s[j]);
            const int correct = kk[j] == t[j];
            a_nll += l1p - (double)dt[j];
            a_ent += l1p - sed[j] * inv;
            /* sum_i (p_i - y_i)^2 as a sum of non-negative terms: 1 - 2 p_t + sum p^2 cancels
             * to 0 for a confident correct row (exact: ~s^2, 1e-25 for [0, -30, -30, -30]).
             * Correct: ((1 - p_k)^2 + sum_{i != k} p_i^2) = (s^2 + see) / (1 + s)^2; else
             * ((1 + s - e_t)^2 + 1 + see - e_t^2) / (1 + s)^2 (see holds e_t^2, not e_k^2). */
            const double et_d = correct ? 0.0 : (double)et[j];
            const double gap = correct ? s[j] : 1.0 + s[j] - et_d;
            const double rest = correct ? see[j] : 1.0 + see[j] - et_d * et_d;
            a_brier += (gap * gap + rest) * inv * inv;
            a_top1 += higher[j] < 1;
            a_top5 += higher[j] < 5;
            const double conf = (double)(float)inv;
            const int64_t b = fine_bin(conf, F, edges);
            hist[b] += 1.0;
            hist[F + b] += conf;
            hist[2 * F + b] += correct;
        }
    }
    acc[0] += a_nll;
    acc[1] += a_top1;
    acc[2] += a_top5;
    acc[3] += a_brier;
    acc[4] += a_ent;
    return -1;
}

/* ------------------------------------------------------------------------------------------
 * Diagnostics rows (logitlab.diagnostics.LogitStats), float16 or float32 input.
 *
 * Everything LogitStats needs from the entries of a row, in three passes while the row is in L2
 * (the float16 row is widened once, exactly, into a float32 scratch row):
 *   A  widen; a = max z, its first index k, b = min z, min |z|, NaN seen. A row with a NaN or a
 *      non-finite max/min is flagged (k = -1) and left to the caller, which counts it exactly.
 *   B  d_i = z_i - a <= 0, w_i = exp(d_i) with w_k := 0 (the exact decomposition of
 *      logitlab.special: s carries no "1 +"), the logit histogram (top 16 bits of the float32
 *      pattern) and the sums
 *        s = sum w,  -sum d w,  sum d,  sum d^2,  sum w^2,  -sum d w^2 / (1/2),
 *        sum sqrt w,  -sum d sqrt(w) / 2                (temperatures 1/2 and 2 from the same w)
 *   C  p_i = w_i * p_max in float32 (p_k = p_max): the histogram of their float32 exponents (the
 *      gradient p - onehot before the target entry is moved), sum |z_i| w_i, p at the target.
 * Sums run in float32 over blocks of 512 entries and are added in double: the error of a row sum
 * is that of ~64 float32 additions plus ~V/512 double ones, below NumPy's pairwise float32 sum.
 * out (13 per row): a, b, s, -sum dw, sum d, sum d^2, st(1/2), sdw(1/2), st(2), sdw(2),
 * sum |z| w, min |z|, p stored at the target.
 */
#if defined(__F16C__) || defined(__AVX__)
#include <immintrin.h>
#endif

static inline float half_to_float(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f) u = s | 0x7f800000 | (m << 13);
    else if (e) u = s | ((e + 112) << 23) | (m << 13);
    else if (!m) u = s;
    else {
        float f = (float)m * 5.9604644775390625e-8f; /* m * 2^-24: exact */
        memcpy(&u, &f, 4);
        u |= s;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void widen_half(const uint16_t *src, float *dst, int64_t V) {
    int64_t i = 0;
#ifdef __F16C__
    for (; i + 8 <= V; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < V; i++) dst[i] = half_to_float(src[i]);
}

#define DIAG_OUT 13
#define DIAG_BLOCK 512

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
static inline double hsumd(v8f a) {
    double s = 0.0;
    for (int j = 0; j < VL; j++) s += (double)a[j];
    return s;
}

/* x: n rows (stride ld) of float16 (is_half) or float32; t: targets or NULL (use the argmax);
 * scratch: 2 V floats; h_logit: 65536 counts; h_exp: 256 counts. */
void logitlab_diag_rows(const void *x, int is_half, const int64_t *t, int64_t n, int64_t V,
                        int64_t ld, double *out, int64_t *kout, float *scratch,
                        int64_t *h_logit, int64_t *h_exp) {
    float *zr = scratch, *wr = scratch + V;
    int64_t he[VL * 256];
    memset(he, 0, sizeof(he));
    const int64_t nv = V / VL * VL;
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int64_t r = 0; r < n; r++) {
        const float *z;
        if (is_half) {
            widen_half((const uint16_t *)x + r * ld, zr, V);
            z = zr;
        } else {
            z = (const float *)x + r * ld;
        }
        double *o = out + r * DIAG_OUT;
        /* A */
        v8f vmax = splat(-INFINITY), vmn = splat(INFINITY), vma = splat(INFINITY);
        v8i vk = splati(0), nan = splati(0);
        for (int64_t i = 0; i < nv; i += VL) {
            v8f v = loadu(z + i);
            v8i gt = (v8i)(v > vmax);
            vmax = (v8f)(((v8i)v & gt) | ((v8i)vmax & ~gt));
            vk = ((lane + splati((int32_t)i)) & gt) | (vk & ~gt);
            vmn = vmin8(v, vmn);
            vma = vmin8(vabs8(v), vma);
            nan |= (v8i)(v != v);
        }
        float a = -INFINITY, b = INFINITY, ma = INFINITY;
        int64_t k = -1;
        int isnan = 0;
        for (int j = 0; j < VL; j++) {
            isnan |= nan[j];
            if (vmax[j] > a || (vmax[j] == a && vk[j] < k)) { a = vmax[j]; k = vk[j]; }
            if (vmn[j] < b) b = vmn[j];
            if (vma[j] < ma) ma = vma[j];
        }
        for (int64_t i = nv; i < V; i++) {
            float v = z[i];
            if (v != v) isnan = 1;
            if (v > a) { a = v; k = i; }
            if (v < b) b = v;
            if (fabsf(v) < ma) ma = fabsf(v);
        }
        if (isnan || !isfinite(a) || !isfinite(b)) {
            kout[r] = -1;
            continue;
        }
        kout[r] = k;
        /* B */
        const v8f va = splat(a);
        double acc[8] = {0};
        for (int64_t i0 = 0; i0 < V; i0 += DIAG_BLOCK) {
            const int64_t i1 = i0 + DIAG_BLOCK < V ? i0 + DIAG_BLOCK : V;
            v8f s = splat(0), sdw = splat(0), sd = splat(0), sd2 = splat(0);
            v8f s05 = splat(0), sdw05 = splat(0), s2 = splat(0), sdw2 = splat(0);
            for (int64_t i = i0; i < i1; i += VL) {
                const int64_t len = i1 - i < VL ? i1 - i : VL;
                v8f v = len == VL ? loadu(z + i) : load_tail(z + i, len, a);
                v8f d = v - va; /* tail lanes: d = 0, w masked below */
                const v8i idx = lane + splati((int32_t)i);
                const v8i keep = (idx < splati((int32_t)V)) & (idx != splati((int32_t)k));
                v8f w = (v8f)((v8i)vexp_neg_sub(d) & keep);
                v8f sq = w * w, rt = vsqrt8(w);
                s += w;
                sdw -= d * w;
                sd += d;
                sd2 += d * d;
                s05 += sq;
                sdw05 -= d * sq;
                s2 += rt;
                sdw2 -= d * rt;
                if (len == VL) storeu(wr + i, w);
                else for (int j = 0; j < len; j++) wr[i + j] = w[j];
            }
            acc[0] += hsumd(s); acc[1] += hsumd(sdw); acc[2] += hsumd(sd); acc[3] += hsumd(sd2);
            acc[4] += hsumd(s05); acc[5] += hsumd(sdw05); acc[6] += hsumd(s2); acc[7] += hsumd(sdw2);
        }
        for (int64_t i = 0; i < V; i++) {
            uint32_t u;
            memcpy(&u, z + i, 4);
            h_logit[u >> 16]++;
        }
        /* C */
        const double ptop = 1.0 / (1.0 + acc[0]);
        const float pf = (float)ptop;
        const v8f vp = splat(pf);
        double szd = 0.0;
        for (int64_t i0 = 0; i0 < V; i0 += DIAG_BLOCK) {
            const int64_t i1 = i0 + DIAG_BLOCK < V ? i0 + DIAG_BLOCK : V;
            v8f sz = splat(0);
            int64_t i = i0;
            for (; i + VL <= i1; i += VL) {
                v8f w = loadu(wr + i);
                v8f p = w * vp;
                v8i bits = (v8i)p;
                for (int j = 0; j < VL; j++) he[j * 256 + (((uint32_t)bits[j] >> 23) & 0xff)]++;
                sz += vabs8(loadu(z + i)) * w;
            }
            for (; i < i1; i++) {
                float p = wr[i] * pf;
                uint32_t u;
                memcpy(&u, &p, 4);
                he[(u >> 23) & 0xff]++;
                sz[0] += fabsf(z[i]) * wr[i];
            }
            szd += hsumd(sz);
        }
        /* the maximal entry holds p_max, not the w_k * p_max = 0 counted in exponent bin 0 */
        {
            uint32_t u;
            memcpy(&u, &pf, 4);
            he[0]--;
            he[(u >> 23) & 0xff]++;
        }
        const int64_t tt = t ? t[r] : k;
        o[0] = a; o[1] = b; o[2] = acc[0]; o[3] = acc[1]; o[4] = acc[2]; o[5] = acc[3];
        o[6] = acc[4]; o[7] = 2.0 * acc[5]; o[8] = acc[6]; o[9] = 0.5 * acc[7];
        o[10] = szd; o[11] = ma;
        o[12] = tt == k ? (double)pf : (double)(wr[tt] * pf);
    }
    for (int j = 0; j < VL; j++)
        for (int e = 0; e < 256; e++) h_exp[e] += he[j * 256 + e];
}
