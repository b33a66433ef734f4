/*
 * ringbuffer.h - a growable byte FIFO over one wrapping allocation.
 *
 * Public header of the standalone ring buffer component. It depends on libc
 * only and can be used without the rest of gev.
 *
 * The buffer stores bytes in one contiguous allocation that wraps around, so
 * the stored bytes form at most two segments. It grows on demand by doubling,
 * up to an optional limit. No function allocates while the capacity suffices.
 *
 * Thread safety: none. A ringbuffer is owned by one thread at a time.
 */
#ifndef GEV_RINGBUFFER_H
#define GEV_RINGBUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <gev/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque byte FIFO. */
typedef struct ringbuffer ringbuffer;

/**
 * Create a buffer with a capacity of at least @p initial_capacity bytes.
 * A capacity of 0 allocates no storage until the first write.
 * @param initial_capacity the capacity to start with, in bytes; 0
 *                         allocates nothing yet
 * @return the buffer, owned by the caller (free it with ringbuffer_free),
 *         or NULL when memory is exhausted.
 */
GEV_EXPORT ringbuffer *ringbuffer_new(size_t initial_capacity);

/**
 * Free @p rb and its storage. NULL is accepted and ignored.
 * @param rb the buffer; NULL is accepted
 */
GEV_EXPORT void ringbuffer_free(ringbuffer *rb);

/**
 * @param rb the ring buffer
 * @return the number of bytes stored.
 */
GEV_EXPORT size_t ringbuffer_len(const ringbuffer *rb);

/**
 * @param rb the ring buffer
 * @return the current capacity in bytes (0 while no storage is allocated).
 */
GEV_EXPORT size_t ringbuffer_cap(const ringbuffer *rb);

/**
 * @param rb the ring buffer
 * @return true when no byte is stored.
 */
GEV_EXPORT bool ringbuffer_empty(const ringbuffer *rb);

/**
 * Cap the capacity at @p max_cap bytes (0 removes the cap). Growth stops at
 * the cap even when it is not a power of two. A cap below the current length
 * does not drop bytes: it only makes every further write fail.
 * @param rb the ring buffer
 * @param max_cap the largest capacity allowed, in bytes; 0 for none
 */
GEV_EXPORT void ringbuffer_set_limit(ringbuffer *rb, size_t max_cap);

/**
 * @param rb the ring buffer
 * @return the limit set by ringbuffer_set_limit, 0 when there is none.
 */
GEV_EXPORT size_t ringbuffer_limit(const ringbuffer *rb);

/**
 * Append @p n bytes from @p p, all or nothing.
 * @param rb the ring buffer
 * @param p the bytes to append
 * @param n how many bytes to append
 * @return 0 on success; -ENOBUFS when len + n would exceed the limit or
 *         SSIZE_MAX; -ENOMEM when growing failed. On error nothing changes.
 */
GEV_EXPORT int ringbuffer_write(ringbuffer *rb, const void *p, size_t n);

/**
 * Copy up to @p n bytes into @p dst and consume them.
 * @param rb the ring buffer
 * @param dst where the bytes are copied to
 * @param n the most bytes to copy
 * @return the number of bytes copied (less than n when fewer are stored).
 */
GEV_EXPORT size_t ringbuffer_read(ringbuffer *rb, void *dst, size_t n);

/**
 * Describe up to @p n stored bytes as at most two segments, without
 * consuming them. seg[1].iov_len is 0 when one segment suffices; unused
 * segments are zeroed. The pointers stay valid until the next call that
 * writes, grows, linearizes or shrinks the buffer.
 * @param rb the ring buffer
 * @param n the most bytes to describe
 * @param seg receives the segments
 * @return the number of bytes described (min(n, len)).
 */
GEV_EXPORT size_t ringbuffer_peek(const ringbuffer *rb, size_t n,
                                  struct iovec seg[2]);

/**
 * Consume @p n bytes without copying them. n larger than len consumes all.
 * @param rb the ring buffer
 * @param n how many bytes to consume
 */
GEV_EXPORT void ringbuffer_retrieve(ringbuffer *rb, size_t n);

/**
 * Consume every stored byte. The storage is kept.
 * @param rb the ring buffer
 */
GEV_EXPORT void ringbuffer_retrieve_all(ringbuffer *rb);

/**
 * Make the first @p n stored bytes contiguous, rotating the storage in
 * place (no allocation), and return a pointer to them inside the buffer.
 * The pointer is valid until the next call that writes, grows, linearizes
 * or shrinks the buffer.
 * @param rb the ring buffer
 * @param n how many bytes to make contiguous
 * @return the pointer; NULL when n > len or when n is 0 and nothing is
 *         allocated.
 */
GEV_EXPORT void *ringbuffer_linearize(ringbuffer *rb, size_t n);

/**
 * Find the first occurrence of the @p m bytes at @p needle in the stored
 * bytes, including occurrences split by the wrap.
 * @param rb the ring buffer
 * @param needle the bytes to look for
 * @param m the length of @p needle
 * @return the offset from the first stored byte, or -1 when absent (also
 *         when m is 0).
 */
