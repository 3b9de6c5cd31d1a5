/* status.c - formats server error messages. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

srv_status srv_fail(char *err, size_t errlen, srv_status s, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return s;
}
