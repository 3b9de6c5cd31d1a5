/* fuzz_safetensors.c - st_parse on arbitrary bytes; on success every tensor is checked to lie
 * inside the buffer, to be found by name, and (for float dtypes) to convert. */
#include "fuzz_check.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    st_file *f = NULL;
    if (st_parse(data, size, &f, err, sizeof err) != ENGINE_OK) {
        FUZZ_CHECK(f == NULL);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
        return 0;
    }
    FUZZ_CHECK(f != NULL);
    const uint8_t *prev_end = NULL;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        FUZZ_CHECK(t != NULL);
        FUZZ_CHECK(memchr(t->name, '\0', sizeof t->name) != NULL);
        FUZZ_CHECK(t->rank >= 0 && t->rank <= ST_MAX_RANK);
        uint64_t nelem = 1;
        for (int d = 0; d < t->rank; d++) {
            FUZZ_CHECK(t->shape[d] >= 0);
            nelem *= (uint64_t)t->shape[d]; /* the data is in the buffer, so this cannot wrap */
        }
        FUZZ_CHECK(nelem == t->nelem);
        FUZZ_CHECK(t->nbytes == t->nelem * st_dtype_size(t->dtype));
        FUZZ_CHECK(fuzz_within(t->data, t->nbytes, data, size));
        /* Sorted by offset, no overlap. */
        FUZZ_CHECK(prev_end == NULL || t->data >= prev_end);
        prev_end = t->data + t->nbytes;
        FUZZ_CHECK(st_find(f, t->name) == t);
        if (st_dtype_is_float(t->dtype)) {
            float *out = malloc(t->nelem ? t->nelem * sizeof *out : 1);
            FUZZ_CHECK(out != NULL);
            FUZZ_CHECK(st_to_f32(t, out));
            fuzz_touch(out, t->nelem * sizeof *out);
            free(out);
        } else {
            float unused = 0.0f; /* never written: non-float dtypes are refused up front */
            FUZZ_CHECK(!st_to_f32(t, &unused));
        }
    }
    st_destroy(f);
    return 0;
}
