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
 *   Brier = (1 + sum e^2) / (1 + s)^2 - 2 p_t + 1,
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
            v8f z = {p[0][i], p[1][i], p[2][i], p[3][i], p[4][i], p[5][i], p[6][i], p[7][i]};
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
        const v8f lo = splat(-3.40282347e38f);
        for (int64_t i = 0; i < C; i++) {
            v8f z = {p[0][i], p[1][i], p[2][i], p[3][i], p[4][i], p[5][i], p[6][i], p[7][i]};
            v8f d = z - m;
            v8i cl = (v8i)(d < lo);
            d = (v8f)(((v8i)lo & cl) | ((v8i)d & ~cl));
            v8f e = vexp_neg(d);
            e = (v8f)((v8i)e & ~(v8i)(kk == splati((int32_t)i)));
            v8d ed = __builtin_convertvector(e, v8d);
            s += ed;
            sed += ed * __builtin_convertvector(d, v8d);
            see += ed * ed;
            higher -= (v8i)(z > zt);
        }
        v8f dt = zt - m;
        v8i clt = (v8i)(dt < lo);
        v8f et = vexp_neg((v8f)(((v8i)lo & clt) | ((v8i)dt & ~clt)));
        for (int j = 0; j < cnt; j++) {
            const double l1p = log1p(s[j]);
            const double inv = 1.0 / (1.0 + s[j]);
            const int correct = kk[j] == t[j];
            const double pt = (correct ? 1.0 : (double)et[j]) * inv;
            a_nll += l1p - (double)dt[j];
            a_ent += l1p - sed[j] * inv;
            a_brier += (1.0 + see[j]) * inv * inv - 2.0 * pt + 1.0;
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
