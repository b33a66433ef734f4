/* fault-env.c - arms fault.c from the environment, for whole programs
 * (the example servers, built against the renamed library): before main,
 * FAULT_KIND + FAULT_NTH fail one call, FAULT_SEED injects transient
 * faults (FAULT_PERMILLE, default 150), neither only counts; at exit the
 * counts go to the file FAULT_REPORT as "KIND HITS" lines, then
 * "injected N". */
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void report(void)
{
  const char *path = getenv("FAULT_REPORT");
  FILE *f;

  fault_disarm();
  if (!path || !(f = fopen(path, "w")))
    return;
  for (int k = 0; k < FK_COUNT; k++)
    fprintf(f, "%s %llu\n", fault_kind_name((fault_kind)k),
            (unsigned long long)fault_hits((fault_kind)k));
  fprintf(f, "injected %llu\n", (unsigned long long)fault_injected());
  fclose(f);
}

__attribute__((constructor)) static void arm_from_env(void)
{
  const char *kind = getenv("FAULT_KIND"), *seed = getenv("FAULT_SEED");
  const char *pm = getenv("FAULT_PERMILLE");

  fault_ssl_hooks();
  fault_arm_count();
  if (kind) {
    for (int k = 0; k < FK_COUNT; k++)
      if (!strcmp(kind, fault_kind_name((fault_kind)k)))
        fault_arm_nth((fault_kind)k,
                      strtoull(getenv("FAULT_NTH") ? getenv("FAULT_NTH") : "1",
                               NULL, 10));
  } else if (seed) {
    fault_arm_random(strtoull(seed, NULL, 10), pm ? (unsigned)atoi(pm) : 150);
  }
  atexit(report);
}
