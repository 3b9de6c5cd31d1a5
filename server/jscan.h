/* jscan.h - finds inputs[0].data in a KServe v2 JSON body and parses its numbers without a tree.
 *
 * jansson builds one heap node per number (about 32 bytes and a malloc each), which for a
 * 37,632-float tensor costs far more than the network does. This scanner walks the body once,
 * finds the span of the first input's "data" array, and parses its numbers straight into a float
 * buffer. It is strict (RFC 8259 numbers only, rectangular nesting) and gives up on anything else;
 * the caller then takes the jansson path, so malformed input gets exactly the same error either
 * way.
 *
 *     jscan_data d;
 *     if (jscan_find_data(body, len, &d) && jscan_parse_numbers(body, &d, &values, &n)) ...
 *
 * Never reads outside the byte view; it is fuzzed through infer_request_parse.
 */
#ifndef CONVSERVE_JSCAN_H
#define CONVSERVE_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { JSCAN_MAX_DEPTH = 64, JSCAN_MAX_RANK = 8 };

typedef struct {
    size_t begin, end; /* the data array's bytes: body[begin] == '[', body[end - 1] == ']' */
    int depth;         /* nesting of the numbers: 1 for a flat array */
    int64_t dims[JSCAN_MAX_RANK]; /* entries per level, when rectangular */
    size_t count;                 /* numbers */
} jscan_data;

/* Locates the start of inputs[0].data (d->begin; d->end is set by jscan_parse_numbers). False when
 * the body is not the expected shape of JSON (the caller falls back to the full parser, which
 * reports the problem). */
bool jscan_find_data(const char *body, size_t len, jscan_data *d);

/* Parses the array at d->begin, sets d->end one past its closing bracket, and puts its numbers into
 * a malloc'd float array (d->count of them) and fills depth, dims and count. False, with nothing
 * allocated, for anything but rectangular arrays of numbers. */
bool jscan_parse_numbers(const char *body, jscan_data *d, float **values);

#endif
