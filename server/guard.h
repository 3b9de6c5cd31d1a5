/* guard.h - the slow-client guard: closes connections that take too long to send a request.
 *
 * libmicrohttpd's connection timeout only closes connections that stay silent, so a client that
 * sends one header byte a second would hold its connection forever, and enough of them would lock
 * everyone out. The guard tracks each connection from the moment it has no request in the handler
 * (opened, or its last request answered): if the next request has not reached the handler within
 * the timeout, a reaper thread shuts the socket down and libmicrohttpd closes it. libmicrohttpd
 * reports a connection closed (guard_close, under the guard's mutex) before it closes the socket,
 * so the reaper can never shut down a reused descriptor.
 *
 *     guard *g = guard_create(timeout_ns);              // starts the reaper thread
 *     guard_conn *c = guard_open(g, fd);                // a connection opened
 *     guard_busy(g, c, true); ... guard_busy(g, c, false);  // a request in the handler, or not
 *     guard_close(g, c);                                // libmicrohttpd closes it
 *     guard_destroy(g);                                 // after every connection is closed
 */
#ifndef CONVSERVE_GUARD_H
#define CONVSERVE_GUARD_H

#include <stdbool.h>
#include <stdint.h>

typedef struct guard guard;
typedef struct guard_conn guard_conn;

/* NULL when out of memory or the thread cannot start. */
guard *guard_create(int64_t timeout_ns);
/* Stops the reaper. Every connection must have been closed. Safe on NULL. */
void guard_destroy(guard *g);

/* Tracks a new connection; NULL when out of memory (the connection then goes unguarded). */
guard_conn *guard_open(guard *g, int fd);
/* Forgets a connection (safe on NULL). */
void guard_close(guard *g, guard_conn *c);
/* Marks whether a request is in the handler; the clock restarts either way (safe on NULL). */
void guard_busy(guard *g, guard_conn *c, bool busy);

#endif
