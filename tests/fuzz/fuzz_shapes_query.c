/* fuzz_shapes_query.c - the /shapes query: query_parse_dims on the raw value, checked against the
 * strtoll loop it replaced, then spec_infer of every shipped model (config/models) on the dims.
 *
 * Input layout: the query value as libmicrohttpd hands it over, already URL-decoded. */
#include "../unit/query_reference.h"
#include "fuzz_check.h"
#include "query.h"
#include "spec.h"

#include <dirent.h>
#include <errno.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_MODELS = 64 };

/* The shipped models' specs, loaded once; read-only afterwards. */
static spec_model *models[MAX_MODELS];
static int nmodels;

static void load_model(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char *buf = malloc(SPEC_MAX_JSON);
    FUZZ_CHECK(buf != NULL);
    size_t len = fread(buf, 1, SPEC_MAX_JSON, f);
    fclose(f);
    char err[FUZZ_ERR_LEN];
    spec_model *m;
    if (spec_parse(buf, len, &m, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "fuzz_shapes_query: %s: %s\n", path, err);
        abort();
    }
    free(buf);
    FUZZ_CHECK(nmodels < MAX_MODELS);
    models[nmodels++] = m;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    DIR *d = opendir(CONVSERVE_MODELS_DIR);
    FUZZ_CHECK(d != NULL);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", CONVSERVE_MODELS_DIR, e->d_name);
        load_model(dir);
    }
    closedir(d);
    FUZZ_CHECK(nmodels > 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int64_t dims[QUERY_MAX_DIMS];
    int rank = -1;
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    srv_status st = query_parse_dims(s, size, dims, QUERY_MAX_DIMS, &rank, err, sizeof err);
    if (st != SRV_OK) {
        FUZZ_CHECK(st == SRV_BAD_REQUEST && rank == 0);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
        FUZZ_CHECK(fuzz_err_json_ok(err));
    } else {
        FUZZ_CHECK(rank >= 1 && rank <= QUERY_MAX_DIMS);
        for (int i = 0; i < rank; i++)
            FUZZ_CHECK(dims[i] >= 1 && dims[i] <= INT32_MAX);
    }

    /* The old loop saw a C string: compare wherever the view holds no NUL. */
    if (!memchr(s, '\0', size)) {
        char *copy = malloc(size + 1);
        FUZZ_CHECK(copy != NULL);
        memcpy(copy, s, size);
        copy[size] = '\0';
        int64_t want[QUERY_MAX_DIMS];
        int want_rank;
        srv_status ws = query_reference(copy, want, &want_rank);
        free(copy);
        FUZZ_CHECK(ws == st);
        if (st == SRV_OK)
            FUZZ_CHECK(want_rank == rank && !memcmp(want, dims, (size_t)rank * sizeof *dims));
    }
    if (st != SRV_OK)
        return 0;

    for (int k = 0; k < nmodels; k++) {
        const spec_model *m = models[k];
        spec_shape *out = calloc(m->n_layers, sizeof *out);
        FUZZ_CHECK(out != NULL);
        int bad = -2;
        fuzz_err_poison(err, sizeof err);
        if (spec_infer(m, dims, rank, out, NULL, &bad, err, sizeof err) == ENGINE_OK) {
            for (size_t i = 0; i < m->n_layers; i++) {
                FUZZ_CHECK(out[i].rank == 2 || out[i].rank == 4);
                for (int d = 0; d < out[i].rank; d++)
                    FUZZ_CHECK(out[i].d[d] >= 1);
            }
        } else {
            FUZZ_CHECK(fuzz_err_written(err, sizeof err));
            FUZZ_CHECK(fuzz_err_json_ok(err));
            FUZZ_CHECK(bad >= -1 && bad < (int)m->n_layers);
        }
        free(out);
    }
    return 0;
}
