/* test_networks.c - runs model folders on the engine and compares with the outputs PyTorch gave.
 *
 * Usage: test_networks [--tol T] [--precision bf16] [--no-reference] DIR...
 * Each DIR holds model.json, its weights and cases.safetensors with F32 tensors input.K and
 * output.K (K = 0, 1, ...) written by tests/fixtures/make_fixtures.py, tests/live_check.py or
 * tests/zoo_check.py. A case passes when max|engine - torch| <= T * max(1, max|torch|): the error
 * relative to the output's scale. With --no-reference every network must also run without a
 * oneDNN reference (ref:) kernel (the fixtures and the torchvision zoo, as issue 9 asks); without
 * it a network that uses one is named, as live_check's random layer options may need them (a
 * 4-D softmax over channels, a dilated max pool).
 */
#include "check.h"
#include "engine.h"
#include "safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#define NET_ERR             1024
#define NET_DEFAULT_TOL     1e-4
#define NET_MAX_CASES_BYTES ((size_t)256 << 20)

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat sb;
    uint8_t *buf = NULL;
    if (fstat(fileno(f), &sb) == 0 && (size_t)sb.st_size <= NET_MAX_CASES_BYTES) {
        buf = malloc((size_t)sb.st_size + 1);
        if (buf && fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)sb.st_size;
    }
    fclose(f);
    return buf;
}

static void run_case(engine_runner *r, const char *dir, int k, const st_tensor *in,
                     const st_tensor *want, double tol)
{
    char err[NET_ERR];
    float *x = malloc(in->nelem * sizeof *x), *y = malloc(want->nelem * sizeof *y);
    CHECK(x && y);
    if (!x || !y)
        goto done;
    st_to_f32(in, x);
    st_to_f32(want, y);
    engine_tensor out;
    engine_status st = engine_runner_run(r, x, in->shape, in->rank, &out, err, sizeof err);
    if (st != ENGINE_OK) {
        fprintf(stderr, "%s case %d: %s\n", dir, k, err);
        CHECK_INT(st, ENGINE_OK);
        goto done;
    }
    CHECK_INT(out.rank, want->rank);
    for (int i = 0; i < want->rank && i < out.rank; i++)
        CHECK_INT(out.dims[i], want->shape[i]);
    CHECK_INT(out.count, want->nelem);
    if (out.count != want->nelem)
        goto done;
    double scale = 1.0, maxerr = 0.0;
    for (size_t i = 0; i < out.count; i++) {
        if (fabs(y[i]) > scale)
            scale = fabs(y[i]);
        double e = fabs((double)out.data[i] - y[i]);
        if (!(e <= maxerr)) /* NaN propagates as a failure */
            maxerr = e;
    }
    bool ok = maxerr <= tol * scale;
    CHECK(ok);
    printf("%s %s case %d %s: max error %.3g (scale %.3g)\n", ok ? "ok  " : "FAIL", dir, k,
           in->name, maxerr, scale);
done:
    free(x);
    free(y);
}

/* The precision the runs must have used, with --precision bf16; SPEC_F32 checks nothing. */
static spec_precision want_precision = SPEC_F32;
/* --no-reference: a oneDNN reference kernel fails the network instead of being named. */
static bool forbid_reference = false;

static void run_dir(const char *dir, double tol)
{
    char err[NET_ERR], path[4096];
    engine_model *m = NULL;
    engine_runner *r = NULL;
    st_file *cases = NULL;
    size_t len = 0;
    uint8_t *buf = NULL;
    engine_status st = engine_model_load(dir, NULL, &m, err, sizeof err);
    if (st != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        CHECK_INT(st, ENGINE_OK);
        return;
    }
    st = engine_runner_create(m, NULL, &r, err, sizeof err);
    CHECK_INT(st, ENGINE_OK);
    snprintf(path, sizeof path, "%s/cases.safetensors", dir);
    buf = slurp(path, &len);
    CHECK(buf != NULL);
    if (!r || !buf || st_parse(buf, len, &cases, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: cannot read cases: %s\n", dir, err);
        CHECK(0);
        goto done;
    }
    int k;
    for (k = 0;; k++) {
        char iname[32], oname[32];
        snprintf(iname, sizeof iname, "input.%d", k);
        snprintf(oname, sizeof oname, "output.%d", k);
        const st_tensor *in = st_find(cases, iname), *want = st_find(cases, oname);
        if (!in || !want)
            break;
        run_case(r, dir, k, in, want, tol);
    }
    CHECK(k > 0);
    /* Issue 9: no oneDNN reference kernel (ref:, slow C loops) on the zoo, on AVX2 or AVX-512
     * machines; the plain C kernels of the engine's own (convserve:c) are not ref:. */
    if (engine_runner_uses_reference(r)) {
        char kernels[8192];
        fprintf(stderr, "%s: %s oneDNN reference kernel ran; kernels of the last plan: %s\n", dir,
                forbid_reference ? "a" : "note: a",
                engine_runner_kernels(r, kernels, sizeof kernels));
        if (forbid_reference)
            CHECK(!engine_runner_uses_reference(r));
    }
    if (want_precision == SPEC_BF16) {
        bool bf16 = engine_runner_precision(r) == SPEC_BF16;
        if (!bf16)
            fprintf(stderr, "%s: ran in f32, not bf16\n", dir);
        CHECK(bf16);
    }
done:
    st_destroy(cases);
    free(buf);
    engine_runner_destroy(r);
    engine_model_destroy(m);
}

int main(int argc, char **argv)
{
    double tol = NET_DEFAULT_TOL;
    int first = 1;
    while (first + 1 < argc && argv[first][0] == '-') {
        char *end;
        if (!strcmp(argv[first], "--no-reference")) {
            forbid_reference = true;
            first += 1;
            continue;
        }
        if (!strcmp(argv[first], "--tol")) {
            tol = strtod(argv[first + 1], &end);
            if (*end || !(tol > 0))
                first = argc; /* usage */
        } else if (!strcmp(argv[first], "--precision") && !strcmp(argv[first + 1], "bf16")) {
            want_precision = SPEC_BF16;
        } else {
            first = argc;
        }
        first += 2;
    }
    if (first >= argc) {
        fprintf(stderr,
                "usage: test_networks [--tol T] [--precision bf16] [--no-reference] DIR...\n");
        return 2;
    }
    if (want_precision == SPEC_BF16 && !engine_bf16_supported()) {
        /* CTest's skip code: said, not silently passed. */
        printf("SKIP: this CPU runs no bf16 convolutions (oneDNN needs AVX-512); the bf16 "
               "fixtures would run in f32\n");
        return 77;
    }
    for (int i = first; i < argc; i++)
        run_dir(argv[i], tol);
    return check_report("networks");
}
