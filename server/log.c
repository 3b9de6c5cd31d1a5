/* log.c - writes the server's log lines: timestamp, level name, message, all in one write. */
#include "log.h"
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum {
    LOG_LINE_MAX = 2048, /* bytes of one message before escaping; longer ones are cut */
    LOG_STAMP_MAX = 32,
    LOG_NS_PER_MS = 1000000,
    LOG_ESCAPE_GROWTH = 4, /* a byte written as \xNN */
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
    char msg[LOG_LINE_MAX], line[LOG_LINE_MAX * LOG_ESCAPE_GROWTH + 1], stamp[LOG_STAMP_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Paths and headers of requests end up in messages: a newline in them must not start a forged
     * line, nor an escape sequence reach a terminal. Control bytes, backslashes and bytes that are
     * not UTF-8 are written as \xNN. */
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)msg;
    for (size_t i = 0, n = strlen(msg); i < n;) {
        size_t bad, len = text_utf8_sequence(u + i, n - i, &bad);
        if (len == 0 || u[i] < 0x20 || u[i] == 0x7f || u[i] == '\\') {
            snprintf(line + o, sizeof line - o, "\\x%02x", u[i]);
            o += LOG_ESCAPE_GROWTH;
            i++;
        } else {
            memcpy(line + o, u + i, len);
            o += len;
            i += len;
        }
    }
    line[o] = 0;
    /* One write per line keeps lines from different threads whole. */
    fprintf(stderr, "%s.%03ldZ %s %s\n", stamp, ts.tv_nsec / LOG_NS_PER_MS, log_level_name(level),
            line);
}
