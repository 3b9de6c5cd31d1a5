/* infer_check.h - what fuzz_infer_json and fuzz_binary_tensor check about an infer_request that
 * parsed: its shape, its element count, and that every byte it points to belongs to it. */
#ifndef CONVSERVE_INFER_CHECK_H
#define CONVSERVE_INFER_CHECK_H

#include "fuzz_check.h"
#include "jscan.h"
#include "tensor.h"

/* The scanner takes exactly the JSON that jansson takes (jscan.h), but for an integer past int64,
 * which jansson refuses ("too big integer", "too big negative integer") and a float input may
 * hold. Bodies with a NUL byte are left out: jansson takes some of those, which JSON does not. */
static inline void grammar_check(const char *body, size_t len)
{
    if (memchr(body, '\0', len))
        return;
    jscan_doc d;
    char err[FUZZ_ERR_LEN];
    bool ours = jscan_document(body, len, SIZE_MAX, &d, err, sizeof err) == SRV_OK;
    json_error_t je;
    json_t *v = json_loadb(body, len, 0, &je);
    bool theirs = v != NULL;
    json_decref(v);
    if (ours && !theirs)
        FUZZ_CHECK(strstr(je.text, "too big") != NULL);
    if (theirs && !ours)
        FUZZ_CHECK(strstr(err, "invalid JSON") == NULL); /* a limit, never the grammar */
    if (ours && d.has_data)
        FUZZ_CHECK(d.begin < d.end && d.end <= len && body[d.begin] == '[' &&
                   body[d.end - 1] == ']');
}

/* Parses body[0, len) with header_len (bounding the data at max_elems, 0 for none), loads it,
 * and checks the outcome; `body` must be an allocation of exactly len bytes so that ASan sees any
 * read past it. */
static inline void infer_check_max(const char *body, size_t len, size_t header_len,
                                   size_t max_elems)
{
    infer_request q;
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    srv_status st = infer_request_parse(body, len, header_len, max_elems, &q, err, sizeof err);
    if (st == SRV_OK) {
        FUZZ_CHECK(q.data == NULL && q.elems == NULL); /* nothing converted yet */
        fuzz_err_poison(err, sizeof err);
        st = infer_request_load(&q, err, sizeof err);
    }
    if (st != SRV_OK) {
        /* A bad request, or (out of memory) a busy server; never a server error. */
        FUZZ_CHECK(st == SRV_BAD_REQUEST || st == SRV_UNAVAILABLE);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
        FUZZ_CHECK(fuzz_err_json_ok(err));
        /* Nothing is left allocated after a failure: freeing again must be harmless. */
        infer_request_free(&q);
        return;
    }
    FUZZ_CHECK(q.rank >= 1 && q.rank <= TENSOR_MAX_RANK);
    size_t count = 1;
    for (int i = 0; i < q.rank; i++) {
        FUZZ_CHECK(q.shape[i] >= 1);
        FUZZ_CHECK(!__builtin_mul_overflow(count, (size_t)q.shape[i], &count));
    }
    FUZZ_CHECK(count == q.count);
    FUZZ_CHECK(memchr(q.id, '\0', sizeof q.id) && memchr(q.input_name, '\0', sizeof q.input_name));
    FUZZ_CHECK(q.noutputs >= 0 && q.noutputs <= TENSOR_MAX_OUTPUTS);
    for (int i = 0; i < q.noutputs; i++)
        FUZZ_CHECK(memchr(q.output_names[i], '\0', TENSOR_MAX_NAME) != NULL);
    if (q.dtype == TENSOR_BYTES) {
        FUZZ_CHECK(q.nelems == q.count && q.data == NULL);
        FUZZ_CHECK(q.count == 0 || q.elems != NULL);
        for (size_t i = 0; i < q.nelems; i++) {
            /* An element is either a slice of the body or of the base64-decoded copy. */
            if (!fuzz_within(q.elems[i].data, q.elems[i].len, body, len))
                FUZZ_CHECK(q.owned != NULL);
            fuzz_touch(q.elems[i].data, q.elems[i].len);
        }
    } else {
        FUZZ_CHECK(q.elems == NULL && q.nelems == 0);
        FUZZ_CHECK(q.count == 0 || q.data != NULL);
        fuzz_touch(q.data, q.count * sizeof *q.data);
    }
    FUZZ_CHECK(tensor_dtype_name(q.dtype) != NULL);
    infer_request_free(&q);
}

/* Without a bound, with a small one (the scanner stops early), and the grammar against jansson. */
static inline void infer_check(const char *body, size_t len, size_t header_len)
{
    enum { SMALL_MODEL_ELEMS = 16 };
    infer_check_max(body, len, header_len, 0);
    infer_check_max(body, len, header_len, SMALL_MODEL_ELEMS);
    grammar_check(body, header_len && header_len <= len ? header_len : len);
}

#endif
