/* guard.c - the slow-client reaper thread and its list of connections. */
#include "guard.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "batcher.h" /* monotonic_ns */

enum {
    GUARD_TICK_MS = 250, /* how often the reaper looks */
    GUARD_NS_PER_MS = 1000000,
    GUARD_NS_PER_S = 1000000000,
};

struct guard_conn {
    guard_conn *prev, *next;
    int fd;
    int64_t since_ns; /* when it last had no request in the handler */
    bool busy;        /* a request is in the handler (receiving, queued or answering) */
};

struct guard {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    guard_conn *head;
    bool stop;
    int64_t timeout_ns;
    pthread_t thread;
    unsigned long reaped;
};

static void *guard_main(void *arg)
{
    guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        int64_t now = monotonic_ns();
        for (guard_conn *c = g->head; c; c = c->next) {
            if (!c->busy && now - c->since_ns > g->timeout_ns) {
                shutdown(c->fd, SHUT_RDWR);
                c->since_ns = now; /* once is enough; MHD closes it on its next read */
                g->reaped++;
            }
        }
        /* The condition variable waits on the monotonic clock: a step of the wall clock must not
         * stop the reaper (or make it spin). */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += GUARD_TICK_MS * GUARD_NS_PER_MS;
        if (ts.tv_nsec >= GUARD_NS_PER_S) {
            ts.tv_sec++;
            ts.tv_nsec -= GUARD_NS_PER_S;
        }
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

guard *guard_create(int64_t timeout_ns)
{
    guard *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->timeout_ns = timeout_ns;
    if (pthread_create(&g->thread, NULL, guard_main, g) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return NULL;
    }
    return g;
}

void guard_destroy(guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

guard_conn *guard_open(guard *g, int fd)
{
    guard_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->since_ns = monotonic_ns();
    pthread_mutex_lock(&g->mu);
    c->next = g->head;
    if (g->head)
        g->head->prev = c;
    g->head = c;
    pthread_mutex_unlock(&g->mu);
    return c;
}

void guard_close(guard *g, guard_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        g->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&g->mu);
    free(c);
}

void guard_busy(guard *g, guard_conn *c, bool busy)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->mu);
    c->busy = busy;
    c->since_ns = monotonic_ns();
    pthread_mutex_unlock(&g->mu);
}
