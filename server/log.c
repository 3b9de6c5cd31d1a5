/* log.c - writes the server's log lines: timestamp, level name, message, all in one write. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum {
    LOG_LINE_MAX = 2048, /* bytes of one message before escaping; longer ones are cut */
    LOG_STAMP_MAX = 32,
    LOG_NS_PER_MS = 1000000,
};

static const char *const level_names[] = {
#define LOG_LEVEL_NAME(e, name) name,
    LOG_LEVEL_MAP(LOG_LEVEL_NAME)
#undef LOG_LEVEL_NAME
};
enum { LOG_LEVELS = sizeof level_names / sizeof level_names[0] };

bool log_level_parse(const char *name, log_level *out)
{
    for (int i = 0; i < LOG_LEVELS; i++) {
        if (!strcmp(name, level_names[i])) {
            *out = (log_level)i;
            return true;
        }
    }
    return false;
}

const char *log_level_name(log_level level)
{
    return (int)level >= 0 && (int)level < LOG_LEVELS ? level_names[level] : "?";
}

const char *log_level_choices(void)
{
    static const char choices[] =
#define LOG_LEVEL_CHOICE(e, name) ", " name
        LOG_LEVEL_MAP(LOG_LEVEL_CHOICE)
#undef LOG_LEVEL_CHOICE
        ;
    return choices + 2; /* past the first ", " */
}

void log_write(log_level threshold, log_level level, const char *fmt, ...)
{
    if (level > threshold)
        return;
    char line[LOG_LINE_MAX], stamp[LOG_STAMP_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One write per line keeps lines from different threads whole. */
    fprintf(stderr, "%s.%03ldZ %s %s\n", stamp, ts.tv_nsec / LOG_NS_PER_MS, log_level_name(level),
            line);
}
