/* test_multipart.c - the multipart splitter: valid bodies, each error, prefixes, a guard page. */

/* MAP_ANONYMOUS, for the guard page, is outside POSIX 2008. */
#define _DEFAULT_SOURCE

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "multipart.h"

enum {
    ERR_LEN = 256,
    MAX_PARTS = 16,
};

/* Parses `body` (explicit length, so it may hold NULs) with `boundary` into parts[]. */
static srv_status parse(const void *body, size_t len, const char *boundary, multipart_part *parts,
                        size_t *n, char *err)
{
    err[0] = '\0';
    return multipart_parse(body, len, boundary, parts, MAX_PARTS, n, err, ERR_LEN);
}

/* Compares a (pointer, length) view with a NUL-free literal; NULL matches only NULL. */
static bool view_is(const void *p, size_t n, const char *want)
{
    if (!p || !want)
        return !p && !want;
    return n == strlen(want) && memcmp(p, want, n) == 0;
}

#define LIT(s) (s), sizeof(s) - 1

static void test_boundary(void)
{
    char b[MULTIPART_MAX_BOUNDARY + 1];
    char err[ERR_LEN];

    CHECK_INT(multipart_boundary("multipart/form-data; boundary=------------------------d74496d6",
                                 b, sizeof b, err, sizeof err),
              SRV_OK);
    CHECK_STR(b, "------------------------d74496d6");

    /* Type case-insensitive, parameter name too, other parameters skipped, quotes removed. */
    CHECK_INT(multipart_boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b:c\"", b,
                                 sizeof b, err, sizeof err),
              SRV_OK);
    CHECK_STR(b, "a b:c");
    CHECK_INT(multipart_boundary("  multipart/form-data ;boundary=xyz ; foo=bar;", b, sizeof b, err,
                                 sizeof err),
              SRV_OK);
    CHECK_STR(b, "xyz");

    char longest[128] = "multipart/form-data; boundary=";
    size_t off = strlen(longest);
    memset(longest + off, 'x', MULTIPART_MAX_BOUNDARY);
    longest[off + MULTIPART_MAX_BOUNDARY] = '\0';
    CHECK_INT(multipart_boundary(longest, b, sizeof b, err, sizeof err), SRV_OK);
    CHECK_INT(strlen(b), MULTIPART_MAX_BOUNDARY);
    strcat(longest, "x");
    CHECK_INT(multipart_boundary(longest, b, sizeof b, err, sizeof err), SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "1 to 70 characters long, got 71");

    CHECK_INT(multipart_boundary("application/json", b, sizeof b, err, sizeof err), SRV_MEDIA_TYPE);
    CHECK_CONTAINS(err, "got 'application/json'");
    CHECK_INT(multipart_boundary("multipart/mixed; boundary=x", b, sizeof b, err, sizeof err),
              SRV_MEDIA_TYPE);
    CHECK_INT(multipart_boundary("multipart/form-datax; boundary=x", b, sizeof b, err, sizeof err),
              SRV_MEDIA_TYPE);
    CHECK_INT(multipart_boundary(NULL, b, sizeof b, err, sizeof err), SRV_MEDIA_TYPE);
    CHECK_INT(multipart_boundary("multipart/form-data", b, sizeof b, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "no boundary parameter");
    CHECK_INT(multipart_boundary("multipart/form-data; boundary=", b, sizeof b, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "got 0");
    CHECK_INT(
        multipart_boundary("multipart/form-data; boundary=\"\"", b, sizeof b, err, sizeof err),
        SRV_BAD_REQUEST);
    CHECK_INT(
        multipart_boundary("multipart/form-data; boundary=\"abc", b, sizeof b, err, sizeof err),
        SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "malformed parameter list");
    CHECK_INT(multipart_boundary("multipart/form-data; boundary", b, sizeof b, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_INT(multipart_boundary("multipart/form-data; boundary=a; boundary=b", b, sizeof b, err,
                                 sizeof err),
              SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "more than one boundary");
    CHECK_INT(
        multipart_boundary("multipart/form-data; boundary=\"a\rb\"", b, sizeof b, err, sizeof err),
        SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "RFC 2046");
    CHECK_INT(
        multipart_boundary("multipart/form-data; boundary=\"ab \"", b, sizeof b, err, sizeof err),
        SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "ends with a space");

    /* An output buffer too small for the boundary is the caller's bug. */
    char tiny[3];
    CHECK_INT(multipart_boundary("multipart/form-data; boundary=abcd", tiny, sizeof tiny, err,
                                 sizeof err),
              SRV_INTERNAL);
}

/* What curl -F data=@a.png -F data=@b.png sends, with binary bytes in the files. */
static const char two_files[] = "--XyZ\r\n"
                                "Content-Disposition: form-data; name=\"data\"; "
                                "filename=\"a.png\"\r\n"
                                "Content-Type: image/png\r\n"
                                "\r\n"
                                "\x89PNG\r\n\x1a\n\0\0--XyZ-\r\n--Xy\r\n-\r\n\r\n"
                                "--XyZ\r\n"
                                "content-disposition: form-data; name=data; filename=b.png\r\n"
                                "\r\n"
                                "\0\r\n"
                                "--XyZ--\r\n";

static void test_valid(void)
{
    multipart_part parts[MAX_PARTS];
    size_t n = 99;
    char err[ERR_LEN];

    /* One part, the smallest well-formed body. */
    static const char one[] = "--b\r\n"
                              "Content-Disposition: form-data; name=\"data\"\r\n"
                              "\r\n"
                              "hello\r\n"
                              "--b--";
    CHECK_INT(parse(LIT(one), "b", parts, &n, err), SRV_OK);
    CHECK_INT(n, 1);
    CHECK(view_is(parts[0].data, parts[0].len, "hello"));
    CHECK(view_is(parts[0].name, parts[0].name_len, "data"));
    CHECK(parts[0].filename == NULL);
    CHECK(parts[0].content_type == NULL);

    /* Several parts; binary data with NULs, CR, LF, "--" and near-boundaries passes untouched. */
    CHECK_INT(parse(LIT(two_files), "XyZ", parts, &n, err), SRV_OK);
    CHECK_INT(n, 2);
    static const char data_a[] = "\x89PNG\r\n\x1a\n\0\0--XyZ-\r\n--Xy\r\n-\r\n";
    CHECK_INT(parts[0].len, sizeof data_a - 1);
    CHECK(parts[0].len == sizeof data_a - 1 && memcmp(parts[0].data, data_a, parts[0].len) == 0);
    CHECK(view_is(parts[0].name, parts[0].name_len, "data"));
    CHECK(view_is(parts[0].filename, parts[0].filename_len, "a.png"));
    CHECK(view_is(parts[0].content_type, parts[0].content_type_len, "image/png"));
    /* The CRLF before a boundary belongs to the boundary, not to the data. */
    CHECK_INT(parts[1].len, 1);
    CHECK(parts[1].len == 1 && parts[1].data[0] == 0);
    CHECK(view_is(parts[1].name, parts[1].name_len, "data"));
    CHECK(view_is(parts[1].filename, parts[1].filename_len, "b.png"));
    CHECK(parts[1].content_type == NULL);

    /* A quoted boundary with a space, a preamble, transport padding and an epilogue. */
    char b[MULTIPART_MAX_BOUNDARY + 1];
    CHECK_INT(multipart_boundary("multipart/form-data; boundary=\"simple boundary\"", b, sizeof b,
                                 err, sizeof err),
              SRV_OK);
    static const char preamble[] = "This is the preamble.  It is to be ignored.\r\n"
                                   "--simple boundary  \t\r\n"
                                   "Content-Type: text/plain; charset=us-ascii\r\n"
                                   "\r\n"
                                   "first\r\n"
                                   "--simple boundary\r\n"
                                   "\r\n"
                                   "second, no headers\r\n"
                                   "--simple boundary--\r\n"
                                   "This is the epilogue. --simple boundary\r\n";
    CHECK_INT(parse(LIT(preamble), b, parts, &n, err), SRV_OK);
    CHECK_INT(n, 2);
    CHECK(view_is(parts[0].data, parts[0].len, "first"));
    CHECK(
        view_is(parts[0].content_type, parts[0].content_type_len, "text/plain; charset=us-ascii"));
    CHECK(parts[0].name == NULL);
    CHECK(view_is(parts[1].data, parts[1].len, "second, no headers"));

    /* LF-only line endings throughout. */
    static const char lf[] = "--b\n"
                             "Content-Disposition: form-data; name=\"x\"; filename=\"c d.jpg\"\n"
                             "Content-Type: image/jpeg\n"
                             "\n"
                             "line1\nline2\n"
                             "--b\n"
                             "Content-Disposition: form-data; name=y\n"
                             "\n"
                             "\n"
                             "--b--\n";
    CHECK_INT(parse(LIT(lf), "b", parts, &n, err), SRV_OK);
    CHECK_INT(n, 2);
    CHECK(view_is(parts[0].data, parts[0].len, "line1\nline2"));
    CHECK(view_is(parts[0].filename, parts[0].filename_len, "c d.jpg"));
    CHECK(view_is(parts[0].content_type, parts[0].content_type_len, "image/jpeg"));
    CHECK(view_is(parts[1].name, parts[1].name_len, "y"));
    CHECK_INT(parts[1].len, 0);

    /* Empty parts: a blank line followed straight by the next boundary, and a part whose header
     * block's blank line doubles as the delimiter's line end. */
    static const char empty[] = "--b\r\n"
                                "Content-Disposition: form-data; name=\"a\"\r\n"
                                "\r\n"
                                "\r\n"
                                "--b\r\n"
                                "Content-Disposition: form-data; name=\"b\"\r\n"
                                "\r\n"
                                "--b--";
    CHECK_INT(parse(LIT(empty), "b", parts, &n, err), SRV_OK);
    CHECK_INT(n, 2);
    CHECK_INT(parts[0].len, 0);
    CHECK_INT(parts[1].len, 0);
    CHECK(view_is(parts[1].name, parts[1].name_len, "b"));

    /* Header names and the disposition type are case-insensitive; a Windows path in a filename
     * keeps its backslashes, and unknown headers and parameters are skipped. */
    static const char odd[] = "--b\r\n"
                              "X-Custom: 1\r\n"
                              "CONTENT-DISPOSITION:Form-Data ; filename=\"C:\\dir\\x.png\";"
                              " name=\"data\"; size=3\r\n"
                              "\r\n"
                              "abc\r\n"
                              "--b--\r\n";
    CHECK_INT(parse(LIT(odd), "b", parts, &n, err), SRV_OK);
    CHECK_INT(n, 1);
    CHECK(view_is(parts[0].filename, parts[0].filename_len, "C:\\dir\\x.png"));
    CHECK(view_is(parts[0].name, parts[0].name_len, "data"));
    CHECK(view_is(parts[0].data, parts[0].len, "abc"));

    /* Exactly max_parts parts are fine. */
    char many[MAX_PARTS * 16 + 16];
    size_t len = 0;
    for (int i = 0; i < MAX_PARTS; i++)
        len += (size_t)snprintf(many + len, sizeof many - len, "--b\r\n\r\n%d\r\n", i);
    len += (size_t)snprintf(many + len, sizeof many - len, "--b--");
    CHECK_INT(parse(many, len, "b", parts, &n, err), SRV_OK);
    CHECK_INT(n, MAX_PARTS);
    CHECK(view_is(parts[MAX_PARTS - 1].data, parts[MAX_PARTS - 1].len, "15"));
}

/* One error case: the status is 400 and the message holds `fragment`. */
static void check_error(const char *body, size_t len, const char *fragment)
{
    multipart_part parts[MAX_PARTS];
    size_t n = 99;
    char err[ERR_LEN];
    CHECK_INT(parse(body, len, "b", parts, &n, err), SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, fragment);
    CHECK_INT(n, 0);
}

static void test_errors(void)
{
    check_error(LIT(""), "multipart body does not start with the boundary");
    check_error(LIT("hello\r\n--c\r\n\r\nx\r\n--c--"),
                "multipart body does not start with the boundary");
    /* The first boundary must start a line: in the middle of one it is not a boundary. */
    check_error(LIT("x--b\r\n\r\nx\r\n--b--"), "multipart body has no parts");
    check_error(LIT("--b\r\n\r\nfirst\r\n--b\r\nContent-Type: text/plain\r\n--b--"),
                "multipart part 2 has no blank line after its headers");
    check_error(LIT("--b\r\nContent-Type: text/plain"),
                "multipart part 1 has no blank line after its headers");
    check_error(LIT("--b\r\n\r\ndata without an end"), "multipart body has no closing boundary");
    check_error(LIT("--b\r\n\r\ndata\r\n--b"), "multipart body has no closing boundary");
    check_error(LIT("--b\r\n\r\ndata\r\n--b\r\n"), "multipart body has no closing boundary");
    check_error(LIT("--b\r\n\r\ndata\r\n--b-"), "multipart body has no closing boundary");
    check_error(LIT("--b--\r\n"), "multipart body has no parts");
    check_error(LIT("preamble\r\n--b--"), "multipart body has no parts");
    check_error(LIT("--bc\r\n\r\nx\r\n--b--"), "boundary line 1 has unexpected bytes");
    /* RFC 2046 forbids data lines that start with the delimiter, even as a prefix. */
    check_error(LIT("--b\r\n\r\nx\r\n--bx\r\n--b--"), "boundary line 2 has unexpected bytes");
    check_error(LIT("--b\r\nno colon here\r\n\r\nx\r\n--b--"), "malformed header line");
    check_error(LIT("--b\r\n folded: header\r\n\r\nx\r\n--b--"), "malformed header line");
    check_error(LIT("--b\r\nContent-Disposition: attachment; filename=a\r\n\r\nx\r\n--b--"),
                "expected form-data");
    check_error(LIT("--b\r\nContent-Disposition: form-data; name=\"data\r\n\r\nx\r\n--b--"),
                "malformed Content-Disposition");

    char many[(MAX_PARTS + 1) * 16 + 16];
    size_t len = 0;
    for (int i = 0; i <= MAX_PARTS; i++)
        len += (size_t)snprintf(many + len, sizeof many - len, "--b\r\n\r\n%d\r\n", i);
    len += (size_t)snprintf(many + len, sizeof many - len, "--b--");
    check_error(many, len, "multipart body has more than 16 parts");

    /* A header block of exactly MULTIPART_MAX_HEADERS bytes passes; one byte more does not. */
    static const char head[] = "--b\r\nX-Pad: ";
    static const char tail[] = "\r\n\r\nx\r\n--b--";
    size_t fill = MULTIPART_MAX_HEADERS - (sizeof "X-Pad: " - 1) - 2;
    size_t big_len = sizeof head - 1 + fill + 1 + sizeof tail - 1;
    char *big = malloc(big_len);
    memcpy(big, head, sizeof head - 1);
    memset(big + sizeof head - 1, 'a', fill + 1);
    memcpy(big + sizeof head - 1 + fill + 1, tail, sizeof tail - 1);
    check_error(big, big_len, "multipart part 1 has a header block over 8192 bytes");
    /* Drop one fill byte: the block is then exactly the limit. */
    memmove(big + sizeof head - 1 + fill, big + sizeof head - 1 + fill + 1, sizeof tail - 1);
    multipart_part parts[MAX_PARTS];
    size_t n;
    char err[ERR_LEN];
    CHECK_INT(parse(big, big_len - 1, "b", parts, &n, err), SRV_OK);
    CHECK_INT(n, 1);
    free(big);

    /* Invalid arguments are the caller's bug. */
    CHECK_INT(multipart_parse((const uint8_t *)"x", 1, "", parts, MAX_PARTS, &n, err, sizeof err),
              SRV_INTERNAL);
    CHECK_INT(multipart_parse((const uint8_t *)"x", 1, NULL, parts, MAX_PARTS, &n, err, sizeof err),
              SRV_INTERNAL);
}

/* Every prefix of a valid body parses or fails with 400, copied into an exact-size heap block so
 * that ASan catches any read past the view. */
static void test_prefixes(const char *body, size_t len, const char *boundary)
{
    multipart_part parts[MAX_PARTS];
    size_t n;
    char err[ERR_LEN];
    bool statuses_ok = true;
    int ok = 0;
    for (size_t k = 0; k <= len; k++) {
        uint8_t *copy = malloc(k ? k : 1);
        memcpy(copy, body, k);
        srv_status st = parse(copy, k, boundary, parts, &n, err);
        if (st != SRV_OK && st != SRV_BAD_REQUEST)
            statuses_ok = false;
        if (st == SRV_OK)
            for (size_t i = 0; i < n; i++)
                if (parts[i].data < copy || parts[i].data + parts[i].len > copy + k)
                    statuses_ok = false;
        ok += st == SRV_OK;
        free(copy);
    }
    CHECK(statuses_ok);
    /* Only prefixes that reach the closing "--" parse. */
    CHECK(ok >= 1);
}

/* The body ends flush against a PROT_NONE page: any read past it faults. */
static void test_guard_page(const char *body, size_t len, const char *boundary)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t usable = (len + page - 1) / page * page;
    uint8_t *map =
        mmap(NULL, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    CHECK_INT(mprotect(map + usable, page, PROT_NONE), 0);
    multipart_part parts[MAX_PARTS];
    size_t n;
    char err[ERR_LEN];
    bool statuses_ok = true;
    for (size_t k = 0; k <= len; k++) {
        uint8_t *p = map + usable - k;
        memcpy(p, body, k);
        srv_status st = parse(p, k, boundary, parts, &n, err);
        statuses_ok &= st == SRV_OK || st == SRV_BAD_REQUEST;
    }
    CHECK(statuses_ok);
    uint8_t *p = map + usable - len;
    CHECK_INT(parse(p, len, boundary, parts, &n, err), SRV_OK);
    munmap(map, usable + page);
}

int main(void)
{
    test_boundary();
    test_valid();
    test_errors();

    static const char lf[] = "preamble\n--b\nContent-Disposition: form-data; name=x\n\nab\n--b--";
    test_prefixes(LIT(two_files), "XyZ");
    test_prefixes(LIT(lf), "b");
    test_guard_page(LIT(two_files), "XyZ");
    test_guard_page(LIT(lf), "b");
    /* A body that ends right after its closing boundary, with no CRLF: the last bytes matter. */
    static const char tight[] = "--b\r\n\r\nx\r\n--b--";
    test_guard_page(LIT(tight), "b");
    return check_report("multipart");
}
