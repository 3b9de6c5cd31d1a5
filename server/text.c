/* text.c - the response builder: printf-style appends into a buffer that grows as needed. */
#include "text.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TEXT_MIN_CAP = 1024 };

static bool reserve(text *t, size_t extra)
{
    if (t->failed)
        return false;
    if (t->cap - t->len > extra)
        return true;
    size_t cap = t->cap ? t->cap : TEXT_MIN_CAP;
    while (cap - t->len <= extra) {
        if (cap > ((size_t)-1) / 2) {
            t->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(t->p, cap);
    if (!p) {
        t->failed = true;
        return false;
    }
    t->p = p;
    t->cap = cap;
    return true;
}

void text_put(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(t, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void text_append(text *t, const void *bytes, size_t n)
{
    if (!reserve(t, n + 1))
        return;
    memcpy(t->p + t->len, bytes, n);
    t->len += n;
    t->p[t->len] = 0;
}

size_t text_utf8_sequence(const unsigned char *s, size_t n, size_t *bad)
{
    /* RFC 3629: the second byte's range depends on the first, which rules out overlong forms,
     * surrogates and code points past U+10FFFF; later bytes are 80..BF. */
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80) {
        *bad = 0;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        *bad = 1;
        return 0;
    }
    /* The maximal valid prefix of a broken sequence is replaced as one unit (Unicode 15, 3.9). */
    for (size_t i = 1; i < len; i++) {
        unsigned char b = i < n ? s[i] : 0;
        bool ok = i == 1 ? b >= lo && b <= hi : b >= 0x80 && b <= 0xbf;
        if (i >= n || !ok) {
            *bad = i;
            return 0;
        }
    }
    *bad = 0;
    return len;
}

void text_json_string(text *t, const char *s, size_t n)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD in UTF-8 */
    if (!reserve(t, n + 2))
        return;
    t->p[t->len++] = '"';
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        size_t bad, len = text_utf8_sequence(u + i, n - i, &bad);
        if (len == 0) {
            /* Not UTF-8: request bytes quoted in a message must not make the answer invalid
             * JSON, so they become U+FFFD, as a lenient decoder would show them. */
            text_append(t, replacement, sizeof replacement - 1);
            i += bad;
        } else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            text_append(t, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            text_put(t, "\\u%04x", c);
            i++;
        } else {
            text_append(t, &s[i], len);
            i += len;
        }
    }
    text_append(t, "\"", 1);
}

void text_json_float(text *t, float x)
{
    enum { FLOAT_TEXT = 32 };
    if (!isfinite(x)) {
        text_append(t, "null", 4);
        return;
    }
    if (!reserve(t, FLOAT_TEXT))
        return;
    t->len += (size_t)snprintf(t->p + t->len, FLOAT_TEXT, "%.9g", (double)x);
}

char *text_take(text *t, size_t *len)
{
    if (t->failed || !reserve(t, 1)) {
        text_free(t);
        return NULL;
    }
    t->p[t->len] = 0;
    char *p = t->p;
    *len = t->len;
    t->p = NULL;
    t->len = t->cap = 0;
    return p;
}

void text_free(text *t)
{
    free(t->p);
    t->p = NULL;
    t->len = t->cap = 0;
}
