/* test_decode_pool.c - the decode pool: its limits (503 past the queue, and while stopping), that
 * every accepted job runs and completes exactly once on a pool thread, draining on stop, and many
 * concurrent submitters (run under TSan in CI). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "decode_pool.h"

enum {
    ERR_LEN = 256,
    POOL_THREADS = 2,
    POOL_QUEUE = 4,
    SUBMITTERS = 8,
    JOBS_EACH = 2000,
};

/* A gate that jobs wait at until the test opens it, so that it can fill the pool and its queue. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool open;
    int waiting; /* jobs blocked at the gate, i.e. running */
} gate;

typedef struct {
    gate *g;
    pthread_t submitter;
    atomic_int runs, dones;
    atomic_bool done_on_pool_thread, done_after_run;
} job_state;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->open = false;
    g->waiting = 0;
}

static void gate_destroy(gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* Waits until n jobs are blocked at the gate. */
static void gate_wait_for(gate *g, int n)
{
    pthread_mutex_lock(&g->lock);
    while (g->waiting < n)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gated_run(void *arg)
{
    job_state *j = arg;
    atomic_fetch_add(&j->runs, 1);
    pthread_mutex_lock(&j->g->lock);
    j->g->waiting++;
    pthread_cond_broadcast(&j->g->cond);
    while (!j->g->open)
        pthread_cond_wait(&j->g->cond, &j->g->lock);
    pthread_mutex_unlock(&j->g->lock);
}

static void record_done(void *arg, srv_status st)
{
    job_state *j = arg;
    if (st == SRV_OK && atomic_load(&j->runs) == 1)
        atomic_store(&j->done_after_run, true);
    if (!pthread_equal(pthread_self(), j->submitter))
        atomic_store(&j->done_on_pool_thread, true);
    atomic_fetch_add(&j->dones, 1);
}

/* Two threads busy, four jobs queued: the seventh is refused with 503 and never runs; opening
 * the gate completes the six, each once, on a pool thread. */
static void test_limits(void)
{
    char err[ERR_LEN] = "";
    decode_pool *p = NULL;
    decode_pool_config cfg = {.threads = POOL_THREADS, .queue_size = POOL_QUEUE};
    CHECK_INT(decode_pool_create(&cfg, &p, err, sizeof err), SRV_OK);
    gate g;
    gate_init(&g);
    enum { ACCEPTED = POOL_THREADS + POOL_QUEUE };
    job_state jobs[ACCEPTED + 1];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i <= ACCEPTED; i++) {
        jobs[i].g = &g;
        jobs[i].submitter = pthread_self();
    }
    for (int i = 0; i < POOL_THREADS; i++) {
        decode_job job = {.run = gated_run, .done = record_done, .arg = &jobs[i]};
        CHECK_INT(decode_pool_submit(p, &job, err, sizeof err), SRV_OK);
    }
    gate_wait_for(&g, POOL_THREADS); /* both threads are now busy */
    for (int i = POOL_THREADS; i < ACCEPTED; i++) {
        decode_job job = {.run = gated_run, .done = record_done, .arg = &jobs[i]};
        CHECK_INT(decode_pool_submit(p, &job, err, sizeof err), SRV_OK);
    }
    decode_pool_stats s = decode_pool_get_stats(p);
    CHECK_INT(s.threads, POOL_THREADS);
    CHECK_INT((int)s.running, POOL_THREADS);
    CHECK_INT((int)s.queued, POOL_QUEUE);

    decode_job extra = {.run = gated_run, .done = record_done, .arg = &jobs[ACCEPTED]};
    CHECK_INT(decode_pool_submit(p, &extra, err, sizeof err), SRV_UNAVAILABLE);
    CHECK_STR(err, "the decode queue is full (4 requests waiting); retry later");

    gate_open(&g);
    decode_pool_destroy(p); /* drains: every accepted job has completed when this returns */
    for (int i = 0; i < ACCEPTED; i++) {
        CHECK_INT(atomic_load(&jobs[i].runs), 1);
        CHECK_INT(atomic_load(&jobs[i].dones), 1);
        CHECK(atomic_load(&jobs[i].done_after_run));
        CHECK(atomic_load(&jobs[i].done_on_pool_thread));
    }
    CHECK_INT(atomic_load(&jobs[ACCEPTED].runs), 0);
    CHECK_INT(atomic_load(&jobs[ACCEPTED].dones), 0);
    gate_destroy(&g);
}

/* Stop lets the queued jobs finish, then refuses new ones. */
static void *stop_pool(void *arg)
{
    decode_pool_stop(arg);
    return NULL;
}

static void test_stop_drains(void)
{
    char err[ERR_LEN] = "";
    decode_pool *p = NULL;
    decode_pool_config cfg = {.threads = 1, .queue_size = POOL_QUEUE};
    CHECK_INT(decode_pool_create(&cfg, &p, err, sizeof err), SRV_OK);
    gate g;
    gate_init(&g);
    job_state jobs[1 + POOL_QUEUE];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < 1 + POOL_QUEUE; i++) {
        jobs[i].g = &g;
        jobs[i].submitter = pthread_self();
        decode_job job = {.run = gated_run, .done = record_done, .arg = &jobs[i]};
        CHECK_INT(decode_pool_submit(p, &job, err, sizeof err), SRV_OK);
        if (i == 0)
            gate_wait_for(&g, 1);
    }
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, stop_pool, p), 0);
    /* Once stop has begun, submissions are refused; it cannot finish before the gate opens. */
    do {
        decode_job job = {.run = gated_run, .done = record_done, .arg = &jobs[0]};
        srv_status st = decode_pool_submit(p, &job, err, sizeof err);
        if (st == SRV_OK) {
            CHECK(!"accepted a job into a full queue");
            break;
        }
    } while (strcmp(err, "the server is shutting down") != 0);
    CHECK_STR(err, "the server is shutting down");
    gate_open(&g);
    pthread_join(t, NULL);
    for (int i = 0; i < 1 + POOL_QUEUE; i++)
        CHECK_INT(atomic_load(&jobs[i].dones), 1);
    decode_pool_stats s = decode_pool_get_stats(p);
    CHECK_INT((int)s.completed, 1 + POOL_QUEUE);
    CHECK_INT((int)s.queued, 0);
    decode_pool_stop(p); /* again: nothing to do */
    decode_pool_destroy(p);
    gate_destroy(&g);
}

