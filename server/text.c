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

void text_json_string(text *t, const char *s, size_t n)
{
    if (!reserve(t, n + 2))
        return;
    t->p[t->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            text_append(t, e, 2);
        } else if (c < 0x20) {
            text_put(t, "\\u%04x", c);
        } else {
            text_append(t, &s[i], 1);
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
