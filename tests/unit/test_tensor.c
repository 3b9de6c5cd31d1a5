/* test_tensor.c - KServe v2 request decoding: the scanner, the envelope, the data, their limits. */
#include "check.h"
#include "half.h"
#include "jscan.h"
#include "tensor.h"

#include <jansson.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static char err[1024];

/* Parses and loads `json` and returns the status; on success copies up to n floats into out. */
static srv_status parse(const char *json, float *out, size_t n, size_t *count)
{
    infer_request q;
    srv_status s = infer_request_parse(json, strlen(json), 0, 0, &q, err, sizeof err);
    if (s == SRV_OK)
        s = infer_request_load(&q, err, sizeof err);
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

/* Each refusal with its message. */
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
        /* The grammar is JSON's, inside the data as outside it (issue 10, finding 6). */
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[0.5,0.5,]}]}",
         "invalid JSON at line 1, column 72: value expected"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[[0.5,0.5,]]}]}",
         "invalid JSON"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[0.5 0.5]}]}",
         "invalid JSON at line 1, column 68: ']' or ',' expected"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[1,.5]}]}",
         "invalid JSON"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[1,-]}]}",
         "invalid JSON"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[1,tru]}]}",
         "invalid JSON"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"BYTES\","
         "\"data\":[\"a\\u0000\",\"b\"]}]}",
         "\\u0000 is not allowed"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"BYTES\","
         "\"data\":[\"\\ud800\",\"b\"]}]}",
         "invalid Unicode"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"BYTES\","
         "\"data\":[\"\xff\",\"b\"]}]}",
         "not valid UTF-8"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"INT64\","
         "\"data\":[1,9223372036854775808]}]}",
         "inputs[0].data[1] = 9223372036854775808 is out of range for INT64"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"UINT64\","
         "\"data\":[1,18446744073709551616]}]}",
         "inputs[0].data[1] = 18446744073709551616 is out of range for UINT64"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"UINT8\","
         "\"data\":[1,-1]}]}",
         "inputs[0].data[1] = -1 is out of range for UINT8"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"INT32\","
         "\"data\":[1,1e2]}]}",
         "inputs[0].data[1] is a real number; expected an integer"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[1,{\"a\":1}]}]}",
         "inputs[0].data[1] is an object; expected a number"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[1,2]}],\"id\":\"a\",\"id\":\"b\"}",
         "duplicate object key"},
        {"{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\","
         "\"data\":[1,2]}]} x",
         "end of file expected"},
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
        srv_status s = infer_request_parse(p, i, 0, 0, &q, err, sizeof err);
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

/* Data beyond the model's largest input is refused as soon as that many values are counted, and
 * the envelope is bounded too: nothing is allocated from a body that does not fit. */
static void test_limits(void)
{
    enum { N = 1000000 };
    static const char head[] = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,8],\"datatype\":\"FP32\","
                               "\"data\":[";
    size_t len = sizeof head - 1 + 2 * N + 4;
    char *body = malloc(len + 1);
    memcpy(body, head, sizeof head - 1);
    size_t o = sizeof head - 1;
    for (int i = 0; i < N; i++) {
        body[o++] = '0';
        body[o++] = i + 1 < N ? ',' : ']';
    }
    memcpy(body + o, "}]}", 3);
    o += 3;
    infer_request q;
    CHECK_INT(infer_request_parse(body, o, 0, 8, &q, err, sizeof err), SRV_BAD_REQUEST);
    CHECK_STR(err, "inputs[0].data has more than 32 values, more than the model takes");
    /* Without a limit it is counted whole, and the count is what the shape says it is not. */
    CHECK_INT(infer_request_parse(body, o, 0, 0, &q, err, sizeof err), SRV_BAD_REQUEST);
    CHECK_STR(err, "inputs[0].data has 1000000 elements; shape needs 8");
    free(body);

    const char *fits = "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,8],\"datatype\":\"FP32\","
                       "\"data\":[1,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8]}]}";
    /* Within the bound, the shape decides; the caller then checks it against the model. */
    CHECK_INT(infer_request_parse(fits, strlen(fits), 0, 8, &q, err, sizeof err), SRV_OK);
    CHECK_INT(infer_request_load_bytes(&q), 16 * sizeof(float));
    CHECK(q.data == NULL); /* nothing converted before infer_request_load */
    CHECK_INT(infer_request_load(&q, err, sizeof err), SRV_OK);
    CHECK(q.data && q.data[15] == 8.0f);
    infer_request_free(&q);

    /* An envelope of many values is refused before jansson builds it. */
    {
        size_t cap = 64 + 3 * (JSCAN_MAX_ENVELOPE_VALUES + 2);
        char *b = malloc(cap);
        int n = snprintf(b, cap, "{\"inputs\":[],\"outputs\":[");
        for (int i = 0; i <= JSCAN_MAX_ENVELOPE_VALUES; i++)
            n += snprintf(b + n, cap - (size_t)n, "%s{}", i ? "," : "");
        n += snprintf(b + n, cap - (size_t)n, "]}");
        CHECK_INT(infer_request_parse(b, (size_t)n, 0, 0, &q, err, sizeof err), SRV_BAD_REQUEST);
        CHECK_CONTAINS(err, "more than 4096 JSON values outside inputs[0].data");
        free(b);
    }
}

