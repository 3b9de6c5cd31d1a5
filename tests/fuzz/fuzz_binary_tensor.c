/* fuzz_binary_tensor.c - infer_request_parse with the Triton binary tensor framing: a JSON header
 * of header_len bytes followed by raw tensor bytes.
 *
 * Input layout: 4 bytes little-endian, then the body. The value picks header_len modulo
 * (body length + 2), so every split of the body is reachable, as is a header_len one past its
 * end (the "beyond the body" error); a seed that stores the exact header_len keeps its meaning. */
#include "infer_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { PREFIX = 4 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX)
        return 0;
    uint32_t raw = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                   (uint32_t)data[3] << 24;
    size_t len = size - PREFIX;
    size_t header_len = raw % (len + 2);
    char *body = (char *)fuzz_exact_copy(data + PREFIX, len);
    infer_check(body, len, header_len);
    free(body);
    return 0;
}