/* Many threads submit short jobs at once, retrying on 503: every accepted job runs once. */
typedef struct {
    decode_pool *p;
    atomic_long *sum;
    atomic_long *completed;
    long accepted, refused;
} submitter;

typedef struct {
    atomic_long *sum;
    atomic_long *completed;
    long value;
} count_job;

static void count_run(void *arg)
{
    count_job *c = arg;
    atomic_fetch_add(c->sum, c->value);
}

static void count_done(void *arg, srv_status st)
{
    count_job *c = arg;
    if (st == SRV_OK)
        atomic_fetch_add(c->completed, 1);
    free(c);
}

static void *submit_many(void *arg)
{
    submitter *s = arg;
    char err[ERR_LEN];
    for (long i = 1; i <= JOBS_EACH; i++) {
        count_job *c = malloc(sizeof *c);
        if (!c)
            abort();
        *c = (count_job){.sum = s->sum, .completed = s->completed, .value = i};
        decode_job job = {.run = count_run, .done = count_done, .arg = c};
        while (decode_pool_submit(s->p, &job, err, sizeof err) != SRV_OK) {
            s->refused++;
            sched_yield();
        }
        s->accepted++;
    }
    return NULL;
}

static void test_concurrent_submitters(void)
{
    char err[ERR_LEN] = "";
    decode_pool *p = NULL;
    decode_pool_config cfg = {.threads = 0, .queue_size = POOL_QUEUE}; /* one per CPU */
    CHECK_INT(decode_pool_create(&cfg, &p, err, sizeof err), SRV_OK);
    atomic_long sum = 0, completed = 0;
    submitter subs[SUBMITTERS];
    pthread_t tids[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        subs[i] = (submitter){.p = p, .sum = &sum, .completed = &completed};
        CHECK_INT(pthread_create(&tids[i], NULL, submit_many, &subs[i]), 0);
    }
    long refused = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        pthread_join(tids[i], NULL);
        CHECK_INT((int)subs[i].accepted, JOBS_EACH);
        refused += subs[i].refused;
    }
    decode_pool_stats before = decode_pool_get_stats(p);
    CHECK(before.threads >= 1);
    decode_pool_destroy(p);
    CHECK_INT((int)atomic_load(&completed), SUBMITTERS * JOBS_EACH);
    CHECK(atomic_load(&sum) == (long)SUBMITTERS * JOBS_EACH * (JOBS_EACH + 1) / 2);
    CHECK(before.rejected == (uint64_t)refused);
}

static void test_bad_config(void)
{
    char err[ERR_LEN] = "";
    decode_pool *p = (decode_pool *)&err; /* must be reset to NULL */
    decode_pool_config cfg = {.threads = -1, .queue_size = 4};
    CHECK_INT(decode_pool_create(&cfg, &p, err, sizeof err), SRV_INTERNAL);
    CHECK(p == NULL);
    CHECK_STR(err, "decode pool: threads must be 0..1024 and the queue 1..1048576, got -1 and 4");
    cfg = (decode_pool_config){.threads = 1, .queue_size = 0};
    CHECK_INT(decode_pool_create(&cfg, &p, err, sizeof err), SRV_INTERNAL);
    decode_pool_destroy(NULL);
}

int main(void)
{
    test_limits();
    test_stop_drains();
    test_concurrent_submitters();
    test_bad_config();
    return check_report("decode_pool");
}
