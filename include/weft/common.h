/* weft/common.h — what every weft header needs: the export marker and the
 * C linkage wrapper for C++.
 *
 * weft is built with hidden visibility; only declarations marked WEFT_API
 * leave libweft.so. Errors are negative errno values (see weft_strerror).
 */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#if defined(WEFT_BUILDING) && defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

/* Every header's declarations sit between these, so that C++ sees them
 * with C linkage (the library is C: unmangled names). */
#ifdef __cplusplus
#define WEFT_BEGIN_DECLS extern "C" {
#define WEFT_END_DECLS }
#else
#define WEFT_BEGIN_DECLS
#define WEFT_END_DECLS
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

#endif
