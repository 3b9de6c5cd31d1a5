/* tensor.h - decodes a KServe v2 inference request: JSON, or JSON plus Triton binary tensors.
 *
 * Usage:
 *     infer_request q;
 *     if (infer_request_parse(body, len, header_len, &q, err, sizeof err) != SRV_OK) reply 400;
 *     ... q.data holds q.count floats of shape q.shape, or q.elems holds encoded images ...
 *     infer_request_free(&q);
 *
 * header_len is the Inference-Header-Content-Length value (the JSON part), or 0 when the whole body
 * is JSON. The parser takes a byte view and never reads past it; it is a fuzz target. Sizes are
 * checked before anything is allocated from them: the data must really be in the body.
 */
#ifndef CONVSERVE_TENSOR_H
#define CONVSERVE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h"
#include "status.h"

enum {
    TENSOR_MAX_RANK = 8,
    TENSOR_MAX_ID = 256,             /* bytes of the request id */
    TENSOR_MAX_NAME = SPEC_MAX_NAME, /* bytes of an input or output name, as model.json's */
    TENSOR_MAX_OUTPUTS = 8,
};

#define TENSOR_DTYPE_MAP(XX)                                                                       \
    XX(TENSOR_BOOL, "BOOL", 1)                                                                     \
    XX(TENSOR_UINT8, "UINT8", 1)                                                                   \
    XX(TENSOR_UINT16, "UINT16", 2)                                                                 \
    XX(TENSOR_UINT32, "UINT32", 4)                                                                 \
    XX(TENSOR_UINT64, "UINT64", 8)                                                                 \
    XX(TENSOR_INT8, "INT8", 1)                                                                     \
    XX(TENSOR_INT16, "INT16", 2)                                                                   \
    XX(TENSOR_INT32, "INT32", 4)                                                                   \
    XX(TENSOR_INT64, "INT64", 8)                                                                   \
    XX(TENSOR_FP16, "FP16", 2)                                                                     \
    XX(TENSOR_FP32, "FP32", 4)                                                                     \
    XX(TENSOR_FP64, "FP64", 8)                                                                     \
    XX(TENSOR_BYTES, "BYTES", 0)

typedef enum {
#define TENSOR_DTYPE_ENUM(e, s, n) e,
    TENSOR_DTYPE_MAP(TENSOR_DTYPE_ENUM)
#undef TENSOR_DTYPE_ENUM
} tensor_dtype;

typedef struct {
    const uint8_t *data; /* an encoded image: points into the body or into `owned` */
    size_t len;
} tensor_bytes;

typedef struct {
    char id[TENSOR_MAX_ID];
    bool has_id;
    bool layer_shapes;  /* parameters.layer_shapes */
    bool binary_output; /* parameters.binary_data_output, or the output's parameters.binary_data */
    char output_names[TENSOR_MAX_OUTPUTS][TENSOR_MAX_NAME];
    int noutputs; /* 0 = all outputs */

    char input_name[TENSOR_MAX_NAME];
    tensor_dtype dtype;
    int rank;
    int64_t shape[TENSOR_MAX_RANK];

    float *data; /* numeric inputs, converted to float32; malloc'd */
    size_t count;

    tensor_bytes *elems; /* BYTES inputs; malloc'd array */
    size_t nelems;
    uint8_t *owned; /* base64-decoded bytes the elems point into */
} infer_request;

/* Parses and converts. SRV_BAD_REQUEST with a precise message for malformed JSON, missing or
 * wrongly typed fields, more than one input, unknown datatypes, data that does not match the shape
 * (or the binary size), non-numbers in data, and out-of-range integers. */
srv_status infer_request_parse(const char *body, size_t len, size_t header_len, infer_request *q,
                               char *err, size_t errlen);
void infer_request_free(infer_request *q);

const char *tensor_dtype_name(tensor_dtype t);

#endif
