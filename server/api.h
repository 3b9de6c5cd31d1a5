/* api.h - the endpoints: routing, header checks, handling a request, answering finished work. */
#ifndef CONVSERVE_API_H
#define CONVSERVE_API_H

#include <microhttpd.h>

#include "request.h"
#include "status.h"

/* Finds the route for the URL and method (SRV_NOT_FOUND / SRV_METHOD with rq->errbuf). */
srv_status api_route(request *rq, const char *url, const char *method);
/* Checks Content-Type and friends of a request with a body, before the body is read. */
srv_status api_check_headers(request *rq);
/* Answers, or validates and submits, once the body is in. */
enum MHD_Result api_handle(request *rq);
/* Answers a request whose work has finished (state DONE). */
enum MHD_Result api_finish(request *rq);

#endif
