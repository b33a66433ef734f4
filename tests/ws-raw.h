/* ws-raw.h - a WebSocket peer over a raw blocking socket, for the
 * conformance tests: it builds any frame (bad ones included), sends it in
 * pieces of any size, and reads frames back. Every read is bounded by the
 * socket's 10 s timeout (th_connect). Header-only, static functions. */
#ifndef GEV_TEST_WS_RAW_H
#define GEV_TEST_WS_RAW_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define RAW_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RAW_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Reads an HTTP head (through the blank line) into buf; its length, or -1. */
static inline int raw_read_head(int fd, char *buf, size_t cap)
{
  size_t n = 0;

  while (n + 1 < cap) {
    ssize_t r = read(fd, buf + n, 1); /* one byte: leave frames unread */
    if (r <= 0)
      return -1;
    n++;
    buf[n] = '\0';
    if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0)
      return (int)n;
  }
  return -1;
}

/* Sends @p req (a whole request head) and returns the answer's status. */
static inline int raw_request(int fd, const char *req, char *head, size_t cap)
{
  int status = 0;

  ck_assert(th_write_all(fd, req, strlen(req)));
  if (raw_read_head(fd, head, cap) < 0)
    return -1;
  sscanf(head, "HTTP/1.1 %d", &status);
  return status;
}

/* A connection with the handshake done, to @p path. */
static inline int raw_open(int port, const char *path)
{
  char req[512], head[1024];
  int fd = th_connect(port);

  ck_assert(fd >= 0);
  snprintf(req, sizeof(req),
           "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: " RAW_KEY "\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n",
           path);
  ck_assert_int_eq(raw_request(fd, req, head, sizeof(head)), 101);
  ck_assert_msg(strstr(head, "Sec-WebSocket-Accept: " RAW_ACCEPT "\r\n"), "%s",
                head);
  return fd;
}

/* Builds a frame: b0 is the first byte (FIN, RSV, opcode); masked with a
 * key of its own unless @p mask is false. Returns a malloc'ed frame. */
static inline unsigned char *raw_frame(unsigned b0, const void *p, size_t n,
                                       bool mask, size_t *out_len)
{
  unsigned char *f = malloc(n + 14), key[4] = {0x12, 0x9e, 0x4a, 0xc3};
  size_t k = 2;

  ck_assert(f);
  f[0] = (unsigned char)b0;
  if (n < 126) {
    f[1] = (unsigned char)n;
  } else if (n <= 0xffff) {
    f[1] = 126;
    f[2] = (unsigned char)(n >> 8);
    f[3] = (unsigned char)n;
    k = 4;
  } else {
    f[1] = 127;
    for (int i = 0; i < 8; i++)
      f[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    k = 10;
  }
  if (mask) {
    f[1] |= 0x80;
    memcpy(f + k, key, 4);
    k += 4;
  }
  for (size_t i = 0; i < n; i++)
    f[k + i] = (unsigned char)(((const unsigned char *)p)[i] ^
                               (mask ? key[i & 3] : 0));
  *out_len = k + n;
  return f;
}

/* Sends a frame in pieces of @p chunk bytes (0: at once). */
static inline void raw_send_chunked(int fd, unsigned b0, const void *p,
                                    size_t n, bool mask, size_t chunk)
{
  size_t len;
  unsigned char *f = raw_frame(b0, p, n, mask, &len);

  if (!chunk)
    chunk = len;
  for (size_t off = 0; off < len; off += chunk)
    ck_assert(th_write_all(fd, f + off, len - off < chunk ? len - off : chunk));
  free(f);
}

static inline void raw_send(int fd, unsigned b0, const void *p, size_t n)
{
  raw_send_chunked(fd, b0, p, n, true, 0);
}

/* Reads one frame: its first byte, payload (malloc'ed, NUL-terminated)
 * and length. false on EOF, error or timeout; the server's frames must be
 * unmasked. */
static inline bool raw_read(int fd, unsigned *b0, unsigned char **p, size_t *n)
{
  unsigned char h[10];
  uint64_t len;

  if (!th_read_exact(fd, h, 2))
    return false;
  ck_assert_msg(!(h[1] & 0x80), "a server frame was masked");
  len = h[1] & 0x7f;
  if (len == 126) {
    ck_assert(th_read_exact(fd, h + 2, 2));
    len = (uint64_t)h[2] << 8 | h[3];
  } else if (len == 127) {
    ck_assert(th_read_exact(fd, h + 2, 8));
    len = 0;
    for (int i = 0; i < 8; i++)
      len = len << 8 | h[2 + i];
  }
  ck_assert(len < (1u << 30));
  *b0 = h[0];
  *n = (size_t)len;
  *p = malloc(len + 1);
  ck_assert(*p);
  (*p)[len] = '\0';
  return len == 0 || th_read_exact(fd, *p, (size_t)len);
}

/* The next frame must be exactly this one. */
static inline void raw_expect(int fd, unsigned b0, const void *p, size_t n)
{
  unsigned got;
  unsigned char *q;
  size_t len;

  ck_assert_msg(raw_read(fd, &got, &q, &len), "no frame (want 0x%02x, %zu)", b0,
                n);
  ck_assert_msg(got == b0, "frame 0x%02x, want 0x%02x", got, b0);
  ck_assert_msg(len == n, "frame of %zu bytes, want %zu", len, n);
  ck_assert(n == 0 || memcmp(q, p, n) == 0);
  free(q);
}

/* The server sends Close with @p code (-1: no payload) and then closes the
 * TCP connection once we answered. Frames before the Close are skipped. */
static inline void raw_expect_close(int fd, int code)
{
  unsigned b0;
  unsigned char *q;
  size_t len;

  for (int i = 0; i < 1000; i++) {
    ck_assert_msg(raw_read(fd, &b0, &q, &len), "no Close (want %d)", code);
    if (b0 == 0x88)
      break;
    free(q);
  }
  ck_assert_uint_eq(b0, 0x88);
  if (code < 0) {
    ck_assert_uint_eq(len, 0);
  } else {
    ck_assert_uint_ge(len, 2);
    ck_assert_int_eq((q[0] << 8) | q[1], code);
  }
  free(q);
  raw_send(fd, 0x88, "\x03\xe8", 2);
  ck_assert_msg(th_wait_eof(fd, 10000), "no TCP close after the Close");
  close(fd);
}

#endif
