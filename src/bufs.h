/* bufs.h - internal: not installed. A loop's shared I/O buffers and its
 * pool of spare buffers.
 *
 * A connection with nothing pending owns no buffer: it reads into its
 * loop's shared input buffer and its handler replies into the shared output
 * buffer. What is left over moves to the connection (adopt), and buffers a
 * connection no longer needs go back to the pool. An idle connection
 * therefore holds no buffer memory and the steady-state echo path
 * allocates nothing. The loop's thread only; a leaf (ring buffers and libc). */
#ifndef GEV_SRC_BUFS_H
#define GEV_SRC_BUFS_H

#include <stdbool.h>
#include <stddef.h>

#include <gev/ringbuffer.h>

/* The shared buffers' size: one read takes up to this much. */
#define GEV__SHARED_CAP (64 * 1024)

typedef struct gev__bufs {
  ringbuffer *in;       /* read target for connections without held input */
  ringbuffer *out;      /* reply target for connections without queued output */
  ringbuffer *pool[16]; /* spare buffers for connections that need their own */
  int npool;
  bool trim_armed; /* a shrink of the shared buffers is due (conn.c's timer) */
} gev__bufs;

/* Both shared buffers capped at max_buffer (0: no cap). 0 or -ENOMEM. */
int gev__bufs_init(gev__bufs *b, size_t max_buffer);
void gev__bufs_free(gev__bufs *b);

/* A spare capped at max_buffer; NULL on ENOMEM. */
ringbuffer *gev__bufs_get(gev__bufs *b, size_t max_buffer);
/* Takes rb back, emptied and shrunk, or frees it when the pool is full. */
void gev__bufs_put(gev__bufs *b, ringbuffer *rb);

/* Moves the bytes of the shared buffer *shared into a buffer of the
 * connection's, stored in *own: usually by swapping in a spare (no copy);
 * by a copy into a right-sized spare when little of a large shared buffer
 * is used. false on ENOMEM (nothing moved). */
bool gev__bufs_adopt(gev__bufs *b, ringbuffer **shared, ringbuffer **own,
                     size_t max_buffer);

/* Gives oversized, empty shared buffers fresh GEV__SHARED_CAP storage. */
void gev__bufs_trim(gev__bufs *b);

#endif
