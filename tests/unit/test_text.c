/* test_text.c - the answer builder: JSON strings are valid UTF-8 JSON whatever bytes they quote. */
#include "check.h"
#include "text.h"

#include <jansson.h>
#include <stdlib.h>

/* text_json_string(in) as a C string (malloc'd). */
static char *quoted(const char *in, size_t n)
{
    text t = {0};
    text_json_string(&t, in, n);
    size_t len;
    return text_take(&t, &len);
}

#define CHECK_QUOTES(in, want)                                                                     \
    do {                                                                                           \
        char *q_ = quoted(in, sizeof(in) - 1);                                                     \
        CHECK_STR(q_, want);                                                                       \
        free(q_);                                                                                  \
    } while (0)

static void test_escapes(void)
{
    CHECK_QUOTES("plain", "\"plain\"");
    CHECK_QUOTES("a\"b\\c", "\"a\\\"b\\\\c\"");
    CHECK_QUOTES("\n\t\x01\x1f\x7f", "\"\\u000a\\u0009\\u0001\\u001f\\u007f\"");
    CHECK_QUOTES("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                 "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

static void test_not_utf8(void)
{
    static const char fffd[] = "\xef\xbf\xbd";
    char want[64];
    /* A byte that cannot start a sequence, and a lone continuation byte. */
    snprintf(want, sizeof want, "\"a%sb%sc\"", fffd, fffd);
    CHECK_QUOTES("a\xff"
                 "b\x80"
                 "c",
                 want);
    /* Overlong (C0 80, E0 80 80), a surrogate (ED A0 80), past U+10FFFF (F4 90 80 80): each byte
     * that cannot continue the sequence starts a new replacement. */
    snprintf(want, sizeof want, "\"%s%s\"", fffd, fffd);
    CHECK_QUOTES("\xc0\x80", want);
    snprintf(want, sizeof want, "\"%s%s%s\"", fffd, fffd, fffd);
    CHECK_QUOTES("\xe0\x80\x80", want);
    CHECK_QUOTES("\xed\xa0\x80", want);
    snprintf(want, sizeof want, "\"%s%s%s%s\"", fffd, fffd, fffd, fffd);
    CHECK_QUOTES("\xf4\x90\x80\x80", want);
    /* A sequence cut short is one replacement, at the end or before another character. */
    snprintf(want, sizeof want, "\"x%s\"", fffd);
    CHECK_QUOTES("x\xe2\x82", want);
    snprintf(want, sizeof want, "\"%sy\"", fffd);
    CHECK_QUOTES("\xf0\x9f\x98y", want);
}

/* Every byte value, alone and after each lead byte: the result always parses as strict JSON. */
static void test_all_bytes_parse(void)
{
    int bad = 0;
    for (int a = 0; a < 256; a++) {
        for (int b = 0; b < 256; b++) {
            char in[3] = {(char)a, (char)b, 'z'};
            text t = {0};
            text_put(&t, "[");
            text_json_string(&t, in, sizeof in);
            text_put(&t, "]");
            size_t len;
            char *s = text_take(&t, &len);
            json_error_t je;
            json_t *v = s ? json_loadb(s, len, JSON_ALLOW_NUL, &je) : NULL;
            bad += v == NULL;
            json_decref(v);
            free(s);
        }
    }
    CHECK_INT(bad, 0);
}

int main(void)
{
    test_escapes();
    test_not_utf8();
    test_all_bytes_parse();
    return check_report("text");
}
