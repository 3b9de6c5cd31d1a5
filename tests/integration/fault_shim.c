/* fault_shim.c - an LD_PRELOAD library that makes the server's surroundings misbehave on purpose,
 * for regression tests of what the server must survive. Each fault is off unless its variable is
 * set:
 *
 *     CONVSERVE_SHIM_REALTIME_SHIFT_S=N   clock_gettime(CLOCK_REALTIME) runs N seconds ahead, as
 *                                         after a wall-clock step; timed waits must not care
 *     CONVSERVE_SHIM_STRDUP_FAIL=1        strdup() returns NULL, as when memory runs out
 *
 * Only for tests: it is built beside them and never installed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef char *(*strdup_fn)(const char *);

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    static clock_gettime_fn real;
    if (!real)
        real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(clk, ts);
    const char *shift = getenv("CONVSERVE_SHIM_REALTIME_SHIFT_S");
    if (r == 0 && shift && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE))
        ts->tv_sec += atol(shift);
    return r;
}

char *strdup(const char *s)
{
    static strdup_fn real;
    if (getenv("CONVSERVE_SHIM_STRDUP_FAIL"))
        return NULL;
    if (!real)
        real = (strdup_fn)dlsym(RTLD_NEXT, "strdup");
    return real(s);
}
