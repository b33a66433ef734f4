/*
 * version.h - the version of gev: at compile time (GEV_VERSION_*) and of
 * the library actually loaded (gev_version). Included by <gev/gev.h>.
 *
 * gev follows semantic versioning (doc/versioning.md): MAJOR changes break
 * the API or the ABI, MINOR adds to them, PATCH fixes. While MAJOR is 0, a
 * MINOR bump may break; the soname (libgev.so.N) changes with every
 * ABI break.
 */
#ifndef GEV_VERSION_H
#define GEV_VERSION_H

#include <stdint.h>

#include <gev/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Major version of the headers being compiled against. */
#define GEV_VERSION_MAJOR 0
/** Minor version of the headers being compiled against. */
#define GEV_VERSION_MINOR 2
/** Patch version of the headers being compiled against. */
#define GEV_VERSION_PATCH 0
/** The version as "MAJOR.MINOR.PATCH". */
#define GEV_VERSION_STRING "0.2.0"
/** The version as one number, (MAJOR << 16) | (MINOR << 8) | PATCH, so
 *  versions compare with < and >. */
#define GEV_VERSION                                                            \
  ((GEV_VERSION_MAJOR << 16) | (GEV_VERSION_MINOR << 8) | GEV_VERSION_PATCH)

/**
 * The version of the library loaded at run time, which may be newer than
 * the headers a program was compiled with. Any thread.
 * @return (MAJOR << 16) | (MINOR << 8) | PATCH, comparable with GEV_VERSION.
 */
GEV_EXPORT uint32_t gev_version(void);

/**
 * The version of the library loaded at run time, as text. Any thread.
 * @return "MAJOR.MINOR.PATCH", a static string.
 */
GEV_EXPORT const char *gev_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* GEV_VERSION_H */
