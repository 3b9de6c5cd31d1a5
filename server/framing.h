/* framing.h - the RFC 9112 checks of a request's header section, before anything is read after it.
 *
 * libmicrohttpd 0.9.75 parses the request line and header fields and frames the body from the
 * first Content-Length or Transfer-Encoding it finds. What it lets through and a proxy in front
 * might read differently (a smuggling primitive), this refuses: two framing headers, codings
 * other than chunked, a header folded into the next line, a NUL or CR inside a value, a missing or
 * repeated Host, headers that may appear once appearing twice. A pure function over the fields, so
 * that it can be tested and fuzzed without a socket:
 *
 *     framing_field f[] = {{"Host", 4, "x", 1, false}, ...};
 *     framing_request r = {.http10 = false, .fields = f, .nfields = 1, .header_bytes = 42};
 *     srv_status s = framing_check(&r, err, sizeof err);   // SRV_OK, or 400 / 431 / 501
 */
#ifndef CONVSERVE_FRAMING_H
#define CONVSERVE_FRAMING_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

enum {
    FRAMING_MAX_FIELDS = 100,         /* header fields in one request */
    FRAMING_MAX_HEADER_BYTES = 16384, /* the request line and header section */
    FRAMING_QUOTE = 40,               /* bytes of a name or value a message quotes */
};

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    bool value_cut; /* the line went on past value_len: a NUL inside the value */
} framing_field;

typedef struct {
    bool http10; /* HTTP/1.0; otherwise 1.1 */
    const framing_field *fields;
    size_t nfields;      /* more than FRAMING_MAX_FIELDS means "too many" (they are not all here) */
    size_t header_bytes; /* the request line and header section as received */
} framing_request;

/* SRV_OK, or: SRV_HEADERS_TOO_LARGE (431) for too many fields or bytes; SRV_BAD_REQUEST for a
 * field name that is not a token (white space before the colon, a folded line run into the name),
 * a CR or NUL in a value, a missing (HTTP/1.1) or repeated Host, a repeated Content-Length,
 * Transfer-Encoding with Content-Length or in HTTP/1.0, codings that do not end with a single
 * chunked, and a repeated Authorization, Content-Type or Inference-Header-Content-Length;
 * SRV_NOT_IMPLEMENTED (501) for a transfer coding other than chunked. The message says which. */
srv_status framing_check(const framing_request *r, char *err, size_t errlen);

#endif
