/* fma_peak.c - measures the machine's float32 fused multiply-add peak, the ceiling against which
 * the engine's convolutions are judged.
 *
 * Each thread runs independent chains of vector FMAs (enough of them to cover the FMA latency on
 * every pipe) for a fixed time; the figure is 2 flops per lane per FMA. AVX2 (8 lanes) and, where
 * the CPU has it, AVX-512 (16 lanes) are measured; the larger is the peak. Usage:
 *     bench_fma [--threads T] [--seconds S]     (default: one thread per CPU, 1 s)
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <immintrin.h>

enum { CHAINS = 12, INNER = 1000 };

/* Twelve named accumulators, so that they live in registers: an array would be kept in memory
 * and turn the loop into one latency-bound chain. */
#define ACCS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs FMA chains for about `seconds`; returns the FMAs done (vector instructions) and leaves a
 * result the compiler cannot drop. */
__attribute__((target("avx2,fma"))) static double run_avx2(double seconds, float *sink)
{
    __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
#define DECL(i) __m256 acc##i = _mm256_set1_ps((float)(i));
    ACCS(DECL)
#undef DECL
    double fmas = 0, t0 = now_seconds();
    do {
        for (int k = 0; k < INNER; k++) {
#define STEP(i) acc##i = _mm256_fmadd_ps(acc##i, a, b);
            ACCS(STEP)
#undef STEP
        }
        fmas += (double)INNER * CHAINS;
    } while (now_seconds() - t0 < seconds);
    float out[8];
    __m256 s = _mm256_setzero_ps();
#define SUM(i) s = _mm256_add_ps(s, acc##i);
    ACCS(SUM)
#undef SUM
    _mm256_storeu_ps(out, s);
    *sink += out[0];
    return fmas;
}

__attribute__((target("avx512f"))) static double run_avx512(double seconds, float *sink)
{
    __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
#define DECL(i) __m512 acc##i = _mm512_set1_ps((float)(i));
    ACCS(DECL)
#undef DECL
    double fmas = 0, t0 = now_seconds();
    do {
        for (int k = 0; k < INNER; k++) {
#define STEP(i) acc##i = _mm512_fmadd_ps(acc##i, a, b);
            ACCS(STEP)
#undef STEP
        }
        fmas += (double)INNER * CHAINS;
    } while (now_seconds() - t0 < seconds);
    __m512 s = _mm512_setzero_ps();
#define SUM(i) s = _mm512_add_ps(s, acc##i);
    ACCS(SUM)
#undef SUM
    *sink += _mm512_reduce_add_ps(s);
    return fmas;
}

/* GFLOP/s of all threads together for one instruction set. */
static double measure(int threads, double seconds, int lanes)
{
    double total = 0, t0 = now_seconds();
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total, sink)
    {
        float s = 0;
        total += lanes == 16 ? run_avx512(seconds, &s) : run_avx2(seconds, &s);
        sink += s;
    }
    double t = now_seconds() - t0;
    if (sink == 12345.0f)
        printf(" "); /* keeps the chains alive */
    return total * lanes * 2 / t / 1e9;
}

int main(int argc, char **argv)
{
    int threads = omp_get_num_procs();
    double seconds = 1.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        char *end;
        if (!strcmp(argv[i], "--threads")) {
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || v < 1 || v > 1024)
                goto usage;
            threads = (int)v;
        } else if (!strcmp(argv[i], "--seconds")) {
            seconds = strtod(argv[i + 1], &end);
            if (*end || !(seconds > 0) || seconds > 60)
                goto usage;
        } else {
            goto usage;
        }
    }
    if (argc % 2 == 0)
        goto usage;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("fma peak: this CPU has no AVX2 FMA\n");
        return 1;
    }
    double avx2 = measure(threads, seconds, 8), avx512 = 0;
    if (__builtin_cpu_supports("avx512f"))
        avx512 = measure(threads, seconds, 16);
    double peak = avx512 > avx2 ? avx512 : avx2;
    printf("fma peak: %d threads, AVX2 %.1f GFLOP/s", threads, avx2);
    if (avx512 > 0)
        printf(", AVX-512 %.1f GFLOP/s", avx512);
    printf("; peak %.1f GFLOP/s\n", peak);
    return 0;
usage:
    fprintf(stderr, "usage: bench_fma [--threads T] [--seconds S]\n");
    return 2;
}
