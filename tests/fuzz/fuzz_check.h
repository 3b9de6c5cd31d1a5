/* fuzz_check.h - invariant checks for the fuzz targets: a broken promise aborts with its line, and
 * libFuzzer saves the input as a crash. */
#ifndef CONVSERVE_FUZZ_CHECK_H
#define CONVSERVE_FUZZ_CHECK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

enum { FUZZ_ERR_LEN = 512 };

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Fills an error buffer with non-NUL bytes, so that a parser that fails without writing a
 * message is caught by fuzz_err_written. */
static inline void fuzz_err_poison(char *err, size_t len)
{
    memset(err, 'X', len);
}

/* Every failure must leave a non-empty, NUL-terminated sentence in the caller's buffer. */
static inline bool fuzz_err_written(const char *err, size_t len)
{
    return err[0] != 'X' && err[0] != '\0' && memchr(err, '\0', len) != NULL;
}

/* The message as the server sends it, {"error": "<message>"}, is valid JSON in strict UTF-8,
 * whatever bytes of the input it quotes (jansson checks both; NUL is valid JSON, "\u0000"). */
static inline bool fuzz_err_json_ok(const char *err)
{
    text t = {0};
    text_put(&t, "{\"error\":");
    text_json_string(&t, err, strlen(err));
    text_put(&t, "}");
    size_t len;
    char *body = text_take(&t, &len);
    FUZZ_CHECK(body != NULL);
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_ALLOW_NUL, &je);
    bool ok = v != NULL && json_is_string(json_object_get(v, "error"));
    json_decref(v);
    free(body);
    return ok;
}

/* Whether [p, p + n) lies inside [base, base + len). */
static inline bool fuzz_within(const void *p, size_t n, const void *base, size_t len)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    return a >= b && a - b <= len && n <= len - (a - b);
}

/* Reads every byte of a region, so that ASan checks all of it really belongs to its owner. */
static inline unsigned fuzz_touch(const void *p, size_t n)
{
    const volatile uint8_t *q = p;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += q[i];
    return sum;
}

/* A copy of `n` bytes in an allocation of exactly that size (at least one byte is allocated, so
 * that an empty view still has a valid pointer), so that ASan sees a read past its end. */
static inline uint8_t *fuzz_exact_copy(const uint8_t *data, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    FUZZ_CHECK(p != NULL);
    if (n)
        memcpy(p, data, n);
    return p;
}

#endif
