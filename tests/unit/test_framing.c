/* test_framing.c - the RFC 9112 checks of a header section, field by field. */
#include "check.h"
#include "framing.h"

static char err[512];

#define F(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1, false                                                  \
    }

static srv_status check(const framing_field *f, size_t n, bool http10)
{
    framing_request r = {.http10 = http10, .fields = f, .nfields = n, .header_bytes = 100};
    return framing_check(&r, err, sizeof err);
}

static void test_good(void)
{
    framing_field ok[] = {F("Host", "x"), F("Content-Length", "5"), F("X-a.b_c~!", "v")};
    CHECK_INT(check(ok, 3, false), SRV_OK);
    framing_field chunked[] = {F("host", "x"), F("transfer-encoding", " Chunked ")};
    CHECK_INT(check(chunked, 2, false), SRV_OK);
    framing_field params[] = {F("Host", "x"), F("Transfer-Encoding", "chunked;q=1")};
    CHECK_INT(check(params, 2, false), SRV_OK);
    CHECK_INT(check(ok + 1, 1, true), SRV_OK); /* HTTP/1.0 needs no Host */
}

static void test_refused(void)
{
    struct {
        framing_field f[3];
        size_t n;
        bool http10;
        srv_status want;
        const char *msg;
    } cases[] = {
        {{F("Host", "x"), F("Content-Length44", "")},
         2,
         false,
         SRV_BAD_REQUEST,
         "header 'Content-Length44' is Content-Length folded into the next line (obs-fold), which "
         "is not allowed"},
        {{F("Host", "x"), F("transfer-encodingchunked", "")},
         2,
         false,
         SRV_BAD_REQUEST,
         "folded into the next line"},
        {{F("Host", "x"), F("X A", "1")}, 2, false, SRV_BAD_REQUEST, "header name 'X A' is not"},
        {{F("Host", "x"), F("X-A", "a\rb")},
         2,
         false,
         SRV_BAD_REQUEST,
         "header 'X-A' holds a CR byte"},
        {{F("Host", "x"), {"X-A", 3, "a", 1, true}},
         2,
         false,
         SRV_BAD_REQUEST,
         "header 'X-A' holds a NUL byte"},
        {{F("Content-Length", "1")},
         1,
         false,
         SRV_BAD_REQUEST,
         "an HTTP/1.1 request must have a Host header"},
        {{F("Host", "a"), F("host", "b")},
         2,
         false,
         SRV_BAD_REQUEST,
         "2 Host headers; there may be one"},
        {{F("Host", "a"), F("Content-Type", "a/b"), F("Content-Type", "c/d")},
         3,
         false,
         SRV_BAD_REQUEST,
         "2 Content-Type headers; there may be one"},
        {{F("Host", "a"), F("Content-Length", "1"), F("Transfer-Encoding", "chunked")},
         3,
         false,
         SRV_BAD_REQUEST,
         "both Content-Length and Transfer-Encoding"},
        {{F("Transfer-Encoding", "chunked")},
         1,
         true,
         SRV_BAD_REQUEST,
         "Transfer-Encoding in an HTTP/1.0 request"},
        {{F("Host", "a"), F("Transfer-Encoding", "chunked"), F("Transfer-Encoding", "identity")},
         3,
         false,
         SRV_BAD_REQUEST,
         "does not end with chunked"},
        {{F("Host", "a"), F("Transfer-Encoding", "chunked, chunked")},
         2,
         false,
         SRV_BAD_REQUEST,
         "Transfer-Encoding applies chunked more than once"},
        {{F("Host", "a"), F("Transfer-Encoding", ", ,")},
         2,
         false,
         SRV_BAD_REQUEST,
         "does not end with chunked"},
        {{F("Host", "a"), F("Transfer-Encoding", "gzip,chunked")},
         2,
         false,
         SRV_NOT_IMPLEMENTED,
         "transfer coding 'gzip' is not supported; send the body as it is, or chunked"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_INT(check(cases[i].f, cases[i].n, cases[i].http10), cases[i].want);
        CHECK_CONTAINS(err, cases[i].msg);
    }
}

static void test_sizes(void)
{
    framing_field ok[] = {F("Host", "x")};
    framing_request r = {.fields = ok, .nfields = 1, .header_bytes = FRAMING_MAX_HEADER_BYTES + 1};
    CHECK_INT(framing_check(&r, err, sizeof err), SRV_HEADERS_TOO_LARGE);
    CHECK_STR(err, "the request line and headers are 16385 bytes; the limit is 16384");
    CHECK_INT(srv_status_http(SRV_HEADERS_TOO_LARGE), 431);
    r.header_bytes = 10;
    r.nfields = FRAMING_MAX_FIELDS + 1;
    framing_field many[FRAMING_MAX_FIELDS + 1];
    for (int i = 0; i <= FRAMING_MAX_FIELDS; i++)
        many[i] = (framing_field)F("Host", "x");
    r.fields = many;
    CHECK_INT(framing_check(&r, err, sizeof err), SRV_HEADERS_TOO_LARGE);
    CHECK_STR(err, "the request has more than 100 header fields");
}

int main(void)
{
    test_good();
    test_refused();
    test_sizes();
    return check_report("framing");
}
