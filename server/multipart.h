/* multipart.h - a strict multipart/form-data splitter over a byte view (RFC 7578 / RFC 2046).
 *
 * Usage:
 *     char boundary[MULTIPART_MAX_BOUNDARY + 1];
 *     multipart_part parts[16];
 *     size_t n;
 *     if (multipart_boundary(content_type, boundary, sizeof boundary, err, errlen) == SRV_OK &&
 *         multipart_parse(body, len, boundary, parts, 16, &n, err, errlen) == SRV_OK) { ... }
 *
 * Parts are views into the body: nothing is copied or allocated. It never reads past the view;
 * it is a fuzz target.
 */
#ifndef CONVSERVE_MULTIPART_H
#define CONVSERVE_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

enum {
    MULTIPART_MAX_BOUNDARY = 70,  /* RFC 2046 */
    MULTIPART_MAX_HEADERS = 8192, /* bytes of one part's header block */
};

typedef struct {
    const uint8_t *data; /* the part's body */
    size_t len;
    const char *name; /* form field name from Content-Disposition (not NUL-terminated), or NULL */
    size_t name_len;
    const char *filename; /* or NULL */
    size_t filename_len;
    const char *content_type; /* the part's Content-Type value, or NULL */
    size_t content_type_len;
} multipart_part;

/* Extracts the boundary parameter of a "multipart/form-data; boundary=..." header value (quoted or
 * not) into `out`. SRV_MEDIA_TYPE if the type is not multipart/form-data, SRV_BAD_REQUEST if the
 * boundary is missing, empty or longer than MULTIPART_MAX_BOUNDARY. */
srv_status multipart_boundary(const char *content_type, char *out, size_t cap, char *err,
                              size_t errlen);

/* Splits the body. SRV_BAD_REQUEST with a precise message for a missing first boundary, a part
 * without the blank line after its headers, a missing closing boundary, more than max_parts parts,
 * or no part at all. Empty parts are returned with len 0 (the caller decides). */
srv_status multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                           multipart_part *parts, size_t max_parts, size_t *nparts, char *err,
                           size_t errlen);

#endif
