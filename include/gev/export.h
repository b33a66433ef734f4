/*
 * export.h - GEV_EXPORT, the mark of every exported declaration. The
 * library builds with hidden visibility; only what carries this mark is
 * part of its ABI. Included by every public header.
 */
#ifndef GEV_EXPORT_H
#define GEV_EXPORT_H

#ifndef GEV_EXPORT
#define GEV_EXPORT __attribute__((visibility("default")))
#endif

#endif /* GEV_EXPORT_H */
