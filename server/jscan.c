/* jscan.c - one strict pass over a JSON document, and readers for the spans it has checked. */
#include "jscan.h"
#include "text.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    JSCAN_KEY_MAX = 8,           /* longest member name that has a role ("inputs") */
    JSCAN_HEX_DIGITS = 4,        /* of a \uXXXX escape */
    JSCAN_MAX_EXACT_DIGITS = 19, /* decimal digits that always fit a uint64_t */
    JSCAN_SIG_DIGITS = 40, /* significant digits kept for strtod (more cannot change a double) */
    JSCAN_NUM_BUF = JSCAN_SIG_DIGITS + 32,
    JSCAN_DOUBLE_MAX_EXP10 = 309, /* 1e309 is past DBL_MAX */
};

/* Exact powers of ten for the fast conversion: every 10^k with k <= 22 is a double. */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
#define POW10_EXACT_MAX ((int)(sizeof pow10_exact / sizeof pow10_exact[0]) - 1)

/* What a container means on the way to inputs[0].data. */
typedef enum { ROLE_NONE, ROLE_ROOT, ROLE_INPUTS, ROLE_INPUT0, ROLE_DATA, ROLE_IN_DATA } role;

typedef struct {
    char close; /* '}' or ']' */
    unsigned char role;
    size_t index; /* elements or members so far */
} frame;

typedef struct {
    const char *base, *p, *end;
    size_t max_data_values;
    jscan_doc *d;
    char *err;
    size_t errlen;
    frame *stack;
    int depth;
    bool seen_inputs, seen_data;
    role value_role; /* the role the next value gets if it is an array or object */
} scanner;

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_delimiter(char c)
{
    return is_ws(c) || c == ',' || c == ']' || c == '}';
}

