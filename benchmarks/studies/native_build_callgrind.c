/* One-off study: exact instruction counts of every kernel, the first-use build before the move
 * to install time against the install-time library, at the AVX2 level (valgrind 3.19 has no
 * AVX-512). Every kernel runs once on fixed inputs; the old ABI's trailing nthreads argument is
 * passed to both (the new functions ignore an extra trailing argument under the SysV ABI).
 *
 *   gcc -O2 native_build_callgrind.c -o driver -ldl
 *   git show main:src/logitlab/_rows.c > _rows.c; mkdir torch
 *   git show main:src/logitlab/torch/_ce_rows.c > torch/_ce_rows.c
 *   gcc -O3 -std=c11 -fPIC -shared -fopenmp -fno-math-errno -march=x86-64-v3 _rows.c -o rows.so -lm
 *   gcc -O3 -std=c11 -ffp-contract=fast -fPIC -shared -fopenmp -fno-math-errno -march=x86-64-v3 \
 *       torch/_ce_rows.c -o ce.so -lm
 *   valgrind --tool=callgrind --callgrind-out-file=cg.old_rows ./driver ./rows.so rows
 *   valgrind --tool=callgrind --callgrind-out-file=cg.old_ce ./driver ./ce.so ce
 *   valgrind --tool=callgrind --callgrind-out-file=cg.new ./driver \
 *       src/logitlab/_native/liblogitlab_avx2.so all
 *   callgrind_annotate --inclusive=yes --threshold=100 cg.new | grep logitlab_
 *
 * Found (docs/performance.md): equal counts for the evaluator, diagnose and column kernels,
 * fewer for the others (log-softmax -2,278, one-pass backward -875, fused CE rows -0.12%: the
 * OpenMP dispatch and outlining); outputs identical.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
typedef void (*lsm_t)(const float*, float*, int32_t*, int64_t, int64_t, int64_t, int64_t, int, int);
typedef int64_t (*eval_t)(const float*, const int64_t*, int64_t, int64_t, int64_t, int64_t, const double*, double*, double*);
typedef void (*diag_t)(const void*, int, const int64_t*, int64_t, int64_t, int64_t, double*, int64_t*, float*, int64_t*, int64_t*);
typedef void (*ce_t)(float*, int64_t, const int64_t*, const float*, const float*, float*, float*, float*, int64_t*, int64_t, int64_t, int64_t, float, float, float, float, int64_t, int);
typedef void (*ceg_t)(float*, const float*, int64_t, const int64_t*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, float, int);
typedef int (*part_t)(float*, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*, float*, float*, double*, double*, int32_t*, int32_t*, float*, int, int);
typedef void (*merge_t)(int64_t, int64_t, float*, double*, double*, const int32_t*, const int32_t*, const float*, const int64_t*, const float*, float*, float*, float*, int64_t*, int64_t, float, float*, float*, float*);
typedef int (*cgrad_t)(float*, int64_t, int64_t, int64_t, int64_t, int64_t, const float*, const float*, const float*, const float*, const int64_t*, const float*, int64_t);
static uint64_t st = 88172645463325252ull;
static float rnd(void) { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return (float)((st >> 11) * 0x1.0p-53) * 12.0f - 6.0f; }
static uint16_t f2h(float f) { /* crude: via _Float16 */ _Float16 h = (_Float16)f; uint16_t u; memcpy(&u, &h, 2); return u; }
int main(int argc, char **argv) {
    void *L = dlopen(argv[1], RTLD_NOW);
    if (!L) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    const char *which = argv[2];
    const int64_t N = 64, V = 32000;
    float *x = malloc(sizeof(float) * N * V), *w = malloc(sizeof(float) * N * V), *out = malloc(sizeof(float) * N * V);
    for (int64_t i = 0; i < N * V; i++) x[i] = rnd();
    int64_t *t = malloc(8 * N); for (int64_t i = 0; i < N; i++) t[i] = (i * 7919) % V;
    int32_t flag[64]; float loss[64], lse[64], ent[64], gs[64]; int64_t amax[64];
    for (int i = 0; i < 64; i++) gs[i] = 1.0f / 64;
    if (strcmp(which, "ce")) {
        lsm_t lsm = (lsm_t)dlsym(L, "logitlab_lsm_rows");
        lsm(x, out, flag, N, V, V, V, 0, 1);
        lsm(x, out, flag, N, V, V, V, 1, 1);
        eval_t ev = (eval_t)dlsym(L, "logitlab_eval_rows");
        double edges[101], acc[5] = {0}, hist[300] = {0};
        for (int i = 0; i <= 100; i++) edges[i] = i / 100.0;
        int64_t *y = malloc(8 * 20000); for (int i = 0; i < 20000; i++) y[i] = i % 10;
        ev(x, y, 20000, 10, 10, 100, edges, acc, hist);
        ev(x, y, 2000, 1000, 1000, 100, edges, acc, hist);
        diag_t dg = (diag_t)dlsym(L, "logitlab_diag_rows");
        uint16_t *xh = malloc(2 * N * V); for (int64_t i = 0; i < N * V; i++) xh[i] = f2h(x[i]);
        double *o = malloc(sizeof(double) * 13 * N); int64_t k[64]; float *scr = malloc(8 * V);
        int64_t *hl = calloc(65536, 8), he[256] = {0};
        dg(xh, 1, NULL, N, V, V, o, k, scr, hl, he);
        dg(x, 0, t, N, V, V, o, k, scr, hl, he);
        printf("rows %g %g %g %g\n", out[0], acc[0], o[2], o[13]);
    }
    if (strcmp(which, "rows")) {
        ce_t ce = (ce_t)dlsym(L, "logitlab_ce_rows");
        memcpy(w, x, 4 * N * V); ce(w, N, t, NULL, NULL, loss, lse, NULL, NULL, V, V, -100, 1, 0, 0, 0, 0, 1);
        memcpy(w, x, 4 * N * V); ce(w, N, t, NULL, NULL, loss, lse, ent, amax, V, V, -100, 1, 0, 0, 0, 0, 1);
        memcpy(w, x, 4 * N * V); ce(w, N, t, NULL, gs, loss, lse, NULL, NULL, V, V, -100, 1, 0, 0, 0, 0, 1);
        memcpy(w, x, 4 * N * V); ce(w, N, t, NULL, gs, loss, lse, NULL, NULL, V, V, -100, 1, 0, 0.1f, 0, 0, 1);
        memcpy(w, x, 4 * N * V); ce(w, N, t, NULL, NULL, loss, lse, NULL, NULL, V, V, -100, 1, 0, 0, 0, 0, 1);
        ceg_t cg = (ceg_t)dlsym(L, "logitlab_ce_grad_rows");
        cg(w, w, N, t, NULL, gs, lse, V, V, V, -100, 1.0f, 1);
        /* columns: 4000 classes x 512 tokens */
        const int64_t CV = 4000, CM = 512, mv = 512, cb = 128, nb = (CV + cb - 1) / cb;
        float *zt = malloc(4 * CV * CM); memcpy(zt, x, 4 * CV * CM);
        int64_t *ct = malloc(8 * CM); for (int i = 0; i < CM; i++) ct[i] = (i * 31) % CV;
        float *rb = malloc(4 * nb * mv), rc[512], ztg[512] = {0}, lo[512], ls[512], a[512], fac[512], fix[512], cgs[512];
        double s_[512], e_[512]; int32_t k_[512], nan_[512];
        for (int i = 0; i < 512; i++) cgs[i] = 1.0f / 512;
        ((part_t)dlsym(L, "logitlab_ce_cols_part"))(zt, CM, CM, 0, CV, cb, ct, rb, rc, s_, e_, k_, nan_, ztg, 1, 0);
        ((merge_t)dlsym(L, "logitlab_ce_cols_merge"))(CM, 1, rc, s_, e_, k_, nan_, ztg, ct, cgs, lo, ls, NULL, NULL, -100, 0.0f, a, fac, fix);
        ((cgrad_t)dlsym(L, "logitlab_ce_cols_grad"))(zt, CM, CM, 0, CV, cb, rb, a, fac, fix, ct, cgs, -100);
        printf("ce %g %g %g %g\n", loss[0], lse[3], w[5], zt[7]);
    }
    return 0;
}
