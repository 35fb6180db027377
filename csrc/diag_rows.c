/* Diagnostics rows (logitlab.diagnostics.LogitStats), float16 or float32 input.
 *
 * Everything LogitStats needs from the entries of a row, in three passes while the row is in L2
 * (the float16 row is widened once, exactly, into a float32 scratch row):
 *   A  widen; a = max z, its first index k, b = min z, min |z|, NaN seen. A row with a NaN or a
 *      non-finite max/min is flagged (k = -1) and left to the caller, which counts it exactly.
 *   B  d_i = z_i - a <= 0, w_i = exp(d_i) with w_k := 0 (the exact decomposition of
 *      logitlab.special: s carries no "1 +"), the logit histogram (top 16 bits of the float32
 *      pattern) and the sums
 *        s = sum w,  -sum d w,  sum d,  sum w^2,  -sum d w^2 / (1/2),
 *        sum sqrt w,  -sum d sqrt(w) / 2                (temperatures 1/2 and 2 from the same w)
 *   C  p_i = w_i * p_max in float32 (p_k = p_max): the histogram of their float32 exponents (the
 *      gradient p - onehot before the target entry is moved), sum |z_i| w_i, p at the target;
 *      and the centred sums of g_i = z_i - c, c = the row mean from B rounded to float:
 *        mean = c + sum g / V,  M2 = sum g^2 - (sum g)^2 / V
 *      (the corrected two-pass algorithm: no cancellation whatever the row's offset, as there
 *      was in sum d^2 - (sum d)^2 / V when the maximum is far from the mean). A row whose spread
 *      max - min exceeds 2^60, where g^2 could overflow a float32 block sum, is summed in double.
 * Sums run in float32 over blocks of 512 entries and are added in double: the error of a row sum
 * is that of ~64 float32 additions plus ~V/512 double ones, below NumPy's pairwise float32 sum.
 * out: one logitlab_diag_row per row (its fields are declared in logitlab.h).
 */
#include "logitlab.h"

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

#define DIAG_BLOCK 512

/* Mean and standard deviation of a row in double (two passes, corrected): for rows whose float32
 * squares could overflow. |z| <= FLT_MAX, so every double here is finite. */
static void moments_f64(const float *z, int64_t V, double *mean, double *std) {
    double s = 0.0;
    for (int64_t i = 0; i < V; i++) s += z[i];
    const double m = s / (double)V;
    double s1 = 0.0, s2 = 0.0;
    for (int64_t i = 0; i < V; i++) {
        const double g = (double)z[i] - m;
        s1 += g;
        s2 += g * g;
    }
    const double m2 = s2 - s1 * s1 / (double)V;
    *mean = m + s1 / (double)V;
    *std = sqrt((m2 > 0.0 ? m2 : 0.0) / (double)V);
}

/* x: n rows (stride ld) of float16 (is_half) or float32; t: targets or NULL (use the argmax);
 * scratch: 2 V floats; h_logit: 65536 counts; h_exp: 256 counts. */
