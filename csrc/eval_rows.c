/* Streaming-evaluation rows (logitlab.metrics.Evaluator), float32 input.
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
#include "logitlab.h"

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
