/* reply.h - every answer the server writes goes through these: status, headers, body. */
#ifndef CONVSERVE_REPLY_H
#define CONVSERVE_REPLY_H

#include <microhttpd.h>
#include <stddef.h>

#include "request.h"

enum {
    REPLY_WHOLE_MAX = 256 * 1024, /* estimated bytes up to which an answer is sent whole */
};
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

/* Appends the next piece of an answer to `piece`; returns false once the answer is complete. */
typedef bool (*reply_writer)(request *rq, text *piece);
/* Sends the answer that `w` writes. Up to REPLY_WHOLE_MAX estimated bytes it is written whole and
 * sent with a Content-Length; a larger one is streamed (chunked), a piece each time the socket can
 * take more, so that no thread spends long on one answer and only one piece is ever in memory. */
enum MHD_Result reply_write(request *rq, int code, const char *content_type, reply_writer w,
                            size_t estimate);
/* Sends rq->piece (a JSON header) followed by the output's raw floats (rq->out, job.out_count of
 * them), read in place, with the extra headers given (the Triton binary tensor extension). */
enum MHD_Result reply_with_output(request *rq, int code, const char *content_type,
                                  const char *const *headers);

#endif
