/* query_reference.h - the /shapes query loop as handle_shapes had it, which query_parse_dims must
 * agree with; shared by the unit test and the fuzz target. */
#ifndef CONVSERVE_QUERY_REFERENCE_H
#define CONVSERVE_QUERY_REFERENCE_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "query.h"

/* Parses a NUL-terminated query; SRV_OK with out[0..*n) or SRV_BAD_REQUEST. */
static inline srv_status query_reference(const char *q, int64_t *out, int *n)
{
    *n = 0;
    if (!*q)
        return SRV_BAD_REQUEST;
    for (const char *p = q; *p;) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 1 || v > INT32_MAX || *n == QUERY_MAX_DIMS ||
            (*end && *end != ','))
            return SRV_BAD_REQUEST;
        out[(*n)++] = v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p)
            return SRV_BAD_REQUEST;
    }
    return SRV_OK;
}

#endif