GEV_EXPORT ssize_t ringbuffer_find(const ringbuffer *rb, const void *needle,
                                   size_t m);

/**
 * Extension: ringbuffer_find starting at offset @p from, for a parser that
 * waits for a delimiter: it remembers how far it has looked (the length
 * minus m - 1, since a match may begin in the last m - 1 bytes) and looks
 * on from there when more bytes arrived, instead of rescanning from the
 * first byte on every call. Matches split by the wrap are found too.
 * @param rb the ring buffer
 * @param from the first offset a match may begin at (0 is ringbuffer_find)
 * @param needle the bytes to look for
 * @param m the length of @p needle
 * @return the offset (>= from) from the first stored byte, or -1 when
 *         absent (also when m is 0 or from + m exceeds the length).
 */
GEV_EXPORT ssize_t ringbuffer_find_from(const ringbuffer *rb, size_t from,
                                        const void *needle, size_t m);

/**
 * Extension: make room for @p n more bytes without storing any, growing
 * the storage as ringbuffer_write would. A following ringbuffer_write (or
 * several) of up to n bytes in total then neither fails nor allocates: how
 * an encoder that writes a header and a payload separately stays all or
 * nothing.
 * @param rb the ring buffer
 * @param n the bytes to make room for
 * @return 0; -ENOBUFS when len + n would exceed the limit or SSIZE_MAX;
 *         -ENOMEM when growing failed. On error nothing changes.
 */
GEV_EXPORT int ringbuffer_reserve(ringbuffer *rb, size_t n);

/**
 * Read from @p fd with one system call: into the free space plus, when that
 * is under 64 KiB and the limit allows more, a 64 KiB spill area on the
 * stack (readv), then store what the spill area received (growing the
 * buffer); with 64 KiB or more of contiguous room, a plain read. It never reads
 * more than the limit allows, so the limit never drops a byte. Only ENOMEM
 * while storing the spilled bytes can lose them; the stream is then broken and
 * should be closed. Not a pthread cancellation point (the system call is made
 * directly).
 * @param rb the ring buffer
 * @param fd the descriptor to read from
 * @param saved_errno receives errno on error; may be NULL
 * @return the bytes read; 0 at end of file; -1 on error with *saved_errno
 *         set (ENOBUFS when the buffer is at its limit, EAGAIN, ENOMEM...).
 *         saved_errno may be NULL.
 */
GEV_EXPORT ssize_t ringbuffer_read_fd(ringbuffer *rb, int fd, int *saved_errno);

/**
 * Write the stored bytes to @p fd with one call over both segments (send
 * for one segment, sendmsg for two) and consume what was written. On
 * sockets it sends with MSG_NOSIGNAL, so a
 * closed peer gives EPIPE and never raises SIGPIPE; on other descriptors it
 * uses writev, which still raises SIGPIPE on a pipe without a reader.
 * Not a pthread cancellation point on sockets.
 * @param rb the ring buffer
 * @param fd the descriptor to write to
 * @param saved_errno receives errno on error; may be NULL
 * @return the bytes written; 0 when nothing is stored; -1 on error with
 *         *saved_errno set. saved_errno may be NULL.
 */
GEV_EXPORT ssize_t ringbuffer_write_fd(ringbuffer *rb, int fd,
                                       int *saved_errno);

/**
 * Extension: move the first @p n bytes of @p src (all of them when fewer
 * are stored) to the end of @p dst, all or nothing. When @p dst is empty
 * and all of @p src moves, the two buffers exchange their storage instead
 * of copying (unless that would leave either with a capacity above its
 * limit): @p dst takes over the allocation holding the bytes and @p src
 * continues with @p dst's former, empty one. Limits stay with their buffer.
 * An echo or a relay passes what it read on this way for the cost of a few
 * stores. Pointers from peek or linearize into either buffer are invalid
 * afterwards.
 * @param dst the buffer the bytes are appended to
 * @param src the buffer the bytes are taken from
 * @param n the most bytes to move
 * @return the bytes moved; -ENOBUFS when they would take @p dst past its
 *         limit or SSIZE_MAX; -ENOMEM when growing @p dst failed; -EINVAL
 *         when @p dst and @p src are the same buffer. On error nothing
 *         changes.
 */
GEV_EXPORT ssize_t ringbuffer_move(ringbuffer *dst, ringbuffer *src, size_t n);

/**
 * Extension: release the storage when the buffer is empty and its capacity
 * exceeds @p keep bytes, so an idle owner holds no large allocation.
 * @param rb the ring buffer
 * @param keep the capacity, in bytes, to keep
 * @return the capacity afterwards.
 */
GEV_EXPORT size_t ringbuffer_shrink(ringbuffer *rb, size_t keep);

#ifdef __cplusplus
}
#endif

#endif /* GEV_RINGBUFFER_H */
