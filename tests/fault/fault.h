/* fault.h - the failure-injection layer under tests/fault.
 *
 * The library's own objects are linked with their calls to the functions
 * below renamed to fault_* (objcopy --redefine-syms over libgev's static
 * archives, see meson.build), so only the library's calls can fail: the
 * test's clients, Check, libc's own internals, OpenSSL's internals and the
 * sanitizer runtimes never see an injected fault. Each renamed call counts
 * one hit of its kind; a run fails the Nth hit of one kind (fault_arm_nth)
 * or, seeded, a random share of hits with transient results that a correct
 * caller retries: EINTR, EAGAIN, short reads and writes (fault_arm_random).
 */
#ifndef GEV_TEST_FAULT_H
#define GEV_TEST_FAULT_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
  FK_MALLOC,       /* malloc, strdup: NULL, ENOMEM */
  FK_CALLOC,       /* NULL, ENOMEM */
  FK_REALLOC,      /* NULL, ENOMEM, the old block kept */
  FK_ACCEPT,       /* accept4: EMFILE */
  FK_READ,         /* read, recv, syscall(SYS_read): ECONNRESET */
  FK_READV,        /* readv, syscall(SYS_readv): ECONNRESET */
  FK_SEND,         /* send, syscall(SYS_sendto): ECONNRESET */
  FK_SENDMSG,      /* sendmsg, syscall(SYS_sendmsg): ECONNRESET */
  FK_WAKE_WRITE,   /* write (the eventfd wake-up): EINTR */
  FK_EPOLL_CREATE, /* epoll_create1: EMFILE */
  FK_EPOLL_CTL,    /* ENOMEM */
  FK_EPOLL_WAIT,   /* epoll_wait, syscall(SYS_epoll_pwait): EINTR */
  FK_EVENTFD,      /* eventfd: EMFILE */
  FK_THREAD,       /* pthread_create: EAGAIN */
  FK_SOCKET,       /* EMFILE */
  FK_BIND,         /* EADDRINUSE */
  FK_LISTEN,       /* EADDRINUSE */
  FK_CONNECT,      /* ENETUNREACH */
  FK_RESOLVE,      /* getaddrinfo: EAI_MEMORY */
  FK_SSL_ALLOC,    /* OpenSSL's allocations (CRYPTO_set_mem_functions) */
  FK_RECVMMSG,     /* syscall(SYS_recvmmsg): ECONNREFUSED (an ICMP error) */
  FK_SENDMMSG,     /* syscall(SYS_sendmmsg): EPERM (a firewall's refusal) */
  FK_COUNT
} fault_kind;

/* Counts, fails nothing. Resets every counter. */
void fault_arm_count(void);
/* Fails the nth (1-based) hit of kind k, once; counts every kind. */
void fault_arm_nth(fault_kind k, uint64_t nth);
/* Fails about permille/1000 of all hits with a transient result drawn
 * from a generator seeded with seed. */
void fault_arm_random(uint64_t seed, unsigned permille);
/* Called in the failing call's thread, just before the nth hit fails
 * (fault_arm_nth): a test uses it to interleave another thread there.
 * NULL removes it. */
void fault_set_hook(void (*fn)(fault_kind k));
/* Called in the calling thread at every hit, before it is counted (NULL
 * removes it): a test uses it to act at a moment only another thread
 * reaches, such as a resolver's lookup. */
void fault_set_hit_hook(void (*fn)(fault_kind k));
/* While on, every sendmmsg fails with EAGAIN (a kernel that pushes back
 * whatever the mode; the hits still count). */
void fault_sendmmsg_eagain(bool on);
/* Stops injecting (the hits still count). */
void fault_disarm(void);

uint64_t fault_hits(fault_kind k);
/* How many faults were injected since the last arm. */
uint64_t fault_injected(void);
const char *fault_kind_name(fault_kind k);

/* Marks the calling thread's OpenSSL allocations as never failed (a
 * test's own TLS clients). */
void fault_immune(bool on);

/* Installs the OpenSSL allocation hooks (TLS builds); must run before
 * OpenSSL allocates anything. Returns false when they cannot be set. */
bool fault_ssl_hooks(void);

#endif
