/* fuzz_infer_json.c - infer_request_parse on a whole-JSON body (header_len 0): the KServe v2
 * envelope, the fast number scanner and the jansson path behind it. */
#include "infer_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    infer_check((const char *)data, size, 0);
    return 0;
}
