/* reply.h - every answer the server writes goes through these: status, headers, body. */
#ifndef CONVSERVE_REPLY_H
#define CONVSERVE_REPLY_H

#include <microhttpd.h>
#include <stddef.h>

#include "request.h"
#include "status.h"
#include "text.h"

/* Sends {"error": "..."} with the status's HTTP code (and Allow / WWW-Authenticate as needed). */
enum MHD_Result reply_error(request *rq, srv_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends the JSON built in t (takes it). */
enum MHD_Result reply_json(request *rq, int code, text *t);
/* Sends a malloc'd body (taken; NULL with len 0 for none) with extra header pairs (a
 * NULL-terminated list of name, value, ..., or NULL). */
enum MHD_Result reply_raw(request *rq, int code, const char *content_type, char *body, size_t len,
                          const char *const *headers);
/* The same for bytes that outlive the answer (the embedded page): sent without a copy. */
enum MHD_Result reply_static(request *rq, int code, const char *content_type, const void *body,
                             size_t len, const char *const *headers);

#endif
