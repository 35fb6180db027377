/* Fused float32 row kernels for the exact core (logitlab._fast): log-softmax and log-sum-exp.
 *
 * Uses the vector helpers of logitlab.h (vexp_neg: exp on (-inf, 0], < 2 ulp). Per row, three
 * passes that stay in cache:
 *   A  a = max z and the first index k of it
 *   B  s = sum_{i != k} exp(-(d_i + e_i)) in double, d_i = fl(a - z_i) and e_i its exact
 *      rounding error (Knuth's TwoSum), used as exp(-d_i) (1 - e_i): exp amplifies an error in
 *      d by |d|, which would cost near-deterministic rows 7-17 ulps
 *   C  out_i = fl(z_i - a) - log1p(s)   (two roundings: the dominant entry keeps its tiny value)
 * Rows whose maximum is not finite (+-inf, NaN) are flagged for the caller's general path.
 */
#include "logitlab.h"

static int lsm_row(const float *x, float *out, int64_t V, int64_t ld_in, int mode) {
    const int64_t nv = V / VL * VL;
    v8f vmax = splat(-INFINITY);
    v8i vnan = splati(0);
    for (int64_t i = 0; i < nv; i += VL) {
        v8f z = loadu(x + i);
        v8i gt = (v8i)(z > vmax);
        vmax = (v8f)(((v8i)z & gt) | ((v8i)vmax & ~gt));
        vnan |= (v8i)(z != z);
    }
    float a = -INFINITY;
    int nan = 0;
    for (int j = 0; j < VL; j++) {
        nan |= vnan[j];
        if (vmax[j] > a) a = vmax[j];
    }
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
        /* pass B is bound by the exp: fetch the next row for its pass A (as in ce_rows.c) */
        if ((i & 15) == 0) __builtin_prefetch(x + ld_in + i);
        v8f z = len == VL ? loadu(x + i) : load_tail(x + i, len, -INFINITY);
        v8f d = va - z;
        v8f bp = d - va;
        v8f ap = d - bp;
        v8f e = (va - ap) + (-z - bp);
        v8i fin = (v8i)(z > splat(-INFINITY));
        v8f w = vexp_nonan(-d) * (splat(1.0f) - (v8f)((v8i)e & fin));
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
                       int64_t ld_in, int64_t ld_out, int mode) {
    for (int64_t r = 0; r < n; r++) {
        flag[r] = lsm_row(x + r * ld_in, mode == 1 ? out + r : out + r * ld_out, V, ld_in, mode);
    }
}
