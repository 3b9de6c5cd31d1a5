/* query.c - the /shapes query grammar ("1,3,28,28") over a byte view, without strtoll. */
#include "query.h"

#include <stdbool.h>

/* isspace() in the C locale, which is what strtoll skipped before a number. */
static bool is_c_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

srv_status query_parse_dims(const char *s, size_t len, int64_t *dims, int max, int *rank, char *err,
                            size_t errlen)
{
    *rank = 0;
    if (!s || len == 0)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "query parameter 'input' is missing; e.g. ?input=1,3,28,28");
    int quote = len < QUERY_QUOTE_MAX ? (int)len : QUERY_QUOTE_MAX;
    int n = 0;
    size_t i = 0;
    while (i < len) {
        /* One field, read the way strtoll(p, &end, 10) reads it. */
        while (i < len && is_c_space(s[i]))
            i++;
        bool negative = false;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            negative = s[i++] == '-';
        size_t first_digit = i;
        int64_t v = 0;
        /* Past INT32_MAX the exact value no longer matters (it is refused either way), so it
         * stops growing there and cannot overflow. */
        for (; i < len && is_digit(s[i]); i++)
            if (v <= INT32_MAX)
                v = v * 10 + (s[i] - '0');
        bool ends_field = i == len || s[i] == ',';
        if (i == first_digit || negative || v < 1 || v > INT32_MAX || n == max || !ends_field)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "input '%.*s' must be positive integers separated by commas, e.g. "
                            "input=1,3,28,28",
                            quote, s);
        dims[n++] = v;
        if (i < len && ++i == len) /* skip the comma; nothing after it */
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "input '%.*s' ends with a comma", quote,
                            s);
    }
    *rank = n;
    return SRV_OK;
}