const char *jscan_ws(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* "invalid JSON at line L, column C: <what>", with the position of p. */
static srv_status syntax_error(const scanner *s, const char *at, const char *what)
{
    int line = 1;
    const char *line_start = s->base;
    for (const char *q = s->base; q < at && q < s->end; q++) {
        if (*q == '\n') {
            line++;
            line_start = q + 1;
        }
    }
    return srv_fail(s->err, s->errlen, SRV_BAD_REQUEST, "invalid JSON at line %d, column %zu: %s",
                    line, (size_t)(at - line_start) + 1, what);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (p + 4 <= end checked by the caller), or -1. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < JSCAN_HEX_DIGITS; i++) {
        int h = hex_value(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Checks the string at s->p ('"'); leaves s->p past it. *key gets the decoded value when it is
 * short and has no escapes beyond the simple ones (enough to compare with member names). */
static srv_status scan_string(scanner *s, char *key, size_t keycap)
{
    const char *p = s->p + 1, *end = s->end;
    size_t kn = 0;
    bool key_ok = key != NULL;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c == '\\') {
            if (p + 1 >= end)
                return syntax_error(s, end, "premature end of input");
            char e = p[1];
            char plain = e == '"' || e == '\\' || e == '/' ? e
                         : e == 'b'                        ? '\b'
                         : e == 'f'                        ? '\f'
                         : e == 'n'                        ? '\n'
                         : e == 'r'                        ? '\r'
                         : e == 't'                        ? '\t'
                                                           : 0;
            if (plain) {
                if (key_ok && kn < keycap)
                    key[kn] = plain;
                kn++;
                p += 2;
                continue;
            }
            if (e != 'u')
                return syntax_error(s, p, "invalid escape");
            if (end - p < 2 + JSCAN_HEX_DIGITS || hex4(p + 2) < 0)
                return syntax_error(s, p, "invalid escape");
            long u = hex4(p + 2);
            p += 2 + JSCAN_HEX_DIGITS;
            if (u == 0)
                return syntax_error(s, p, "\\u0000 is not allowed without JSON_ALLOW_NUL");
            if (u >= 0xdc00 && u <= 0xdfff)
                return syntax_error(s, p, "invalid Unicode: a lone low surrogate");
            if (u >= 0xd800 && u <= 0xdbff) {
                long lo = -1;
                if (end - p >= 2 + JSCAN_HEX_DIGITS && p[0] == '\\' && p[1] == 'u')
                    lo = hex4(p + 2);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return syntax_error(s, p, "invalid Unicode: a high surrogate without its pair");
                p += 2 + JSCAN_HEX_DIGITS;
            }
            /* Member names with a role are ASCII, which an escape may spell too. */
            if (key_ok && u < 0x80 && kn < keycap)
                key[kn] = (char)u;
            kn++;
            key_ok = key_ok && u < 0x80;
            continue;
        }
        if (c < 0x20)
            return syntax_error(s, p, "control character in a string");
        size_t bad, len = text_utf8_sequence((const unsigned char *)p, (size_t)(end - p), &bad);
        if (len == 0)
            return syntax_error(s, p, "a string is not valid UTF-8");
        if (key_ok && kn < keycap)
            key[kn] = (char)c;
        kn += len;
        key_ok = key_ok && len == 1;
        p += len;
    }
    if (p >= end)
        return syntax_error(s, end, "premature end of input");
    s->p = p + 1;
    if (key)
        key[key_ok && kn < keycap ? kn : 0] = 0;
    return SRV_OK;
}

/* The number token at p: its grammar (RFC 8259), end, and whether it is an integer. Also an
 * estimate of its decimal exponent (the value is below 10^exp10), for the overflow check. */
static const char *number_token(const char *p, const char *end, bool *integer, long *exp10,
                                const char **bad)
{
    const char *q = p;
    long int_digits = 0, lead_zeros = 0;
    bool nonzero = false;
    *integer = true;
    if (q < end && *q == '-')
        q++;
    if (q >= end || !is_digit(*q)) {
        *bad = "invalid token";
        return NULL;
    }
    if (*q == '0') {
        q++;
    } else {
        nonzero = true;
        while (q < end && is_digit(*q)) {
            int_digits++;
            q++;
        }
    }
    if (q < end && *q == '.') {
        *integer = false;
        q++;
        if (q >= end || !is_digit(*q)) {
            *bad = "invalid token";
            return NULL;
        }
        while (q < end && is_digit(*q)) {
            if (!nonzero && *q == '0')
                lead_zeros++;
            else
                nonzero = true;
            q++;
        }
    }
    long e = 0;
    if (q < end && (*q == 'e' || *q == 'E')) {
        *integer = false;
        q++;
        int sign = 1;
        if (q < end && (*q == '+' || *q == '-'))
            sign = *q++ == '-' ? -1 : 1;
        if (q >= end || !is_digit(*q)) {
            *bad = "invalid token";
            return NULL;
        }
        while (q < end && is_digit(*q)) {
            if (e < LONG_MAX / 20)
                e = e * 10 + (*q - '0');
            q++;
        }
        e *= sign;
    }
    if (q < end && !is_delimiter(*q)) {
        *bad = "invalid token";
        return NULL;
    }
    *exp10 = !nonzero ? LONG_MIN : (int_digits > 0 ? int_digits : -lead_zeros) + e;
    return q;
}

/* The slow, always exact conversion: the first JSCAN_SIG_DIGITS significant digits, a sticky 1
 * for any non-zero digit dropped after them (so that rounding sees it), and the exponent, given to
 * strtod, which rounds that exactly as it would the whole token. */
static double slow_value(const char *p, const char *q)
{
    char sig[JSCAN_NUM_BUF];
    int n = 0;
    long e10 = 0, exp = 0;
    bool fraction = false, dropped = false;
    for (; p < q; p++) {
        char c = *p;
        if (c == '-')
            continue;
        if (c == '.') {
            fraction = true;
            continue;
        }
        if (c == 'e' || c == 'E') {
            int sign = 1;
            p++;
            if (*p == '+' || *p == '-')
                sign = *p++ == '-' ? -1 : 1;
            for (; p < q; p++)
                if (exp < LONG_MAX / 20)
                    exp = exp * 10 + (*p - '0');
            exp *= sign;
            break;
        }
        if (n == 0 && c == '0') {
            e10 -= fraction;
            continue;
        }
        if (n < JSCAN_SIG_DIGITS) {
            sig[n++] = c;
            e10 -= fraction;
        } else {
            dropped = dropped || c != '0';
            e10 += !fraction;
        }
    }
    if (n == 0)
        return 0.0;
    if (dropped) {
        sig[n++] = '1';
        e10--;
    }
    long total = e10 + exp;
    if (total < -100000)
        total = -100000;
    if (total > 100000)
        total = 100000;
    snprintf(sig + n, sizeof sig - (size_t)n, "e%ld", total);
    return strtod(sig, NULL);
}

const char *jscan_read_number(const char *p, const char *end, jscan_number *n)
{
    /* One pass over a checked token: the digits (as many as fit 19) and the exponent. */
    const char *q = p;
    n->text = p;
    n->negative = *q == '-';
    q += n->negative;
    uint64_t mant = 0;
    int digits = 0, frac_digits = 0;
    bool exact = true, fraction = false;
    n->integer = true;
    for (; q < end; q++) {
        char c = *q;
        if (is_digit(c)) {
            if (digits < JSCAN_MAX_EXACT_DIGITS) {
                mant = mant * 10 + (uint64_t)(c - '0');
                digits += mant != 0;
                frac_digits += fraction;
            } else {
                exact = false;
            }
        } else if (c == '.') {
            fraction = true;
            n->integer = false;
        } else {
            break;
        }
    }
    long exp = 0;
    if (q < end && (*q == 'e' || *q == 'E')) {
        n->integer = false;
        q++;
        int sign = 1;
        if (*q == '+' || *q == '-')
            sign = *q++ == '-' ? -1 : 1;
        for (; q < end && is_digit(*q); q++)
            if (exp < LONG_MAX / 20)
                exp = exp * 10 + (*q - '0');
        exp *= sign;
    }
    n->len = (size_t)(q - p);
    long total = exp - frac_digits;
    if (exact && (mant == 0 || (mant < (UINT64_C(1) << 53) && total >= -POW10_EXACT_MAX &&
                                total <= POW10_EXACT_MAX))) {
        /* One correctly rounded operation on exact operands. */
        double v = mant == 0   ? 0.0
                   : total < 0 ? (double)mant / pow10_exact[-total]
                               : (double)mant * pow10_exact[total];
        n->value = n->negative ? -v : v;
    } else {
        double v = slow_value(p, q);
        n->value = n->negative ? -v : v;
    }
    n->fits_u64 = false;
    n->magnitude = 0;
    if (n->integer) {
        /* The exact magnitude, when it fits: an integer token is only digits. */
        uint64_t m = 0;
        bool fits = true;
        for (const char *r = p + n->negative; r < q; r++) {
            unsigned d = (unsigned)(*r - '0');
            if (m > (UINT64_MAX - d) / 10) {
                fits = false;
                break;
            }
            m = m * 10 + d;
        }
        n->fits_u64 = fits;
        n->magnitude = fits ? m : 0;
    }
    return q;
}

/* Checks the value at s->p and everything in it, leaving s->p past it. */
static srv_status scan_value(scanner *s);

static srv_status count_value(scanner *s)
{
    bool in_data = s->depth > 0 && (s->stack[s->depth - 1].role == ROLE_DATA ||
                                    s->stack[s->depth - 1].role == ROLE_IN_DATA);
    if (in_data) {
        if (++s->d->data_values > s->max_data_values)
            return srv_fail(s->err, s->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data has more than %zu values, more than the model takes",
                            s->max_data_values);
    } else if (++s->d->envelope_values > JSCAN_MAX_ENVELOPE_VALUES) {
        return srv_fail(s->err, s->errlen, SRV_BAD_REQUEST,
                        "the request has more than %d JSON values outside inputs[0].data",
                        JSCAN_MAX_ENVELOPE_VALUES);
    }
    return SRV_OK;
}

static srv_status push(scanner *s, char open, role r)
{
    if (s->depth == JSCAN_MAX_DEPTH)
        return syntax_error(s, s->p, "maximum parsing depth reached");
    s->stack[s->depth].close = open == '{' ? '}' : ']';
    s->stack[s->depth].role = (unsigned char)r;
    s->stack[s->depth].index = 0;
    s->depth++;
    if (r == ROLE_DATA) {
        s->d->has_data = true;
        s->d->begin = (size_t)(s->p - s->base);
    }
    s->p++;
    return SRV_OK;
}

/* The role of a container that opens as the value now expected. */
static role child_role(const scanner *s, char open)
{
    if (s->depth == 0)
        return open == '{' ? ROLE_ROOT : ROLE_NONE;
    const frame *f = &s->stack[s->depth - 1];
    if (f->role == ROLE_DATA || f->role == ROLE_IN_DATA)
        return ROLE_IN_DATA;
    if (f->role == ROLE_INPUTS && f->index == 0 && open == '{')
        return ROLE_INPUT0;
    if ((f->role == ROLE_ROOT || f->role == ROLE_INPUT0) && open == '[')
        return s->value_role;
    return ROLE_NONE;
}

static srv_status scan_value(scanner *s)
{
    srv_status st;
    s->p = jscan_ws(s->p, s->end);
    if (s->p >= s->end)
        return syntax_error(s, s->end, "premature end of input");
    char c = *s->p;
    if ((st = count_value(s)) != SRV_OK)
        return st;
    if (c == '{' || c == '[')
        return push(s, c, child_role(s, c));
    if (c == '"')
        return scan_string(s, NULL, 0);
    static const char *const literals[] = {"true", "false", "null"};
    for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++) {
        size_t n = strlen(literals[i]);
        if (c == literals[i][0]) {
            if ((size_t)(s->end - s->p) < n || memcmp(s->p, literals[i], n) ||
                ((size_t)(s->end - s->p) > n && !is_delimiter(s->p[n])))
                return syntax_error(s, s->p, "invalid token");
            s->p += n;
            return SRV_OK;
        }
    }
    bool integer;
    long exp10;
    const char *bad = NULL;
    const char *q = number_token(s->p, s->end, &integer, &exp10, &bad);
    if (!q)
        return syntax_error(s, s->p, bad);
    if (!integer && exp10 >= JSCAN_DOUBLE_MAX_EXP10 - 1) {
        jscan_number n;
        jscan_read_number(s->p, s->end, &n);
        if (isinf(n.value))
            return syntax_error(s, s->p, "real number overflow");
    }
    s->p = q;
    return SRV_OK;
}

