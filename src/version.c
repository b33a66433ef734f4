/* version.c - the library's own version, for programs to compare with the
 * headers they were compiled against (GEV_VERSION). */
#include <gev/version.h>

uint32_t gev_version(void)
{
  return GEV_VERSION;
}

const char *gev_version_string(void)
{
  return GEV_VERSION_STRING;
}
