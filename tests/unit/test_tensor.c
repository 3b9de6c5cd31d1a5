/* test_tensor.c - KServe v2 request decoding: the scanner's fast path against the jansson path. */
#include "check.h"
#include "half.h"
#include "tensor.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static char err[1024];

/* Parses `json` and returns the status; on success copies up to n floats into out. */
static srv_status parse(const char *json, float *out, size_t n, size_t *count)
{
    infer_request q;
    srv_status s = infer_request_parse(json, strlen(json), 0, &q, err, sizeof err);
    if (s == SRV_OK) {
        *count = q.count;
        memcpy(out, q.data, (q.count < n ? q.count : n) * sizeof *out);
        infer_request_free(&q);
    }
    return s;
}

static void test_values(void)
{
    float v[16];
    size_t n = 0;
    const char *j = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,8],\"datatype\":\"FP32\","
                    "\"data\":[0.1, -2.5e3, 1E-30, 123456789012345678901234, -0, 3, 0.30000001, "
                    "1.17549435e-38]}]}";
    CHECK_INT(parse(j, v, 16, &n), SRV_OK);
    CHECK_INT(n, 8);
    /* Each must be exactly what strtof gives: correctly rounded floats. */
    const char *texts[] = {"0.1", "-2.5e3", "1E-30",      "123456789012345678901234",
                           "-0",  "3",      "0.30000001", "1.17549435e-38"};
    for (int i = 0; i < 8; i++)
        CHECK(v[i] == strtof(texts[i], NULL));
}

static void test_nested_equals_flat(void)
{
    float a[6], b[6];
    size_t na = 0, nb = 0;
    CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2,3],\"datatype\":\"FP32\","
                    "\"data\":[[[1,2,3],[4,5,6]]]}]}",
                    a, 6, &na),
              SRV_OK);
    CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2,3],\"datatype\":\"FP32\","
                    "\"data\":[1,2,3,4,5,6]}]}",
                    b, 6, &nb),
              SRV_OK);
    CHECK_INT(na, 6);
    CHECK_INT(nb, 6);
    CHECK(!memcmp(a, b, sizeof a));
}

/* Inputs the scanner refuses must get the jansson path's message. */
static void test_errors(void)
{
    float v[8];
    size_t n;
    struct {
        const char *json, *msg;
    } cases[] = {
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1,NaN]}]}",
         "invalid JSON at line 1, column"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1,\"a\"]}]}",
         "inputs[0].data[1] is a string; expected a number"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data\":[1,2]}]}",
         "inputs[0].data has 2 elements; shape needs 3"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[2,2],\"datatype\":\"FP32\","
         "\"data\":[[1,2],[3]]}]}",
         "inputs[0].data: nesting level 1 has 1 entries; shape says 2"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"INT8\",\"data\":[1,300]}]}",
         "inputs[0].data[1] = 300 is out of range for INT8"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1,1e999]}]}",
         "invalid JSON"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[01,2]}]}",
         "invalid JSON"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[1,2],\"data\":[3,4]}]}",
         "duplicate object key"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1,2]}],}",
         "invalid JSON"},
        {"[1,2]", "the request body must be a JSON object; got an array"},
        {"{\"inputs\":[]}", "\"inputs\" has 0 entries; models here take exactly one input"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP8\",\"data\":[1,2]}]}",
         "inputs[0].datatype \"FP8\" is not a KServe v2 datatype; send FP32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_INT(parse(cases[i].json, v, 8, &n), SRV_BAD_REQUEST);
        CHECK_CONTAINS(err, cases[i].msg);
    }
}

/* Every prefix of a valid request fails cleanly (or parses), never crashes. */
static void test_prefixes(void)
{
    const char *j = "{\"id\":\"7\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,2,2],\"datatype\":"
                    "\"FP32\",\"data\":[[[1.5,2],[3e1,-4]]]}],\"outputs\":[{\"name\":\"logits\"}]}";
    size_t len = strlen(j);
    for (size_t i = 0; i < len; i++) {
        char *p = malloc(i + 1);
        memcpy(p, j, i);
        infer_request q;
        srv_status s = infer_request_parse(p, i, 0, &q, err, sizeof err);
        CHECK(s == SRV_BAD_REQUEST);
        free(p);
    }
    float v[4];
    size_t n;
    CHECK_INT(parse(j, v, 4, &n), SRV_OK);
    CHECK(v[2] == 30.0f && v[3] == -4.0f);
}

/* Every one of the 65,536 half values against the arithmetic definition of binary16:
 * (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m for subnormals. */
static void test_half_all(void)
{
    int bad = 0;
    for (uint32_t h = 0; h <= UINT16_MAX; h++) {
        int e = (int)(h >> 10) & 0x1f, m = (int)h & 0x3ff;
        float want;
        if (e == 0)
            want = ldexpf((float)m, -24);
        else if (e == 31)
            want = m ? NAN : INFINITY;
        else
            want = ldexpf((float)(m | 0x400), e - 25);
        if (h & 0x8000)
            want = -want;
        float got = half_to_float((uint16_t)h);
        bool same = isnan(want) ? isnan(got) : (got == want && signbit(got) == signbit(want));
        bad += !same;
    }
    CHECK_INT(bad, 0);
}

int main(void)
{
    test_values();
    test_nested_equals_flat();
    test_errors();
    test_prefixes();
    test_half_all();
    return check_report("tensor");
}
