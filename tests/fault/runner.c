/* runner.c - runs each scenario of harness.h: once to count the library's
 * calls of every kind, then once per failed call N (every N up to a cap,
 * beyond it the first half of the cap and a seeded sample of the rest),
 * then with transient faults at random (seeded). Each run is a forked
 * child with an alarm; the sanitizer build checks for leaks at its exit.
 *
 *   fault-run [NAME...]     (no name: all scenarios)
 *   FAULT_CAP=24 (FAULT_CAP_NAME for one scenario) FAULT_RANDOM=8 FAULT_SEED=1
 * FAULT_JOBS=CPUs FAULT_TIMEOUT=60 FAULT_PERMILLE=150 (the share of calls a
 * random run fails, per mille) FAULT_KIND=malloc FAULT_NTH=17   one run, in the
 * foreground FAULT_VERBOSE=1                  every run, and the library's log
 */
#include "harness.h"

#include <dirent.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct scenario {
  const char *name;
  scenario_fn fn;
} scenario;

#define ENTRY(name) {#name, sc_##name},
static const scenario all[] = {SCENARIOS(ENTRY)};
#undef ENTRY
enum { NSCEN = sizeof(all) / sizeof(all[0]) };

typedef struct job {
  pid_t pid;
  fault_run *r;
} job;

static unsigned env_num(const char *name, unsigned dflt)
{
  const char *v = getenv(name);
  return v && *v ? (unsigned)strtoul(v, NULL, 10) : dflt;
}

static unsigned timeout_s, njobs;
static int runs, fails, fired, points;

static int count_dir(const char *path)
{
  DIR *d = opendir(path);
  int n = 0;

  if (!d)
    return -1;
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

/* What the scenario left behind: open fds (a failure path that forgot a
 * close) and threads (one it forgot to join). */
static int leftovers(fault_run *r, int fds0, int threads0)
{
  int fds = count_dir("/proc/self/fd"), threads = count_dir("/proc/self/task");

  if (fds > fds0)
    return fr_fail(r, "%d fds left open", fds - fds0);
  /* A joined thread leaves /proc a moment later. */
  for (int i = 0; i < 200 && threads > threads0; i++) {
    nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    threads = count_dir("/proc/self/task");
  }
  return threads > threads0
             ? fr_fail(r, "%d threads left running", threads - threads0)
             : 0;
}

static void child(const scenario *s, fault_run *r)
{
  int rc, fds0, threads0;

  alarm(timeout_s);
  fault_ssl_hooks();
  fds0 = count_dir("/proc/self/fd");
  threads0 = count_dir("/proc/self/task");
  if (r->how == RUN_NTH)
    fault_arm_nth(r->kind, r->nth);
  else if (r->how == RUN_RANDOM)
    fault_arm_random(r->seed, env_num("FAULT_PERMILLE", 150));
  else
    fault_arm_count();
  rc = s->fn(r);
  fault_disarm();
  rc |= leftovers(r, fds0, threads0);
  for (int k = 0; k < FK_COUNT; k++)
    r->hits[k] = fault_hits((fault_kind)k);
  r->injected = fault_injected();
  fflush(NULL);
  exit(rc ? 1 : 0); /* exit, not _exit: LeakSanitizer checks here */
}

static void describe(const scenario *s, const fault_run *r, char *buf, size_t n)
{
  if (r->how == RUN_NTH)
    snprintf(buf, n, "%s %s#%llu", s->name, fault_kind_name(r->kind),
             (unsigned long long)r->nth);
  else if (r->how == RUN_RANDOM)
    snprintf(buf, n, "%s random(seed %llu)", s->name,
             (unsigned long long)r->seed);
  else
    snprintf(buf, n, "%s count", s->name);
}

static void reap(const scenario *s, job *j)
{
  int st;
  char name[96];
  const fault_run *r = j->r;

  waitpid(j->pid, &st, 0);
  j->pid = 0;
  runs++;
  describe(s, r, name, sizeof(name));
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    if (r->injected)
      fired++;
    if (getenv("FAULT_VERBOSE"))
      printf("ok   %s: injected %llu, served %d, closed %d, errno %d, %d log "
             "lines\n",
             name, (unsigned long long)r->injected, r->served, r->closed,
             r->gev_error, r->logs);
    return;
  }
  fails++;
  if (WIFSIGNALED(st))
    printf("FAIL %s: %s\n", name,
           WTERMSIG(st) == SIGALRM ? "hung (alarm)" : strsignal(WTERMSIG(st)));
  else if (WEXITSTATUS(st) == 1)
    printf("FAIL %s: %s\n", name, r->why);
  else
    printf("FAIL %s: exit status %d (a sanitizer report is above)\n", name,
           WEXITSTATUS(st));
  fflush(stdout);
}

