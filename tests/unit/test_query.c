/* test_query.c - query_parse_dims: the /shapes grammar, each error message, the dims cap, every
 * prefix against a guard page, and agreement with the strtoll loop it replaces. */
/* MAP_ANONYMOUS, for the guard page, is outside POSIX 2008. */
#define _DEFAULT_SOURCE

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "query.h"
#include "query_reference.h"

enum { ERR_LEN = 256 };

#define BAD_INTS_MSG "must be positive integers separated by commas, e.g. input=1,3,28,28"

static int64_t dims[QUERY_MAX_DIMS];
static int rank;
static char err[ERR_LEN];

static srv_status parse(const char *s)
{
    err[0] = '\0';
    memset(dims, 0, sizeof dims);
    return query_parse_dims(s, strlen(s), dims, QUERY_MAX_DIMS, &rank, err, sizeof err);
}

/* Expects `s` to give exactly the n dims listed. */
static void check_ok(const char *s, int n, const int64_t *want)
{
    CHECK_INT(parse(s), SRV_OK);
    CHECK_INT(rank, n);
    for (int i = 0; i < n && i < rank; i++)
        CHECK_INT(dims[i], want[i]);
}

/* Expects `s` to be refused with the full message `msg`. */
static void check_bad(const char *s, const char *msg)
{
    CHECK_INT(parse(s), SRV_BAD_REQUEST);
    CHECK_INT(rank, 0);
    CHECK_STR(err, msg);
}

static void test_valid(void)
{
    check_ok("1,3,28,28", 4, (const int64_t[]){1, 3, 28, 28});
    check_ok("7", 1, (const int64_t[]){7});
    check_ok("16,784", 2, (const int64_t[]){16, 784});
    check_ok("2147483647", 1, (const int64_t[]){INT32_MAX});
    check_ok("1,2,3,4,5,6,7,8", 8, (const int64_t[]){1, 2, 3, 4, 5, 6, 7, 8});
    /* What strtoll accepted is kept: leading zeros, a plus sign, whitespace before a number. */
    check_ok("0001,+3, 28,\t28", 4, (const int64_t[]){1, 3, 28, 28});
    check_ok("\n\v\f\r 5", 1, (const int64_t[]){5});
}

static void test_errors(void)
{
    check_bad("", "query parameter 'input' is missing; e.g. ?input=1,3,28,28");
    CHECK_INT(query_parse_dims(NULL, 0, dims, QUERY_MAX_DIMS, &rank, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "query parameter 'input' is missing; e.g. ?input=1,3,28,28");

    check_bad("1,3,28,", "input '1,3,28,' ends with a comma");
    check_bad("5,", "input '5,' ends with a comma");
    check_bad("1,2,3,4,5,6,7,8,", "input '1,2,3,4,5,6,7,8,' ends with a comma");

    static const char *const bad[] = {
        "0",
        "-1",
        "-0",
        "+0",
        "1,0,3",
        "2147483648",
        "99999999999999999999999",
        "1,,3",
        ",1",
        ",",
        "1 ",
        "1, ",
        "1x",
        "x",
        "0x10",
        "1.5",
        "1e3",
        "+",
        "-",
        " ",
        "+-1",
        "1;2",
        "1,2,3,4,5,6,7,8,9",
        "1,3,28,28 ",
        "--1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char want[ERR_LEN];
        snprintf(want, sizeof want, "input '%s' " BAD_INTS_MSG, bad[i]);
        check_bad(bad[i], want);
    }

    /* Error messages quote at most QUERY_QUOTE_MAX bytes of the query. */
    char longq[200];
    memset(longq, '9', sizeof longq - 1);
    longq[sizeof longq - 1] = '\0';
    CHECK_INT(parse(longq), SRV_BAD_REQUEST);
    char want[ERR_LEN];
    snprintf(want, sizeof want, "input '%.64s' " BAD_INTS_MSG, longq);
    CHECK_STR(err, want);

    /* A NUL inside the view is a character like any other, not the end. */
    CHECK_INT(query_parse_dims("1\0002", 3, dims, QUERY_MAX_DIMS, &rank, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "input '1' " BAD_INTS_MSG);

    /* The caller's capacity is the limit. */
    CHECK_INT(query_parse_dims("1,2,3", 5, dims, 2, &rank, err, sizeof err), SRV_BAD_REQUEST);
    CHECK_INT(query_parse_dims("1,2", 3, dims, 2, &rank, err, sizeof err), SRV_OK);
    CHECK_INT(rank, 2);

    /* A short error buffer is truncated, not overrun. */
    char tiny[8];
    CHECK_INT(query_parse_dims("x", 1, dims, QUERY_MAX_DIMS, &rank, tiny, sizeof tiny),
              SRV_BAD_REQUEST);
    CHECK_STR(tiny, "input '");
}

/* Every prefix of `s` placed flush against a PROT_NONE page: a read past the view faults. */
static void test_guard_page(const char *s)
{
    size_t len = strlen(s);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t usable = (len + page - 1) / page * page;
    char *map =
        mmap(NULL, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    CHECK_INT(mprotect(map + usable, page, PROT_NONE), 0);
    for (size_t k = 0; k <= len; k++) {
        char *p = map + usable - k;
        memcpy(p, s, k);
        srv_status st = query_parse_dims(p, k, dims, QUERY_MAX_DIMS, &rank, err, sizeof err);
        CHECK(st == SRV_OK || st == SRV_BAD_REQUEST);
    }
    munmap(map, usable + page);
}

/* Random strings over the grammar's alphabet, compared with the strtoll loop. */
static void test_against_reference(void)
{
    static const char alphabet[] = "0123456789,,,+- \t9";
    uint32_t x = 12345;
    int disagreements = 0;
    for (int round = 0; round < 200000; round++) {
        char s[24];
        x = x * 1103515245u + 12345u;
        size_t n = (x >> 16) % (sizeof s - 1);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            s[i] = alphabet[(x >> 16) % (sizeof alphabet - 1)];
        }
        s[n] = '\0';
        int64_t want[QUERY_MAX_DIMS];
        int want_rank;
        srv_status ws = query_reference(s, want, &want_rank);
        srv_status gs = parse(s);
        bool same =
            ws == gs && (gs != SRV_OK ||
                         (rank == want_rank && !memcmp(dims, want, (size_t)rank * sizeof *dims)));
        if (!same && disagreements++ < 5)
            fprintf(stderr, "query '%s': reference %d, query_parse_dims %d\n", s, ws, gs);
    }
    CHECK_INT(disagreements, 0);
}

int main(void)
{
    test_valid();
    test_errors();
    test_guard_page("1,3,28,28");
    test_guard_page("2147483647,2147483648");
    test_guard_page(" +12,");
    test_against_reference();
    return check_report("query");
}
