/* strerror.c - error names. */
#include <gev/common.h>

#include <string.h>

const char *gev_strerror(int err)
{
  const char *s;

  if (err == 0)
    return "Success";
  /* strerrordesc_np returns a static string: safe from any thread, unlike
   * strerror, and without a caller-supplied buffer. */
  s = strerrordesc_np(err < 0 ? -err : err);
  return s ? s : "Unknown error";
}
