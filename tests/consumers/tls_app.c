/* The TLS add-on seen from a CMake consumer (gev::tls): a client context
 * with the system's trust store, and the transport table. Prints "ok". */
#include <gev/gev.h>
#include <gev/tls.h>

#include <stdio.h>

int main(void)
{
  gev_tls_options o = {0};
  gev_tls_ctx *ctx;
  int err = gev_tls_ctx_new(&ctx, &o);

  if (err < 0 || !gev_tls_transport()) {
    fprintf(stderr, "gev_tls_ctx_new: %s\n", gev_strerror(err));
    return 1;
  }
  gev_tls_ctx_unref(ctx);
  puts("ok");
  return 0;
}