void logitlab_diag_rows(const void *x, int is_half, const int64_t *t, int64_t n, int64_t V,
                        int64_t ld, logitlab_diag_row *out, int64_t *kout, float *scratch,
                        int64_t *h_logit, int64_t *h_exp) {
    float *zr = scratch, *wr = scratch + V;
    int64_t he[VL * 256];
    memset(he, 0, sizeof(he));
    const int64_t nv = V / VL * VL;
    const double inv_v = 1.0 / (double)V;
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int64_t r = 0; r < n; r++) {
        const float *z;
        if (is_half) {
            widen_half((const uint16_t *)x + r * ld, zr, V);
            z = zr;
        } else {
            z = (const float *)x + r * ld;
        }
        logitlab_diag_row *o = out + r;
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
        /* B reads zb: z itself, except in a float32 row whose spread exceeds FLT_MAX, where
         * d = z - a overflows to -inf and -inf * w is NaN although w = exp(d) = 0. There the
         * entries below a - 2^127 (w = 0 either way) are clamped to it in the scratch row,
         * unused for float32 input (a float16 row spans at most 2^17). */
        const double spread = (double)a - (double)b;
        const float *zb = z;
        if (spread > FLT_MAX) {
            const float lo = a - 0x1p127f;
            for (int64_t i = 0; i < V; i++) zr[i] = z[i] < lo ? lo : z[i];
            zb = zr;
        }
        const v8f va = splat(a);
        double acc[7] = {0};
        for (int64_t i0 = 0; i0 < V; i0 += DIAG_BLOCK) {
            const int64_t i1 = i0 + DIAG_BLOCK < V ? i0 + DIAG_BLOCK : V;
            v8f s = splat(0), sdw = splat(0), sd = splat(0);
            v8f s05 = splat(0), sdw05 = splat(0), s2 = splat(0), sdw2 = splat(0);
            for (int64_t i = i0; i < i1; i += VL) {
                const int64_t len = i1 - i < VL ? i1 - i : VL;
                v8f v = len == VL ? loadu(zb + i) : load_tail(zb + i, len, a);
                v8f d = v - va; /* tail lanes: d = 0, w masked below */
                const v8i idx = lane + splati((int32_t)i);
                const v8i keep = (idx < splati((int32_t)V)) & (idx != splati((int32_t)k));
                v8f w = (v8f)((v8i)vexp_neg_sub(d) & keep);
                v8f sq = w * w, rt = vsqrt8(w);
                s += w;
                sdw -= d * w;
                sd += d;
                s05 += sq;
                sdw05 -= d * sq;
                s2 += rt;
                sdw2 -= d * rt;
                if (len == VL) storeu(wr + i, w);
                else for (int j = 0; j < len; j++) wr[i + j] = w[j];
            }
            acc[0] += hsumd(s); acc[1] += hsumd(sdw); acc[2] += hsumd(sd);
            acc[3] += hsumd(s05); acc[4] += hsumd(sdw05); acc[5] += hsumd(s2); acc[6] += hsumd(sdw2);
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
        const float c = (float)(a + acc[2] * inv_v); /* pivot of the centred sums */
        const v8f vc = splat(c);
        double szd = 0.0, sg = 0.0, sg2 = 0.0;
        for (int64_t i0 = 0; i0 < V; i0 += DIAG_BLOCK) {
            const int64_t i1 = i0 + DIAG_BLOCK < V ? i0 + DIAG_BLOCK : V;
            v8f sz = splat(0), g1 = splat(0), g2 = splat(0);
            float t1 = 0.0f, t2 = 0.0f; /* the tail's centred sums */
            int64_t i = i0;
            for (; i + VL <= i1; i += VL) {
                v8f w = loadu(wr + i);
                v8f p = w * vp;
                v8i bits = (v8i)p;
                for (int j = 0; j < VL; j++) he[j * 256 + (((uint32_t)bits[j] >> 23) & 0xff)]++;
                const v8f v = loadu(z + i), g = v - vc;
                sz += vabs8(v) * w;
                g1 += g;
                g2 += g * g;
            }
            for (; i < i1; i++) {
                float p = wr[i] * pf;
                uint32_t u;
                memcpy(&u, &p, 4);
                he[(u >> 23) & 0xff]++;
                sz[0] += fabsf(z[i]) * wr[i];
                const float g = z[i] - c;
                t1 += g;
                t2 += g * g;
            }
            szd += hsumd(sz);
            sg += hsumd(g1) + t1;
            sg2 += hsumd(g2) + t2;
        }
        double mean = c + sg * inv_v, m2 = sg2 - sg * sg * inv_v, std;
        if (spread > 0x1p60) moments_f64(z, V, &mean, &std);
        else std = sqrt((m2 > 0.0 ? m2 : 0.0) * inv_v);
        /* the maximal entry holds p_max, not the w_k * p_max = 0 counted in exponent bin 0 */
        {
            uint32_t u;
            memcpy(&u, &pf, 4);
            he[0]--;
            he[(u >> 23) & 0xff]++;
        }
        const int64_t tt = t ? t[r] : k;
        o->max = a;
        o->min = b;
        o->sum_w = acc[0];
        o->ent_w = acc[1];
        o->mean = mean;
        o->std = std;
        o->sum_w_half = acc[3];
        o->ent_w_half = 2.0 * acc[4];
        o->sum_w_two = acc[5];
        o->ent_w_two = 0.5 * acc[6];
        o->abs_z_w = szd;
        o->min_abs = ma;
        o->p_target = tt == k ? (double)pf : (double)(wr[tt] * pf);
    }
    for (int j = 0; j < VL; j++)
        for (int e = 0; e < 256; e++) h_exp[e] += he[j * 256 + e];
}
