/* status.c - engine status texts and the one helper that formats an error message. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

const char *engine_status_text(engine_status s)
{
    switch (s) {
#define ENGINE_STATUS_CASE(code, text)                                                             \
    case code:                                                                                     \
        return text;
        ENGINE_STATUS_MAP(ENGINE_STATUS_CASE)
#undef ENGINE_STATUS_CASE
    }
    return "unknown status";
}

int engine_status_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}