srv_status jscan_document(const char *body, size_t len, size_t max_data_values, jscan_doc *d,
                          char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    scanner s = {.base = body,
                 .p = body,
                 .end = body + len,
                 .max_data_values = max_data_values,
                 .d = d,
                 .err = err,
                 .errlen = errlen};
    s.stack = malloc(JSCAN_MAX_DEPTH * sizeof *s.stack);
    if (!s.stack)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    srv_status st = SRV_OK;
    s.p = jscan_ws(s.p, s.end);
    if (s.p >= s.end || (*s.p != '{' && *s.p != '[')) {
        st = syntax_error(&s, s.p, "'[' or '{' expected");
        goto done;
    }
    if ((st = scan_value(&s)) != SRV_OK)
        goto done;
    while (s.depth > 0) {
        frame *f = &s.stack[s.depth - 1];
        s.p = jscan_ws(s.p, s.end);
        if (s.p >= s.end) {
            st = syntax_error(&s, s.end, "premature end of input");
            goto done;
        }
        if (*s.p == f->close) {
            /* The end of an empty container, or of one after its last value. */
            if (f->role == ROLE_DATA) {
                d->end = (size_t)(s.p - body) + 1;
                d->data_elems = f->index;
            }
            s.p++;
            s.depth--;
            continue;
        }
        if (f->index > 0) {
            /* After a value: a comma, then the next one (a trailing comma is refused below). */
            if (*s.p != ',') {
                st = syntax_error(&s, s.p,
                                  f->close == '}' ? "'}' or ',' expected" : "']' or ',' expected");
                goto done;
            }
            s.p = jscan_ws(s.p + 1, s.end);
            if (s.p >= s.end) {
                st = syntax_error(&s, s.end, "premature end of input");
                goto done;
            }
        }
        s.value_role = ROLE_NONE;
        if (f->close == '}') {
            char key[JSCAN_KEY_MAX + 1];
            if (s.p >= s.end || *s.p != '"') {
                st = syntax_error(&s, s.p, "string expected");
                goto done;
            }
            if ((st = scan_string(&s, key, JSCAN_KEY_MAX)) != SRV_OK)
                goto done;
            s.p = jscan_ws(s.p, s.end);
            if (s.p >= s.end || *s.p != ':') {
                st = syntax_error(&s, s.p, "':' expected");
                goto done;
            }
            s.p++;
            if (f->role == ROLE_ROOT && !s.seen_inputs && !strcmp(key, "inputs")) {
                s.seen_inputs = true;
                s.value_role = ROLE_INPUTS;
            } else if (f->role == ROLE_INPUT0 && !s.seen_data && !strcmp(key, "data")) {
                s.seen_data = true;
                s.value_role = ROLE_DATA;
            }
        } else if (*s.p == ']') {
            st = syntax_error(&s, s.p, "value expected");
            goto done;
        }
        /* The value's role was decided from f->index: count it only now. */
        if ((st = scan_value(&s)) != SRV_OK)
            goto done;
        f->index++;
    }
    s.p = jscan_ws(s.p, s.end);
    if (s.p < s.end) {
        st = syntax_error(&s, s.p, "end of file expected");
        goto done;
    }
    if (len - (d->end - d->begin) > JSCAN_MAX_ENVELOPE_BYTES)
        st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                      "the request has %zu bytes of JSON outside inputs[0].data; the limit is %d",
                      len - (d->end - d->begin), JSCAN_MAX_ENVELOPE_BYTES);
