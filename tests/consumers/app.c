/* A consumer of gev, built by CMake (find_package) and by meson (as a
 * subproject): it runs a standalone loop with a timer that stops it, and
 * checks that the headers it was compiled with and the library it runs on
 * agree on the version. Prints "ok VERSION" and exits 0. */
#include <gev/gev.h>

#include <stdio.h>
#include <string.h>

static void stop(void *arg)
{
  gev_loop_stop(arg);
}

int main(void)
{
  gev_loop *l;
  int err = gev_loop_new(&l);

  if (err < 0) {
    fprintf(stderr, "gev_loop_new: %s\n", gev_strerror(err));
    return 1;
  }
  if (gev_loop_run_after(l, 10, stop, l) == 0 || gev_loop_run(l) != 0) {
    fprintf(stderr, "the loop did not run\n");
    return 1;
  }
  gev_loop_free(l);
  if (gev_version() != GEV_VERSION ||
      strcmp(gev_version_string(), GEV_VERSION_STRING) != 0) {
    fprintf(stderr, "headers %s, library %s\n", GEV_VERSION_STRING,
            gev_version_string());
    return 1;
  }
  printf("ok %s\n", gev_version_string());
  return 0;
}
