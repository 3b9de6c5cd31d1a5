/* jscan.c - a strict single-pass scanner for the big number array of a KServe v2 request. */
#include "jscan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end;
    int depth;
} scanner;

static void skip_ws(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* Skips a string starting at '"'; sets *plain when it has no escapes (so memcmp can match it). */
static bool skip_string(scanner *s, const char **start, size_t *len, bool *plain)
{
    if (s->p >= s->end || *s->p != '"')
        return false;
    const char *b = ++s->p;
    *plain = true;
    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\') {
            *plain = false;
            if (++s->p >= s->end)
                return false;
        }
        s->p++;
    }
    if (s->p >= s->end)
        return false;
    *start = b;
    *len = (size_t)(s->p - b);
    s->p++;
    return true;
}

static bool skip_value(scanner *s);

static bool skip_container(scanner *s, char open, char close)
{
    if (++s->depth > JSCAN_MAX_DEPTH)
        return false;
    s->p++; /* the opening bracket */
    skip_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return true;
    }
    for (;;) {
        if (open == '{') {
            const char *k;
            size_t kl;
            bool plain;
            if (!skip_string(s, &k, &kl, &plain))
                return false;
            skip_ws(s);
            if (s->p >= s->end || *s->p++ != ':')
                return false;
        }
        if (!skip_value(s))
            return false;
        skip_ws(s);
        if (s->p >= s->end)
            return false;
        if (*s->p == ',') {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (*s->p++ != close)
            return false;
        s->depth--;
        return true;
    }
}

static bool skip_value(scanner *s)
{
    skip_ws(s);
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{':
        return skip_container(s, '{', '}');
    case '[':
        return skip_container(s, '[', ']');
    case '"': {
        const char *k;
        size_t kl;
        bool plain;
        return skip_string(s, &k, &kl, &plain);
    }
    default:
        /* A number or literal: the full parser checks its spelling later. */
        while (s->p < s->end && *s->p != ',' && *s->p != '}' && *s->p != ']' && *s->p != ' ' &&
               *s->p != '\n' && *s->p != '\r' && *s->p != '\t')
            s->p++;
        return true;
    }
}

static bool key_is(const char *k, size_t kl, bool plain, const char *want)
{
    return plain && kl == strlen(want) && !memcmp(k, want, kl);
}

/* In the object at s->p, finds the value of `key` and leaves s->p on it. */
static bool find_key(scanner *s, const char *key)
{
    skip_ws(s);
    if (s->p >= s->end || *s->p != '{')
        return false;
    s->p++;
    for (;;) {
        skip_ws(s);
        const char *k;
        size_t kl;
        bool plain;
        if (!skip_string(s, &k, &kl, &plain))
            return false;
        skip_ws(s);
        if (s->p >= s->end || *s->p++ != ':')
            return false;
        skip_ws(s);
        if (key_is(k, kl, plain, key))
            return true;
        if (!skip_value(s))
            return false;
        skip_ws(s);
        if (s->p >= s->end || *s->p++ != ',')
            return false;
    }
}

bool jscan_find_data(const char *body, size_t len, jscan_data *d)
{
    scanner s = {body, body + len, 0};
    memset(d, 0, sizeof *d);
    if (!find_key(&s, "inputs"))
        return false;
    if (s.p >= s.end || *s.p != '[')
        return false;
    s.p++;
    if (!find_key(&s, "data"))
        return false;
    if (s.p >= s.end || *s.p != '[')
        return false;
    /* The array's end is found by jscan_parse_numbers, in the same pass as its numbers. */
    d->begin = (size_t)(s.p - body);
    d->end = len;
    return true;
}

