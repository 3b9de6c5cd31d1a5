/* jscan.h - a strict JSON scanner for KServe v2 bodies: checks a whole document without building a
 * tree, finds inputs[0].data and bounds what it holds, and reads the data's values one by one.
 *
 * jansson builds one heap node per value (about 40 bytes and a malloc each): a 64 MB body of
 * numbers would become gigabytes of tree before anything could say it does not fit the model. So
 * the server reads a request in three steps, none of which allocates anything sized by the data:
 *
 *     jscan_doc d;
 *     jscan_document(body, len, max_data_values, &d, err, errlen);  // the whole body, once
 *     ... jansson reads the rest (the "envelope") with the data array blanked out ...
 *     ... the data is checked against the declared shape, then converted value by value ...
 *
 * jscan_document() accepts exactly what jansson's json_loadb() accepts for a request (RFC 8259,
 * an object or array at the top, no "\u0000", no lone surrogates, real numbers within double),
 * with one deliberate difference: an integer past int64 inside the data array is a number like any
 * other (jansson refuses it as "too big integer"; a float input may hold one). Errors read as
 * jansson's do: "invalid JSON at line L, column C: <what>".
 *
 * Everything takes a byte view and never reads past it; it is fuzzed through infer_request_parse.
 */
#ifndef CONVSERVE_JSCAN_H
#define CONVSERVE_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonkind.h"
#include "status.h"

enum {
    JSCAN_MAX_DEPTH = 2048,             /* nesting, as jansson's JSON_PARSER_MAX_DEPTH */
    JSCAN_MAX_ENVELOPE_VALUES = 4096,   /* values outside inputs[0].data */
    JSCAN_MAX_ENVELOPE_BYTES = 1 << 20, /* bytes outside inputs[0].data */
};

typedef struct {
    bool has_data;          /* inputs[0].data exists and is an array */
    size_t begin, end;      /* its bytes: body[begin] == '[', body[end - 1] == ']' */
    size_t data_values;     /* values inside it, nested arrays included */
    size_t data_elems;      /* its own elements (the count of a flat array) */
    size_t envelope_values; /* values outside it */
} jscan_doc;

/* Checks body[0, len) and locates inputs[0].data (the first "inputs" member of the top object, its
 * first element, that element's first "data" member). SRV_BAD_REQUEST with a message for invalid
 * JSON, for more than max_data_values values inside the data array (checked as they are met, so a
 * huge array is refused after max_data_values of them), and for an envelope past
 * JSCAN_MAX_ENVELOPE_VALUES or JSCAN_MAX_ENVELOPE_BYTES. */
srv_status jscan_document(const char *body, size_t len, size_t max_data_values, jscan_doc *d,
                          char *err, size_t errlen);

/* ---- reading a span that jscan_document() has checked ------------------------------------ */

/* The kind of the value at p (p past any white space). */
jsonkind jscan_kind(const char *p, const char *end);
/* Past white space. */
const char *jscan_ws(const char *p, const char *end);
/* Past the value at p. */
const char *jscan_skip(const char *p, const char *end);
/* At '[': past it and its white space. Then jscan_next(&p, end, &first) moves to each element in
 * turn (p on the element) and returns false at the closing ']' (p past it). */
const char *jscan_enter(const char *p, const char *end);
bool jscan_next(const char **p, const char *end, bool *first);
/* The elements of the array at p. */
size_t jscan_count(const char *p, const char *end);

/* A number token: its text, and its value as a double (correctly rounded, +-inf past double's
 * range). Integers (no fraction or exponent) also give their magnitude, when it fits 64 bits. */
typedef struct {
    const char *text;
    size_t len;
    double value;
    bool integer; /* no '.', 'e' or 'E' */
    bool negative;
    bool fits_u64; /* integer and |value| <= UINT64_MAX: magnitude is exact */
    uint64_t magnitude;
} jscan_number;
/* Reads the number at p; returns the end of its token. */
const char *jscan_read_number(const char *p, const char *end, jscan_number *n);

/* The raw bytes between the quotes of the string at p (escapes not decoded), and its end. */
const char *jscan_string_span(const char *p, const char *end, const char **s, size_t *n);
/* Decodes the escapes of a string's raw bytes into out (room for n bytes: decoding never grows),
 * returning the decoded length. */
size_t jscan_string_decode(const char *s, size_t n, char *out);

#endif