/* Runs r in a child once a job slot is free. */
static void launch(const scenario *s, job *jobs, fault_run *slots,
                   const fault_run *r)
{
  unsigned i;

  for (;;) {
    for (i = 0; i < njobs && jobs[i].pid; i++)
      ;
    if (i < njobs)
      break;
    /* All busy: wait for any, then find and account for it. */
    siginfo_t si;
    if (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT) < 0)
      abort();
    for (i = 0; i < njobs; i++)
      if (jobs[i].pid == si.si_pid)
        reap(s, &jobs[i]);
  }
  slots[i] = *r;
  jobs[i].r = &slots[i];
  fflush(NULL);
  jobs[i].pid = fork();
  if (jobs[i].pid == 0)
    child(s, &slots[i]);
}

static void drain(const scenario *s, job *jobs)
{
  for (unsigned i = 0; i < njobs; i++)
    if (jobs[i].pid)
      reap(s, &jobs[i]);
}

static uint64_t rnd(uint64_t *x)
{
  *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
  return *x;
}

/* The Ns of one kind: all up to cap, else cap/2 first and cap/2 drawn. */
static int plan(uint64_t hits, unsigned cap, uint64_t seed, uint64_t *ns)
{
  int n = 0;

  if (hits <= cap) {
    for (uint64_t i = 1; i <= hits; i++)
      ns[n++] = i;
    return n;
  }
  for (uint64_t i = 1; i <= cap / 2; i++)
    ns[n++] = i;
  while (n < (int)cap) {
    uint64_t v = cap / 2 + 1 + rnd(&seed) % (hits - cap / 2);
    bool dup = false;
    for (int i = 0; i < n; i++)
      dup |= ns[i] == v;
    if (!dup)
      ns[n++] = v;
  }
  return n;
}

/* FAULT_CAP_NAME (the scenario's name in capitals) bounds one scenario's
 * sweep on its own, so a newer scenario fits CI's time; else FAULT_CAP. */
