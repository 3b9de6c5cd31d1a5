/* log.h - the server's log: one line per event on stderr, and the level names in one table. */
#ifndef CONVSERVE_LOG_H
#define CONVSERVE_LOG_H

#include <stdbool.h>

/* Every level with its name as --log-level spells it and the log line shows it. */
#define LOG_LEVEL_MAP(XX)                                                                          \
    XX(LOG_ERROR, "error")                                                                         \
    XX(LOG_WARN, "warn")                                                                           \
    XX(LOG_INFO, "info")                                                                           \
    XX(LOG_DEBUG, "debug")

typedef enum {
#define LOG_LEVEL_ENUM(e, name) e,
    LOG_LEVEL_MAP(LOG_LEVEL_ENUM)
#undef LOG_LEVEL_ENUM
} log_level;

/* "warn" -> LOG_WARN; false for a name not in the table. */
bool log_level_parse(const char *name, log_level *out);
const char *log_level_name(log_level level);
/* "error, warn, info, debug", for messages that list the choices. */
const char *log_level_choices(void);

/* One line to stderr with a UTC timestamp and the level's name, if `level` is at or below
 * `threshold`. */
void log_write(log_level threshold, log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
