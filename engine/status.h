/* status.h - the engine's error codes, their names and their meaning, generated from one table. */
#ifndef CONVSERVE_STATUS_H
#define CONVSERVE_STATUS_H

#include <stddef.h>

/* Every engine function that can fail returns one of these and writes a sentence saying what was
 * expected and what was found into the caller's `char *err, size_t errlen` buffer. The server maps
 * each code to an HTTP status exactly once (SRV_FROM_ENGINE_MAP in server/status.h). */
#define ENGINE_STATUS_MAP(XX)                                                                      \
    XX(ENGINE_OK, "ok")                                                                            \
    XX(ENGINE_E_IO, "cannot read a model file")                                                    \
    XX(ENGINE_E_MODEL, "the model files are invalid")                                              \
    XX(ENGINE_E_INPUT, "the input does not fit the model")                                         \
    XX(ENGINE_E_LIMIT, "the input needs more memory than the limit allows")                        \
    XX(ENGINE_E_NOMEM, "out of memory")                                                            \
    XX(ENGINE_E_BACKEND, "the oneDNN backend failed")

typedef enum {
#define ENGINE_STATUS_ENUM(code, text) code,
    ENGINE_STATUS_MAP(ENGINE_STATUS_ENUM)
#undef ENGINE_STATUS_ENUM
} engine_status;

/* A short fixed description of a status code ("the model files are invalid"). */
const char *engine_status_text(engine_status s);

/* Formats a message into err (may be NULL or errlen 0) and returns `code` unchanged: the one helper
 * behind engine_fail() here and srv_fail() in the server, which differ only in their status type.
 */
int engine_status_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Formats a message and returns the status, so that error paths read
 * `return engine_fail(err, errlen, ENGINE_E_MODEL, "layer %d ...", i);`. */
#define engine_fail(...) ((engine_status)engine_status_fail(__VA_ARGS__))

#endif