/* Exact powers of ten for the fast conversion: every 10^k with k <= 22 is a double. */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Parses one JSON number (RFC 8259 grammar, strictly) at s->p into *out. */
static bool parse_number(scanner *s, float *out)
{
    enum { MAX_EXACT_DIGITS = 19, SLOW_BUF = 64 };
    const char *b = s->p, *p = s->p, *e = s->end;
    bool neg = false;
    if (p < e && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= e || *p < '0' || *p > '9')
        return false;
    uint64_t mant = 0;
    int digits = 0, exp10 = 0;
    if (*p == '0') {
        p++;
    } else {
        while (p < e && *p >= '0' && *p <= '9') {
            if (digits < MAX_EXACT_DIGITS)
                mant = mant * 10 + (uint64_t)(*p - '0');
            else
                exp10++;
            digits += mant != 0;
            p++;
        }
    }
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return false;
        while (p < e && *p >= '0' && *p <= '9') {
            if (digits < MAX_EXACT_DIGITS) {
                mant = mant * 10 + (uint64_t)(*p - '0');
                exp10--;
                digits += mant != 0;
            }
            p++;
        }
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        int esign = 1, ev = 0;
        if (p < e && (*p == '+' || *p == '-'))
            esign = *p++ == '-' ? -1 : 1;
        if (p >= e || *p < '0' || *p > '9')
            return false;
        while (p < e && *p >= '0' && *p <= '9') {
            if (ev < 100000)
                ev = ev * 10 + (*p - '0');
            p++;
        }
        exp10 += esign * ev;
    }
    double v;
    if (mant == 0) {
        v = 0.0;
    } else if (mant < (UINT64_C(1) << 53) && exp10 >= -22 && exp10 <= 22) {
        /* One correctly rounded double operation, then the conversion to float. */
        v = exp10 < 0 ? (double)mant / pow10_exact[-exp10] : (double)mant * pow10_exact[exp10];
    } else {
        char buf[SLOW_BUF];
        size_t n = (size_t)(p - b);
        if (n >= sizeof buf)
            return false;
        memcpy(buf, b, n);
        buf[n] = 0;
        v = strtod(buf, NULL);
        neg = false; /* strtod saw the sign */
    }
    if (!isfinite(v) || !isfinite((float)v))
        return false; /* jansson refuses these too ("real number overflow") */
    *out = (float)(neg ? -v : v);
    s->p = p;
    return true;
}

bool jscan_parse_numbers(const char *body, jscan_data *d, float **values)
{
    scanner s = {body + d->begin, body + d->end, 0};
    /* Every number takes at least one byte and one separator: a safe upper bound. */
    size_t cap = (d->end - d->begin) / 2 + 1;
    float *v = malloc(cap * sizeof *v);
    if (!v)
        return false;
    size_t n = 0;
    int depth = 0, leaf_depth = -1;
    int64_t count[JSCAN_MAX_RANK + 1] = {0};
    int64_t dims[JSCAN_MAX_RANK + 1] = {0};
    bool dims_known[JSCAN_MAX_RANK + 1] = {false};

    for (;;) {
        skip_ws(&s);
        if (s.p >= s.end)
            goto fail;
        char c = *s.p;
        if (c == '[') {
            if (depth == JSCAN_MAX_RANK || (leaf_depth >= 0 && depth >= leaf_depth))
                goto fail;
            depth++;
            count[depth] = 0;
            s.p++;
            skip_ws(&s);
            if (s.p < s.end && *s.p == ']')
                goto fail; /* empty levels: leave them to the full parser */
            continue;
        }
        if (c == ']') {
            goto close;
        }
        /* A number: only at one consistent depth. */
        if (leaf_depth < 0)
            leaf_depth = depth;
        if (depth != leaf_depth || n == cap || !parse_number(&s, &v[n]))
            goto fail;
        n++;
        count[depth]++;
    after_value:
        skip_ws(&s);
        if (s.p >= s.end)
            goto fail;
        if (*s.p == ',') {
            s.p++;
            continue;
        }
        if (*s.p != ']')
            goto fail;
    close:
        s.p++;
        /* Every array at one level must have the same length (rectangular). */
        if (dims_known[depth] && dims[depth] != count[depth])
            goto fail;
        dims[depth] = count[depth];
        dims_known[depth] = true;
        depth--;
        if (depth == 0)
            break;
        count[depth]++;
        goto after_value;
    }
    if (leaf_depth < 1)
        goto fail;
    d->end = (size_t)(s.p - body);
    d->depth = leaf_depth;
    for (int i = 0; i < leaf_depth; i++)
        d->dims[i] = dims[i + 1];
    d->count = n;
    *values = v;
    return true;
fail:
    free(v);
    return false;
}
