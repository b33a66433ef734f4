/*
 * frame.h - framing helpers: whole messages out of a byte stream, and
 * messages into one.
 *
 * TCP delivers bytes, not messages: one read may hold half a message or
 * ten. A handler's on_message calls one of the two framers on `in` until
 * it reports no whole frame, handles each frame it reports, and consumes it
 * (gev_frame_consume); a partial frame stays in `in` for the next call.
 *
 *   - The length framer: a header of `offset` bytes (a type, a version:
 *     whatever the protocol puts there), then an unsigned length field of
 *     1, 2, 4 or 8 bytes, big or little endian, counting the payload alone
 *     or the header too, then the payload.
 *   - The delimiter framer: a frame ends with a byte string ("\r\n", "\n",
 *     "\0", "\r\n\r\n", ...).
 *
 * Each has a maximum frame size. A peer that announces (length) or sends
 * (delimiter) more gets -EMSGSIZE as soon as that is known, before the
 * bytes are waited for; the handler then usually closes that connection
 * (gev_conn_close, or gev_conn_abort when it will not read a reply).
 *
 * A frame is handed over as its payload's segments: one, or two when it
 * straddles the ring buffer's wrap, so nothing is copied;
 * gev_frame_linearize makes it one contiguous span when the parser needs
 * that. The encoders append a whole frame to `out`, or nothing.
 *
 * Pure functions over a ring buffer: no I/O, no allocation but the ring
 * buffer's own growth, no global state. Any thread, on buffers the caller
 * owns.
 */
#ifndef GEV_FRAME_H
#define GEV_FRAME_H

#include <gev/ringbuffer.h>

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A length-prefixed protocol's header. Zero-initialize and set. */
typedef struct gev_frame_length {
  /** Bytes before the length field; they are part of the header. */
  size_t offset;
  /** The length field's size in bytes: 1, 2, 4 or 8. */
  unsigned size;
  /** The field is little endian; false (the default): big endian. */
  bool little_endian;
  /** The field counts the header (offset + size) too, not only the
   *  payload. */
  bool includes_header;
  /** The largest whole frame (header and payload) accepted, in bytes;
   *  0: no limit of its own (the connection's max_buffer still is one). */
  size_t max_frame;
} gev_frame_length;

/** A delimited protocol. Zero-initialize and set. */
typedef struct gev_frame_delim {
  const void *delim; /**< the bytes that end a frame */
  size_t delim_len;  /**< their number, at least 1 */
  /** The largest whole frame (payload and delimiter) accepted, in bytes;
   *  0: no limit of its own. */
  size_t max_frame;
} gev_frame_delim;

/**
 * One frame at the front of a buffer, as a framer found it. Also the
 * delimiter framer's memory between calls: a gev_frame kept with the
 * connection (zero-initialized) lets it look only at bytes it has not
 * searched yet; a fresh zeroed one each call works too, rescanning.
 */
typedef struct gev_frame {
  size_t header;  /**< bytes before the payload (0 for delimited frames) */
  size_t payload; /**< payload bytes (the delimiter excluded) */
  /** The whole frame: header, payload and delimiter. Also set when the
   *  frame is incomplete but its header is in (how much to wait for). */
  size_t size;
  /** The payload in the buffer: seg[1].iov_len is 0 unless the payload
   *  straddles the wrap. Valid until the buffer changes. */
  struct iovec seg[2];
  /* The delimiter framer's place, not for the caller: how far the buffer
   * was searched, and its length then. */
  size_t scanned_, seen_;
} gev_frame;

/**
 * Look for a length-prefixed frame at the front of @p in, without
 * consuming anything. The header may straddle the wrap.
 * @param in the buffer (a handler's `in`)
 * @param spec the header's layout
 * @param f receives the frame
 * @return 1 when a whole frame is there (f describes it); 0 when more
 *         bytes are needed (f->size is the frame's size once the header is
 *         in, else 0); -EMSGSIZE when the header announces a frame over
 *         spec->max_frame (or one that cannot be stored: over SIZE_MAX);
 *         -EPROTO when spec->includes_header and the length is smaller
 *         than the header; -EINVAL for NULL or a field size not 1, 2, 4,
 *         8.
 */
GEV_EXPORT int gev_frame_length_next(const ringbuffer *in,
                                     const gev_frame_length *spec,
                                     gev_frame *f);

/**
 * Look for a delimited frame at the front of @p in, without consuming
 * anything. A delimiter split by the wrap is found. With the same @p f
 * kept between calls, each byte is searched once however many pieces a
 * frame arrives in (the last delim_len - 1 bytes again); f forgets its
 * place when it reports a frame, and when @p in got shorter. So keep it
 * only if bytes leave @p in through the frames it reports (or zero it
 * after consuming otherwise).
 * @param in the buffer (a handler's `in`)
 * @param spec the delimiter
 * @param f receives the frame; carries the search's place between calls
 * @return 1 when a whole frame is there; 0 when more bytes are needed;
 *         -EMSGSIZE when no delimiter ends within spec->max_frame bytes
 *         (known once that many are stored, or a delimiter is found past
 *         it); -EINVAL for NULL or delim_len 0.
 */
GEV_EXPORT int gev_frame_delim_next(const ringbuffer *in,
                                    const gev_frame_delim *spec, gev_frame *f);

/**
 * Make the frame @p f (just reported for @p in) contiguous, in place (no
 * allocation: ringbuffer_linearize), and point f->seg[0] at its payload.
 * @param in the buffer the frame was found in, unchanged since
 * @param f the frame
 * @return the payload (valid until the buffer changes); NULL for NULL
 *         arguments or a frame larger than what @p in holds.
 */
GEV_EXPORT void *gev_frame_linearize(ringbuffer *in, gev_frame *f);

/**
 * Consume the frame @p f (header, payload and delimiter) from @p in.
 * @param in the buffer the frame was found in
 * @param f the frame
 */
GEV_EXPORT void gev_frame_consume(ringbuffer *in, const gev_frame *f);

/**
 * Append one length-prefixed frame to @p out: @p spec->offset bytes from
 * @p prefix (zeros when NULL), the length field, the payload. All or
 * nothing.
 * @param out the buffer (a handler's `out`)
 * @param spec the header's layout
 * @param prefix the bytes before the length field; NULL for zeros
 * @param payload the payload (may be NULL when n is 0)
 * @param n the payload's size in bytes
 * @return 0; -EMSGSIZE when the frame is over spec->max_frame or its length
 *         does not fit the field; -ENOBUFS past @p out's limit; -ENOMEM;
 *         -EINVAL for NULL or a bad field size. On error nothing is
 *         appended.
 */
GEV_EXPORT int gev_frame_length_put(ringbuffer *out,
                                    const gev_frame_length *spec,
                                    const void *prefix, const void *payload,
                                    size_t n);

/**
 * Append one delimited frame to @p out: the payload, then the delimiter.
 * All or nothing. The payload is not searched for the delimiter: a payload
 * holding it would read as two frames.
 * @param out the buffer (a handler's `out`)
 * @param spec the delimiter
 * @param payload the payload (may be NULL when n is 0)
 * @param n the payload's size in bytes
 * @return 0; -EMSGSIZE over spec->max_frame; -ENOBUFS past @p out's limit;
 *         -ENOMEM; -EINVAL for NULL or delim_len 0. On error nothing is
 *         appended.
 */
GEV_EXPORT int gev_frame_delim_put(ringbuffer *out, const gev_frame_delim *spec,
                                   const void *payload, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* GEV_FRAME_H */
