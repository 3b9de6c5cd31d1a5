/* fuzz_multipart.c - multipart_boundary on a Content-Type value, then multipart_parse on a body.
 *
 * Input layout: the Content-Type value up to the first '\n', then the body (everything after it).
 * Without a '\n' the whole input is the Content-Type and the body is empty. */
#include "fuzz_check.h"
#include "multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    /* Small, so that "too many parts" is easy to reach; the server's is --max-images (64). */
    MAX_PARTS = 4,
};

/* A part field is either absent (NULL, length 0) or a slice of the body. */
static bool field_ok(const void *p, size_t n, const uint8_t *body, size_t len)
{
    return p ? fuzz_within(p, n, body, len) : n == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ct_len = nl ? (size_t)(nl - data) : size;
    /* The header value is a C string, as libmicrohttpd hands it over: it ends at a NUL. */
    char *content_type = malloc(ct_len + 1);
    FUZZ_CHECK(content_type != NULL);
    memcpy(content_type, data, ct_len);
    content_type[ct_len] = '\0';
    size_t len = nl ? size - ct_len - 1 : 0;
    uint8_t *body = fuzz_exact_copy(nl ? nl + 1 : data, len);

    char boundary[MULTIPART_MAX_BOUNDARY + 1];
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    srv_status st = multipart_boundary(content_type, boundary, sizeof boundary, err, sizeof err);
    if (st != SRV_OK) {
        FUZZ_CHECK(st == SRV_BAD_REQUEST || st == SRV_MEDIA_TYPE);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
        FUZZ_CHECK(fuzz_err_json_ok(err));
        goto done;
    }
    size_t blen = strnlen(boundary, sizeof boundary);
    FUZZ_CHECK(blen >= 1 && blen <= MULTIPART_MAX_BOUNDARY);

    multipart_part parts[MAX_PARTS];
    size_t n = SIZE_MAX;
    fuzz_err_poison(err, sizeof err);
    st = multipart_parse(body, len, boundary, parts, MAX_PARTS, &n, err, sizeof err);
    if (st != SRV_OK) {
        FUZZ_CHECK(st == SRV_BAD_REQUEST);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
        FUZZ_CHECK(fuzz_err_json_ok(err));
        goto done;
    }
    FUZZ_CHECK(n >= 1 && n <= MAX_PARTS);
    for (size_t i = 0; i < n; i++) {
        const multipart_part *p = &parts[i];
        FUZZ_CHECK(fuzz_within(p->data, p->len, body, len));
        FUZZ_CHECK(field_ok(p->name, p->name_len, body, len));
        FUZZ_CHECK(field_ok(p->filename, p->filename_len, body, len));
        FUZZ_CHECK(field_ok(p->content_type, p->content_type_len, body, len));
        /* Parts come in order and do not overlap. */
        if (i > 0)
            FUZZ_CHECK(p->data >= parts[i - 1].data + parts[i - 1].len);
    }
done:
    free(body);
    free(content_type);
    return 0;
}
