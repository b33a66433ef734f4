/* sys.h - internal: not installed. System calls on the hot path, made
 * directly.
 *
 * The libc wrappers of epoll_wait, send, readv and sendmsg are pthread
 * cancellation points: in a multi-threaded process each call turns
 * asynchronous cancellation on and off around the system call, about 30
 * instructions each way, which was a tenth of gev's user-space work per
 * echoed message. gev never cancels its threads, so it calls syscall()
 * instead: same results, same errno. (ringbuffer.c, a standalone
 * component, does the same for readv and sendmsg on its own.)
 *
 * Under ThreadSanitizer the wrappers stay: it learns the ordering that
 * data passing through a descriptor implies from the calls it intercepts,
 * and tests rely on that ordering. */
#ifndef GEV_SRC_SYS_H
#define GEV_SRC_SYS_H

#include <stddef.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define GEV__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GEV__TSAN 1
#endif
#endif

static inline int gev__sys_epoll_wait(int epfd, struct epoll_event *ev, int max,
                                      int timeout_ms)
{
#ifdef GEV__TSAN
  return epoll_wait(epfd, ev, max, timeout_ms);
#else
  /* epoll_pwait without a mask is epoll_wait, on every architecture. */
  return (int)syscall(SYS_epoll_pwait, epfd, ev, max, timeout_ms, NULL,
                      (size_t)0);
#endif
}

static inline ssize_t gev__sys_send(int fd, const void *p, size_t n, int flags)
{
#ifdef GEV__TSAN
  return send(fd, p, n, flags);
#else
  return (ssize_t)syscall(SYS_sendto, fd, p, n, flags, NULL, 0);
#endif
}

#endif
