/* tensor.h - decodes a KServe v2 inference request: JSON, or JSON plus Triton binary tensors.
 *
 * Usage, in two steps so that nothing sized by the data is allocated before the caller has checked
 * the declared shape against its model (and its memory budget):
 *
 *     infer_request q;
 *     if (infer_request_parse(body, len, header_len, max_elems, &q, err, sizeof err) != SRV_OK)
 *         reply 400;                      // the envelope, the shape, the data's structure and
 * count
 *     ... check q.shape against the model; reserve infer_request_load_bytes(&q) ...
 *     if (infer_request_load(&q, err, sizeof err) != SRV_OK) reply 400;  // converts the data
 *     ... q.data holds q.count floats of shape q.shape, or q.elems holds encoded images ...
 *     infer_request_free(&q);
 *
 * header_len is the Inference-Header-Content-Length value (the JSON part), or 0 when the whole body
 * is JSON. The body must outlive q (binary BYTES elements point into it). The JSON is read by
 * jscan.c, which never builds a tree of the data; jansson reads only the rest (the envelope), with
 * the data array blanked out. The parser takes a byte view and never reads past it; it is a fuzz
 * target.
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
    /* where the data is, from infer_request_parse to infer_request_load */
    const char *json_data; /* the data array's bytes, when the data is JSON */
    size_t json_data_len;
    bool nested;        /* data is nested row-major rather than flat */
    const uint8_t *bin; /* the binary tensor data, when it is binary */
    size_t binlen;

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

/* Reads the envelope and checks the data's structure against the declared shape. SRV_BAD_REQUEST
 * with a precise message for malformed JSON, missing or wrongly typed fields, more than one input,
 * unknown datatypes, data that does not match the shape (or the binary size), and data of more
 * than 2 * max_elems + 16 values (max_elems: the model's largest input, 0 for no limit; nested
 * arrays count as values too), which is refused as soon as the scanner has counted that many,
 * before any tree or buffer exists. */
srv_status infer_request_parse(const char *body, size_t len, size_t header_len, size_t max_elems,
                               infer_request *q, char *err, size_t errlen);
/* The bytes infer_request_load() will allocate. */
size_t infer_request_load_bytes(const infer_request *q);
/* Converts the data: q->data (numbers, as float32) or q->elems (BYTES, decoded). SRV_BAD_REQUEST
 * for values of the wrong kind or out of range, invalid base64; SRV_UNAVAILABLE when out of
 * memory. */
srv_status infer_request_load(infer_request *q, char *err, size_t errlen);
void infer_request_free(infer_request *q);

const char *tensor_dtype_name(tensor_dtype t);

#endif