static void test_integers(void)
{
    float v[4];
    size_t n;
    CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[4],\"datatype\":\"INT64\","
                    "\"data\":[-9223372036854775808,9223372036854775807,0,-0]}]}",
                    v, 4, &n),
              SRV_OK);
    CHECK(v[0] == -9223372036854775808.0f && v[1] == 9223372036854775807.0f && v[3] == 0.0f);
    CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"UINT64\","
                    "\"data\":[18446744073709551615,1]}]}",
                    v, 4, &n),
              SRV_OK);
    CHECK(v[0] == 18446744073709551615.0f);
    CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"INT8\","
                    "\"data\":[-128,127]}]}",
                    v, 4, &n),
              SRV_OK);
    CHECK(v[0] == -128.0f && v[1] == 127.0f);
    CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT8\","
                    "\"data\":[-129]}]}",
                    v, 4, &n),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "inputs[0].data[0] = -129 is out of range for INT8");
    /* Long tokens: correctly rounded (a sticky digit keeps what lies past 40 digits). */
    CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"FP32\",\"data\":["
                    "0.1000000000000000000000000000000000000000000000000000000000001,"
                    "123456789012345678901234567890,"
                    "0.000000000000000000000000000000000000000000000001e10]}]}",
                    v, 4, &n),
              SRV_OK);
    CHECK(v[0] == strtof("0.1000000000000000000000000000000000000000000000000000000000001", NULL));
    CHECK(v[1] == (float)strtod("123456789012345678901234567890", NULL));
    CHECK(v[2] == strtof("0.000000000000000000000000000000000000000000000001e10", NULL));
}

/* BYTES strings are JSON strings: escapes ("\/" from encoders that escape slashes) are decoded
 * before base64. */
static void test_bytes_escapes(void)
{
    infer_request q;
    const char *j = "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"BYTES\","
                    "\"data\":[\"AAEC\\/w==\",\"\\u0041\\u0041\\u0041A\"]}]}";
    CHECK_INT(infer_request_parse(j, strlen(j), 0, 0, &q, err, sizeof err), SRV_OK);
    CHECK_INT(infer_request_load(&q, err, sizeof err), SRV_OK);
    CHECK_INT(q.nelems, 2);
    CHECK_INT(q.elems[0].len, 4);
    CHECK(!memcmp(q.elems[0].data, "\x00\x01\x02\xff", 4));
    CHECK_INT(q.elems[1].len, 3);
    CHECK(!memcmp(q.elems[1].data, "\x00\x00\x00", 3));
    infer_request_free(&q);
}

/* The scanner accepts exactly what jansson accepts: every one-byte change of a request (each
 * position replaced by each of a set of bytes that matter to the grammar, or deleted) is judged
 * alike by both. */
static void test_same_grammar_as_jansson(void)
{
    const char *base = "{\"id\":\"a\\u00e9\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],"
                       "\"datatype\":\"FP32\",\"data\":[[1.5e3,-0.25]],\"parameters\":{}}],"
                       "\"outputs\":[{\"name\":\"y\",\"parameters\":{\"binary_data\":false}}]}";
    static const char alphabet[] = "{}[]:,\" \\0123456789.-+eEtrufalsn\x01\xff\xc3";
    size_t len = strlen(base);
    char *m = malloc(len + 1);
    int differ = 0, tried = 0;
    for (size_t i = 0; i < len; i++) {
        for (size_t a = 0; a <= sizeof alphabet - 1; a++) {
            size_t n = len;
            memcpy(m, base, len);
            if (a == sizeof alphabet - 1) {
                memmove(m + i, m + i + 1, len - i - 1); /* delete */
                n--;
            } else {
                m[i] = alphabet[a];
            }
            jscan_doc d;
            bool ours = jscan_document(m, n, SIZE_MAX, &d, err, sizeof err) == SRV_OK;
            json_error_t je;
            json_t *v = json_loadb(m, n, 0, &je);
            bool theirs = v != NULL;
            json_decref(v);
            tried++;
            if (ours != theirs) {
                if (differ < 5)
                    fprintf(stderr, "scanner %s, jansson %s: %.*s (%s)\n",
                            ours ? "takes" : "refuses", theirs ? "takes" : "refuses", (int)n, m,
                            ours ? je.text : err);
                differ++;
            }
        }
    }
    free(m);
    CHECK_INT(differ, 0);
    CHECK(tried > 1000);
}

int main(void)
{
    test_values();
    test_nested_equals_flat();
    test_errors();
    test_prefixes();
    test_half_all();
    test_limits();
    test_integers();
    test_bytes_escapes();
    test_same_grammar_as_jansson();
    return check_report("tensor");
}
