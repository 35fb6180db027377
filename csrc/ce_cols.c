/* Class-major chunks: x holds V rows (classes) of ld floats, column j is token j. MKL computes
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
#include "logitlab.h"

static inline v8f ld8(const float *p, int64_t len) {
    return len == VL ? loadu(p) : load_tail(p, len, -INFINITY);
}
static inline void st8(float *p, v8f v, int64_t len) {
    if (len == VL) storeu(p, v);
    else for (int64_t q = 0; q < len; q++) p[q] = v[q];
}

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
 * for ce_cols_grad, a (final maximum), fac = gs A / (1 + s) (0 for ignored or special columns),
 * fix: NaN for a column whose gradient is NaN, 0 for one that is all zero, else 1, and tg: the
 * target entry of the gradient where the target is the column maximum, else NaN. There
 * fac w_t - gs = gs (2 zloss L - s) / (1 + s) is formed from s itself: the subtraction would
 * cancel to 0 on a confident column (-4.2e-18 for [0, -40]). */
void logitlab_ce_cols_merge(int64_t m, int64_t np, float *Rc, double *S, double *E,
                            const int32_t *K, const int32_t *nan, const float *zt,
                            const int64_t *target, const float *gs, float *loss, float *lse,
                            float *ent, int64_t *amax, int64_t ignore_index, float zloss,
                            float *a_out, float *fac, float *fix, float *tg) {
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
        tg[j] = NAN;
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
        if (gs) {
            fac[j] = gs[j] * (1.0f + 2.0f * zloss * L) / (1.0f + sf);
            if (target[j] == K[best * mv + j])
                tg[j] = gs[j] * (2.0f * zloss * L - sf) / (1.0f + sf);
        }
    }
    for (int64_t j = m; j < mv; j++) a_out[j] = 0.0f, fac[j] = 0.0f, fix[j] = 1.0f, tg[j] = NAN;
}

/* Gradient over classes [v0, v1) from ce_cols_part's w and Rb (this range's blocks) and
 * ce_cols_merge's a, fac and fix. */
int logitlab_ce_cols_grad(float *x, int64_t m, int64_t ld, int64_t v0, int64_t v1, int64_t cb,
                          const float *Rb, const float *a, const float *fac, const float *fix,
                          const float *tg, const int64_t *target, const float *gs,
                          int64_t ignore_index) {
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
            if (tg[j] == tg[j]) x[t * ld + j] = tg[j];
            else x[t * ld + j] -= gs[j];
        }
    }
    free(fb);
    return 0;
}
