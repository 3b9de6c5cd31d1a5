/* text.h - a growable byte buffer for building responses, with JSON string escaping. */
#ifndef CONVSERVE_TEXT_H
#define CONVSERVE_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Zero-initialise to start. After an allocation failure every call is a no-op and text_take
 * returns NULL, so callers check once at the end. */
typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} text;

void text_put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void text_append(text *t, const void *bytes, size_t n);
/* Appends s (n bytes) as a quoted JSON string, escaping quotes, backslashes and control bytes;
 * bytes that are not UTF-8 become U+FFFD, so the result is valid JSON whatever s holds. */
void text_json_string(text *t, const char *s, size_t n);
/* The length of the UTF-8 sequence starting at s (n > 0 bytes available), or 0 when it is not
 * valid UTF-8: then *bad is how many bytes to replace with one U+FFFD (the maximal valid prefix, at
 * least 1). */
size_t text_utf8_sequence(const unsigned char *s, size_t n, size_t *bad);
/* Appends a float the way JSON wants it: %.9g (round-trips any float), null for NaN or inf. */
void text_json_float(text *t, float x);
/* Hands the buffer (NUL-terminated, malloc'd) to the caller; NULL after a failure. */
char *text_take(text *t, size_t *len);
void text_free(text *t);

#endif
