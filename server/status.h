/* status.h - the server's outcomes and their HTTP status codes, from one table. */
#ifndef CONVSERVE_SERVER_STATUS_H
#define CONVSERVE_SERVER_STATUS_H

#include <stddef.h>

#include "engine.h" /* engine_status, and the one message-formatting helper */

/* Every server function that can fail returns one of these and writes a sentence into the caller's
 * `char *err, size_t errlen`; reply.c turns it into `{"error": "<sentence>"}` with this code. */
#define SRV_STATUS_MAP(XX)                                                                         \
    XX(SRV_OK, 200)                                                                                \
    XX(SRV_BAD_REQUEST, 400)                                                                       \
    XX(SRV_UNAUTHORIZED, 401)                                                                      \
    XX(SRV_NOT_FOUND, 404)                                                                         \
    XX(SRV_METHOD, 405)                                                                            \
    XX(SRV_TOO_LARGE, 413)                                                                         \
    XX(SRV_URI_TOO_LONG, 414)                                                                      \
    XX(SRV_MEDIA_TYPE, 415)                                                                        \
    XX(SRV_HEADERS_TOO_LARGE, 431)                                                                 \
    XX(SRV_INTERNAL, 500)                                                                          \
    XX(SRV_NOT_IMPLEMENTED, 501)                                                                   \
    XX(SRV_UNAVAILABLE, 503)

typedef enum {
#define SRV_STATUS_ENUM(name, code) name,
    SRV_STATUS_MAP(SRV_STATUS_ENUM)
#undef SRV_STATUS_ENUM
} srv_status;

/* The HTTP status code of an outcome (SRV_TOO_LARGE -> 413). */
static inline int srv_status_http(srv_status s)
{
    switch (s) {
#define SRV_STATUS_CASE(name, code)                                                                \
    case name:                                                                                     \
        return code;
        SRV_STATUS_MAP(SRV_STATUS_CASE)
#undef SRV_STATUS_CASE
    }
    return 500;
}

/* How each engine status is answered, in one table: every call into the engine goes through
 * srv_status_from_engine(). Out of memory is overload (503, which clients retry); an input the
 * model cannot take is the client's to fix (400), and so is one that needs more memory than the
 * runner's budget (413); anything else means a loaded, warmed-up model
 * failed, which is the server's fault (500). */
#define SRV_FROM_ENGINE_MAP(XX)                                                                    \
    XX(ENGINE_OK, SRV_OK)                                                                          \
    XX(ENGINE_E_IO, SRV_INTERNAL)                                                                  \
    XX(ENGINE_E_MODEL, SRV_INTERNAL)                                                               \
    XX(ENGINE_E_INPUT, SRV_BAD_REQUEST)                                                            \
    XX(ENGINE_E_LIMIT, SRV_TOO_LARGE)                                                              \
    XX(ENGINE_E_NOMEM, SRV_UNAVAILABLE)                                                            \
    XX(ENGINE_E_BACKEND, SRV_INTERNAL)

/* The outcome of an engine status (no default case: a new engine status that is not in the table
 * is a compiler warning, and warnings are errors). */
static inline srv_status srv_status_from_engine(engine_status e)
{
    switch (e) {
#define SRV_FROM_ENGINE_CASE(engine, srv)                                                          \
    case engine:                                                                                   \
        return srv;
        SRV_FROM_ENGINE_MAP(SRV_FROM_ENGINE_CASE)
#undef SRV_FROM_ENGINE_CASE
    }
    return SRV_INTERNAL;
}

/* Formats a message into err and returns the status: `return srv_fail(err, errlen,
 * SRV_BAD_REQUEST, "top '%s' ...", v);`. The engine's one formatting helper does the work. */
#define srv_fail(...) ((srv_status)engine_status_fail(__VA_ARGS__))

#endif
