/* half-close - a client that says everything at once and then only
 * listens, as `nc -N` or an HTTP/1.0 client does: connects to 127.0.0.1:PORT,
 * sends MESSAGE, shuts down its write side (FIN), and prints what comes
 * back until the server closes. Through examples/proxy this shows the FIN
 * being relayed while the answer still flows back.
 *
 *   half-close PORT MESSAGE
 *
 * Exit status 0 after the server's EOF, 1 on an error or after 10 s. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
  struct sockaddr_in a = {.sin_family = AF_INET};
  struct timeval tv = {.tv_sec = 10};
  const char *msg;
  char buf[4096];
  size_t len, off = 0;
  ssize_t n;
  int fd;

  if (argc != 3) {
    fprintf(stderr, "usage: half-close PORT MESSAGE\n");
    return 2;
  }
  msg = argv[2];
  len = strlen(msg);
  a.sin_port = htons((unsigned short)atoi(argv[1]));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
      connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    perror("half-close: connect");
    return 1;
  }
  while (off < len) {
    n = send(fd, msg + off, len - off, MSG_NOSIGNAL);
    if (n < 0) {
      perror("half-close: send");
      return 1;
    }
    off += (size_t)n;
  }
  if (shutdown(fd, SHUT_WR) < 0) {
    perror("half-close: shutdown");
    return 1;
  }
  while ((n = read(fd, buf, sizeof(buf))) > 0)
    fwrite(buf, 1, (size_t)n, stdout);
  if (n < 0) {
    perror("half-close: read (no EOF within 10 s?)");
    return 1;
  }
  close(fd);
  return 0;
}
