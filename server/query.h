/* query.h - parses the dims of a /shapes query ("input=1,3,28,28") from a byte view.
 *
 * Usage:
 *     int64_t dims[QUERY_MAX_DIMS];
 *     int rank;
 *     char err[256];
 *     if (query_parse_dims(q, strlen(q), dims, QUERY_MAX_DIMS, &rank, err, sizeof err) != SRV_OK)
 *         reply 400 with err;
 *
 * The grammar is the one the strtoll loop of handle_shapes accepted, kept byte for byte so that
 * moving to this function changes no answer: fields separated by single commas, each field being
 * optional C-locale whitespace, an optional sign and decimal digits, with a value from 1 to
 * INT32_MAX; at most `max` fields; no trailing comma. An empty view is "missing". The view need not
 * be NUL-terminated and is never read past; a NUL byte inside it is an invalid character. It is a
 * fuzz target (tests/fuzz/fuzz_shapes_query.c checks it against the strtoll loop).
 */
#ifndef CONVSERVE_QUERY_H
#define CONVSERVE_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

enum {
    QUERY_MAX_DIMS = TENSOR_MAX_RANK, /* as infer accepts; spec_infer then wants rank 2 or 4 */
    QUERY_QUOTE_MAX = 64,             /* bytes of the query an error message quotes */
};

/* Fills dims[0..*rank) and returns SRV_OK. Otherwise returns SRV_BAD_REQUEST with *rank 0 and
 * one of these messages in err (Q = the first QUERY_QUOTE_MAX bytes of the query):
 *     query parameter 'input' is missing; e.g. ?input=1,3,28,28         (len is 0)
 *     input 'Q' ends with a comma
 *     input 'Q' must be positive integers separated by commas, e.g. input=1,3,28,28
 * `s` may be NULL when len is 0. */
srv_status query_parse_dims(const char *s, size_t len, int64_t *dims, int max, int *rank, char *err,
                            size_t errlen);

#endif
