/* safetensors.h - a strict reader of the safetensors format (8-byte length, JSON header, raw
 * bytes).
 *
 * Usage:
 *     st_file *f;
 *     char err[256];
 *     if (st_parse(bytes, len, &f, err, sizeof err) != ENGINE_OK) { report(err); }
 *     const st_tensor *t = st_find(f, "conv.0.weight");
 *     float *w = malloc(t->nelem * sizeof *w);
 *     st_to_f32(t, w);            // converts F16 / BF16 / F64 to float
 *     st_destroy(f);              // the tensors point into `bytes`: keep them alive until here
 *
 * st_parse() takes a byte view and never reads past it; it is a fuzz target. It applies every check
 * of the reference implementation: header size bounds, a JSON object without duplicate keys, known
 * dtypes, integer shapes, overflow-checked sizes, and offsets that cover the data buffer exactly
 * (no overlap, no hole, nothing past the end).
 */
#ifndef CONVSERVE_SAFETENSORS_H
#define CONVSERVE_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

enum {
    ST_MAX_HEADER = 100000000, /* bytes; the reference implementation's MAX_HEADER_SIZE */
    ST_MAX_RANK = 8,
    ST_MAX_NAME = 256, /* bytes of a tensor name, NUL included */
};

#define ST_DTYPE_MAP(XX)                                                                           \
    XX(ST_BOOL, "BOOL", 1)                                                                         \
    XX(ST_U8, "U8", 1)                                                                             \
    XX(ST_I8, "I8", 1)                                                                             \
    XX(ST_I16, "I16", 2)                                                                           \
    XX(ST_U16, "U16", 2)                                                                           \
    XX(ST_F16, "F16", 2)                                                                           \
    XX(ST_BF16, "BF16", 2)                                                                         \
    XX(ST_I32, "I32", 4)                                                                           \
    XX(ST_U32, "U32", 4)                                                                           \
    XX(ST_F32, "F32", 4)                                                                           \
    XX(ST_F64, "F64", 8)                                                                           \
    XX(ST_I64, "I64", 8)                                                                           \
    XX(ST_U64, "U64", 8)

typedef enum {
#define ST_DTYPE_ENUM(e, s, n) e,
    ST_DTYPE_MAP(ST_DTYPE_ENUM)
#undef ST_DTYPE_ENUM
} st_dtype;

const char *st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t);
/* True for the dtypes st_to_f32 converts: F32, F16, BF16, F64. */
bool st_dtype_is_float(st_dtype t);

typedef struct {
    char name[ST_MAX_NAME];
    st_dtype dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    uint64_t nelem;
    const uint8_t *data; /* points into the parsed buffer; nbytes = nelem * dtype size */
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

engine_status st_parse(const uint8_t *buf, size_t len, st_file **out, char *err, size_t errlen);
void st_destroy(st_file *f);

size_t st_count(const st_file *f);
const st_tensor *st_get(const st_file *f, size_t i); /* in file order (sorted by offset) */
const st_tensor *st_find(const st_file *f, const char *name);

/* Converts a float tensor (F32, F16, BF16, F64) to float32 in `out` (nelem floats). Unaligned data
 * is fine: elements are read with memcpy. Returns false for non-float dtypes. */
bool st_to_f32(const st_tensor *t, float *out);

/* Writes a safetensors file holding F32 tensors, for tools and tests: names[i] with shapes[i]
 * (ranks[i] dims) and data[i]. Header padded with spaces to a multiple of 8, as the reference does.
 */
engine_status st_write_f32(const char *path, size_t n, const char *const *names, const int *ranks,
                           const int64_t *const *shapes, const float *const *data, char *err,
                           size_t errlen);

#endif
