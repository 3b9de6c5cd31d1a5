/* budget.h - server-wide byte budgets (request bodies and what is decoded from them; answers in
 * flight), so that the sum over all connections stays bounded whatever the traffic.
 *
 *     budget b;
 *     budget_init(&b, limit);
 *     if (!budget_take(&b, n)) refuse with 503;   // lock-free; never goes past the limit
 *     ... hold n bytes ...
 *     budget_give(&b, n);
 */
#ifndef CONVSERVE_BUDGET_H
#define CONVSERVE_BUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    _Atomic int64_t used;
    int64_t limit;
} budget;

void budget_init(budget *b, int64_t limit);
/* Takes n bytes if they fit under the limit; false (and nothing taken) otherwise. */
bool budget_take(budget *b, int64_t n);
void budget_give(budget *b, int64_t n);
int64_t budget_used(budget *b);

/* The memory this process may use: the cgroup limit (v2 memory.max, or v1 limit_in_bytes) when
 * there is one below the physical memory, else the physical memory. *source says which. */
int64_t budget_memory(const char **source);

#endif
