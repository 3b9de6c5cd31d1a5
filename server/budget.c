/* budget.c - byte budgets with an atomic counter, and the memory they are derived from. */
#include "budget.h"

#include <stdio.h>
#include <unistd.h>

/* Where cgroups (v2, then v1) keep the memory limit of the process's group, as seen inside a
 * container. "max" (v2) or a huge number (v1) means no limit. */
static const char *const cgroup_limit_files[] = {
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
};

void budget_init(budget *b, int64_t limit)
{
    atomic_init(&b->used, 0);
    b->limit = limit;
}

bool budget_take(budget *b, int64_t n)
{
    int64_t used = atomic_load(&b->used);
    do {
        if (n > b->limit - used)
            return false;
    } while (!atomic_compare_exchange_weak(&b->used, &used, used + n));
    return true;
}

void budget_give(budget *b, int64_t n)
{
    atomic_fetch_sub(&b->used, n);
}

int64_t budget_used(budget *b)
{
    return atomic_load(&b->used);
}

int64_t budget_memory(const char **source)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    int64_t mem = pages > 0 && page > 0 ? (int64_t)pages * page : 0;
    *source = "physical memory";
    for (size_t i = 0; i < sizeof cgroup_limit_files / sizeof cgroup_limit_files[0]; i++) {
        FILE *f = fopen(cgroup_limit_files[i], "r");
        if (!f)
            continue;
        long long v = 0;
        int got = fscanf(f, "%lld", &v);
        fclose(f);
        if (got == 1 && v > 0 && (mem == 0 || v < mem)) {
            mem = v;
            *source = "cgroup memory limit";
        }
        break;
    }
    return mem;
}