done:
    free(s.stack);
    return st;
}

/* ---- reading checked spans ---------------------------------------------------------------- */

jsonkind jscan_kind(const char *p, const char *end)
{
    if (p >= end)
        return JSONKIND_NULL;
    switch (*p) {
    case '{':
        return JSONKIND_OBJECT;
    case '[':
        return JSONKIND_ARRAY;
    case '"':
        return JSONKIND_STRING;
    case 't':
    case 'f':
        return JSONKIND_BOOLEAN;
    case 'n':
        return JSONKIND_NULL;
    default:
        break;
    }
    for (const char *q = p; q < end && !is_delimiter(*q); q++)
        if (*q == '.' || *q == 'e' || *q == 'E')
            return JSONKIND_REAL;
    return JSONKIND_INTEGER;
}

const char *jscan_string_span(const char *p, const char *end, const char **s, size_t *n)
{
    const char *q = p + 1;
    while (q < end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    *s = p + 1;
    *n = (size_t)(q - (p + 1));
    return q < end ? q + 1 : end;
}

const char *jscan_skip(const char *p, const char *end)
{
    if (p >= end)
        return end;
    if (*p == '"') {
        const char *s;
        size_t n;
        return jscan_string_span(p, end, &s, &n);
    }
    if (*p != '[' && *p != '{') {
        while (p < end && !is_delimiter(*p))
            p++;
        return p;
    }
    /* A checked container: brackets balance outside strings. */
    size_t depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            const char *s;
            size_t n;
            p = jscan_string_span(p, end, &s, &n);
            continue;
        }
        if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (--depth == 0)
                return p + 1;
        }
        p++;
    }
    return end;
}