static unsigned scenario_cap(const scenario *s)
{
  char var[64] = "FAULT_CAP_";
  size_t i = strlen(var);

  for (const char *p = s->name; *p && i < sizeof(var) - 1; p++)
    var[i++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
  var[i] = 0;
  return env_num(var, env_num("FAULT_CAP", 24));
}

static void run_scenario(const scenario *s, job *jobs, fault_run *slots)
{
  unsigned cap = scenario_cap(s), nrand = env_num("FAULT_RANDOM", 8);
  uint64_t seed = env_num("FAULT_SEED", 1), counts[FK_COUNT], *ns;
  int f0 = fails, r0 = runs, sampled = 0, kinds = 0;
  fault_run r = {.how = RUN_COUNT};
  uint64_t total = 0;

  launch(s, jobs, slots, &r);
  drain(s, jobs);
  if (fails > f0) {
    printf("fault %s: the counting run failed; no injection\n", s->name);
    return;
  }
  memcpy(counts, slots[0].hits, sizeof(counts));
  ns = calloc(cap + 1, sizeof(*ns));
  for (int k = 0; k < FK_COUNT; k++) {
    int n = plan(counts[k], cap, seed + (uint64_t)k * 7919, ns);
    total += counts[k];
    kinds += counts[k] > 0;
    sampled += counts[k] > cap;
    for (int i = 0; i < n; i++) {
      fault_run q = {.how = RUN_NTH, .kind = (fault_kind)k, .nth = ns[i]};
      launch(s, jobs, slots, &q);
      points++;
    }
  }
  free(ns);
  for (unsigned i = 0; i < nrand; i++) {
    fault_run q = {.how = RUN_RANDOM, .seed = seed * 1000 + i};
    launch(s, jobs, slots, &q);
  }
  drain(s, jobs);
  printf("fault %s: %llu calls of %d kinds counted (", s->name,
         (unsigned long long)total, kinds);
  for (int k = 0, first = 1; k < FK_COUNT; k++)
    if (counts[k]) {
      printf("%s%s %llu", first ? "" : ", ", fault_kind_name((fault_kind)k),
             (unsigned long long)counts[k]);
      first = 0;
    }
  printf("); %d runs (every N up to %u, %d kinds sampled), %d failed\n",
         runs - r0, cap, sampled, fails - f0);
  fflush(stdout);
}

static int one_run(const scenario *s)
{
  const char *kind = getenv("FAULT_KIND");
  fault_run r = {.how = RUN_NTH, .nth = env_num("FAULT_NTH", 1)};
  int k = 0;

  for (; k < FK_COUNT && strcmp(kind, fault_kind_name((fault_kind)k)); k++)
    ;
  if (k == FK_COUNT) {
    fprintf(stderr, "unknown FAULT_KIND %s\n", kind);
    return 2;
  }
  r.kind = (fault_kind)k;
  fault_arm_nth(r.kind, r.nth);
  if (s->fn(&r)) {
    printf("FAIL: %s\n", r.why);
    return 1;
  }
  printf("ok: injected %llu, served %d, closed %d, errno %d\n",
         (unsigned long long)fault_injected(), r.served, r.closed, r.gev_error);
  return 0;
}

/* The TLS scenario's certificates, made once for all its runs. */
static char tls_dir[64];

static void tls_prepare(void)
{
#ifdef FAULT_SSL
  const char *script = getenv("GEV_TLS_CERTS");
  char cmd[512];

  snprintf(tls_dir, sizeof(tls_dir), "/tmp/gev-fault-XXXXXX");
  if (!script || !mkdtemp(tls_dir)) {
    tls_dir[0] = 0;
    return;
  }
  snprintf(cmd, sizeof(cmd), "sh %s %s >/dev/null 2>&1", script, tls_dir);
  if (system(cmd) == 0)
    setenv("FAULT_TLS_DIR", tls_dir, 1);
#endif
}

static void tls_cleanup(void)
{
  char cmd[128];

  if (!tls_dir[0])
    return;
  snprintf(cmd, sizeof(cmd), "rm -rf %s", tls_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", tls_dir);
}

int main(int argc, char **argv)
{
  fault_run *slots;
  job *jobs;

  signal(SIGPIPE, SIG_IGN);
  timeout_s = env_num("FAULT_TIMEOUT", 60);
  /* One child per CPU (at most 4): each run mostly waits on its sockets. */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  njobs = env_num("FAULT_JOBS", cpus > 4 ? 4 : cpus > 0 ? (unsigned)cpus : 2);
  if (!njobs)
    njobs = 1;
  slots = mmap(NULL, njobs * sizeof(*slots), PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  jobs = calloc(njobs, sizeof(*jobs));
  tls_prepare();
  if (slots == MAP_FAILED || !jobs)
    return 2;
  for (int i = 0; i < NSCEN; i++) {
    bool want = argc < 2;
    for (int a = 1; a < argc; a++)
      want |= strcmp(argv[a], all[i].name) == 0;
    if (!want)
      continue;
    if (getenv("FAULT_KIND")) {
      int rc;
      free(jobs);
      fault_ssl_hooks();
      rc = one_run(&all[i]);
      tls_cleanup();
      return rc;
    }
    run_scenario(&all[i], jobs, slots);
  }
  printf("fault: %d runs (%d injection points), %d with a fault injected, "
         "%d failed\n",
         runs, points, fired, fails);
  free(jobs);
  tls_cleanup();
  return fails ? 1 : 0;
}
