/* framing.c - refuses header sections whose framing a proxy could read differently (RFC 9112). */
#include "framing.h"

#include <string.h>
#include <strings.h>

/* Fields a request may carry once: Host (RFC 9112 3.2), Content-Length (6.3), and those whose
 * second copy would make the meaning of the request depend on which one is read. */
static const char *const singletons[] = {
    "Host", "Content-Length", "Authorization", "Content-Type", "Inference-Header-Content-Length",
};

/* Names that carry framing: anything that merely starts with one is a folded line (obs-fold) run
 * into the name by libmicrohttpd ("Content-Length:" CRLF " 45" becomes "Content-Length45"). */
static const char *const framing_names[] = {"Content-Length", "Transfer-Encoding"};

static const char CHUNKED[] = "chunked";

/* tchar of RFC 9110 5.6.2. */
static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool name_is(const framing_field *f, const char *name)
{
    return f->name_len == strlen(name) && !strncasecmp(f->name, name, f->name_len);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The codings of every Transfer-Encoding field, in order: the last must be chunked, once; any
 * other is one this server cannot decode. */
static srv_status check_codings(const framing_request *r, char *err, size_t errlen)
{
    const char *unknown = NULL;
    size_t unknown_len = 0, n = 0;
    bool last_chunked = false, chunked_before = false;
    for (size_t i = 0; i < r->nfields; i++) {
        const framing_field *f = &r->fields[i];
        if (!name_is(f, "Transfer-Encoding"))
            continue;
        const char *p = f->value, *end = f->value + f->value_len;
        while (p < end) {
            const char *e = memchr(p, ',', (size_t)(end - p));
            if (!e)
                e = end;
            const char *a = p, *b = e;
            while (a < b && is_ows(*a))
                a++;
            const char *semi = a < b ? memchr(a, ';', (size_t)(b - a)) : NULL; /* parameters */
            if (semi)
                b = semi;
            while (b > a && is_ows(b[-1]))
                b--;
            if (b > a) {
                bool chunked = (size_t)(b - a) == sizeof CHUNKED - 1 &&
                               !strncasecmp(a, CHUNKED, sizeof CHUNKED - 1);
                chunked_before = chunked_before || last_chunked;
                last_chunked = chunked;
                if (!chunked && !unknown) {
                    unknown = a;
                    unknown_len = (size_t)(b - a);
                }
                n++;
            }
            p = e + 1;
        }
    }
    if (n == 0 || !last_chunked)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "Transfer-Encoding does not end with chunked, so the body's end cannot be "
                        "found");
    if (chunked_before)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "Transfer-Encoding applies chunked more than once");
    if (unknown)
        return srv_fail(err, errlen, SRV_NOT_IMPLEMENTED,
                        "transfer coding '%.*s' is not supported; send the body as it is, or "
                        "chunked",
                        (int)(unknown_len < FRAMING_QUOTE ? unknown_len : FRAMING_QUOTE), unknown);
    return SRV_OK;
}

srv_status framing_check(const framing_request *r, char *err, size_t errlen)
{
    if (r->header_bytes > FRAMING_MAX_HEADER_BYTES)
        return srv_fail(err, errlen, SRV_HEADERS_TOO_LARGE,
                        "the request line and headers are %zu bytes; the limit is %d",
                        r->header_bytes, FRAMING_MAX_HEADER_BYTES);
    if (r->nfields > FRAMING_MAX_FIELDS)
        return srv_fail(err, errlen, SRV_HEADERS_TOO_LARGE,
                        "the request has more than %d header fields", FRAMING_MAX_FIELDS);
    size_t te = 0;
    for (size_t i = 0; i < r->nfields; i++) {
        const framing_field *f = &r->fields[i];
        int quote = (int)(f->name_len < FRAMING_QUOTE ? f->name_len : FRAMING_QUOTE);
        bool token = f->name_len > 0;
        for (size_t k = 0; k < f->name_len; k++)
            token = token && is_tchar((unsigned char)f->name[k]);
        if (!token)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "header name '%.*s' is not a token (white space before the colon, or "
                            "a folded line)",
                            quote, f->name);
        for (size_t k = 0; k < sizeof framing_names / sizeof framing_names[0]; k++) {
            size_t fl = strlen(framing_names[k]);
            if (f->name_len > fl && !strncasecmp(f->name, framing_names[k], fl))
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "header '%.*s' is %s folded into the next line (obs-fold), which "
                                "is not allowed",
                                quote, f->name, framing_names[k]);
        }
        if (f->value_cut || memchr(f->value, '\r', f->value_len))
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "header '%.*s' holds a %s byte", quote,
                            f->name, f->value_cut ? "NUL" : "CR");
        te += name_is(f, "Transfer-Encoding");
    }
    for (size_t k = 0; k < sizeof singletons / sizeof singletons[0]; k++) {
        size_t count = 0;
        for (size_t i = 0; i < r->nfields; i++)
            count += name_is(&r->fields[i], singletons[k]);
        if (count > 1)
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "%zu %s headers; there may be one", count,
                            singletons[k]);
        if (count == 0 && !r->http10 && !strcmp(singletons[k], "Host"))
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "an HTTP/1.1 request must have a Host header");
    }
    if (te > 0) {
        if (r->http10)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "Transfer-Encoding in an HTTP/1.0 request: its framing cannot be "
                            "trusted");
        for (size_t i = 0; i < r->nfields; i++)
            if (name_is(&r->fields[i], "Content-Length"))
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "both Content-Length and Transfer-Encoding: the body's length "
                                "would be ambiguous");
        return check_codings(r, err, errlen);
    }
    return SRV_OK;
}