const char *jscan_enter(const char *p, const char *end)
{
    return jscan_ws(p + 1, end);
}

bool jscan_next(const char **p, const char *end, bool *first)
{
    const char *q = jscan_ws(*p, end);
    if (!*first && q < end && *q == ',')
        q = jscan_ws(q + 1, end);
    if (q >= end || *q == ']') {
        *p = q < end ? q + 1 : end;
        return false;
    }
    *first = false;
    *p = q;
    return true;
}

size_t jscan_count(const char *p, const char *end)
{
    size_t n = 0;
    bool first = true;
    p = jscan_enter(p, end);
    while (jscan_next(&p, end, &first)) {
        n++;
        p = jscan_skip(p, end);
    }
    return n;
}

size_t jscan_string_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            out[o++] = s[i++];
            continue;
        }
        char e = s[i + 1];
        if (e != 'u') {
            out[o++] = e == 'b'   ? '\b'
                       : e == 'f' ? '\f'
                       : e == 'n' ? '\n'
                       : e == 'r' ? '\r'
                       : e == 't' ? '\t'
                                  : e;
            i += 2;
            continue;
        }
        /* \uXXXX (a pair for astral characters, checked by jscan_document) to UTF-8: at most 4
         * bytes for the 6 or 12 it replaces. */
        unsigned long u = (unsigned long)hex4(s + i + 2);
        i += 2 + JSCAN_HEX_DIGITS;
        if (u >= 0xd800 && u <= 0xdbff && i + 2 + JSCAN_HEX_DIGITS <= n) {
            unsigned long lo = (unsigned long)hex4(s + i + 2);
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            i += 2 + JSCAN_HEX_DIGITS;
        }
        if (u < 0x80) {
            out[o++] = (char)u;
        } else if (u < 0x800) {
            out[o++] = (char)(0xc0 | (u >> 6));
            out[o++] = (char)(0x80 | (u & 0x3f));
        } else if (u < 0x10000) {
            out[o++] = (char)(0xe0 | (u >> 12));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (u & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (u >> 18));
            out[o++] = (char)(0x80 | ((u >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (u & 0x3f));
        }
    }
    return o;
}
