/* test_safetensors.c - unit tests of the safetensors reader and writer: conversions, every
 * malformed-file check, a write/read round trip, and parsing against a guard page. */
/* MAP_ANONYMOUS, for the guard page, is not in POSIX 2008; glibc shows it with this. */
#define _DEFAULT_SOURCE
#include "safetensors.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

enum {
    LEN_BYTES = 8,  /* the u64 header length that opens a file */
    ERR_LEN = 512,  /* room for the longest error message */
    MAX_DATA = 256, /* bytes of tensor data in the in-memory files below */
};

/* An in-memory file: the 8-byte little-endian length, the header text and the data bytes. */
typedef struct {
    uint8_t *bytes;
    size_t len;
} buffer;

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < LEN_BYTES; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Assembles a file whose length field says `declared` (normally strlen(header)). */
static buffer make_file_len(uint64_t declared, const char *header, const void *data, size_t dlen)
{
    size_t hlen = strlen(header);
    buffer b = {malloc(LEN_BYTES + hlen + dlen + 1), LEN_BYTES + hlen + dlen};
    if (!b.bytes) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    put_u64(b.bytes, declared);
    memcpy(b.bytes + LEN_BYTES, header, hlen);
    if (dlen > 0)
        memcpy(b.bytes + LEN_BYTES + hlen, data, dlen);
    return b;
}

static buffer make_file(const char *header, const void *data, size_t dlen)
{
    return make_file_len(strlen(header), header, data, dlen);
}

/* Parses a file built from `header` and `dlen` zero bytes, and returns the status and message. */
static engine_status parse_header(const char *header, size_t dlen, char *err)
{
    static const uint8_t zeros[MAX_DATA];
    buffer b = make_file(header, zeros, dlen);
    st_file *f = (st_file *)&b; /* any non-NULL value: st_parse must reset it on failure */
    err[0] = '\0';
    engine_status s = st_parse(b.bytes, b.len, &f, err, ERR_LEN);
    if (s != ENGINE_OK && f != NULL) {
        fprintf(stderr, "st_parse failed but left *out set\n");
        check_failures++;
    }
    st_destroy(f);
    free(b.bytes);
    return s;
}

/* A macro, so that a failure reports the line of the case. */
#define EXPECT_FAIL(header, dlen, fragment)                                                        \
    do {                                                                                           \
        char expect_err_[ERR_LEN];                                                                 \
        CHECK_INT(parse_header((header), (dlen), expect_err_), ENGINE_E_MODEL);                    \
        CHECK_CONTAINS(expect_err_, (fragment));                                                   \
        CHECK_CONTAINS(expect_err_, "safetensors: ");                                              \
    } while (0)

static void test_dtype_table(void)
{
    CHECK_STR(st_dtype_name(ST_F32), "F32");
    CHECK_STR(st_dtype_name(ST_BF16), "BF16");
    CHECK_STR(st_dtype_name(ST_U64), "U64");
    CHECK_INT(st_dtype_size(ST_BOOL), 1);
    CHECK_INT(st_dtype_size(ST_F16), 2);
    CHECK_INT(st_dtype_size(ST_I32), 4);
    CHECK_INT(st_dtype_size(ST_F64), 8);
    CHECK(st_dtype_is_float(ST_F32) && st_dtype_is_float(ST_F16));
    CHECK(st_dtype_is_float(ST_BF16) && st_dtype_is_float(ST_F64));
    CHECK(!st_dtype_is_float(ST_I64) && !st_dtype_is_float(ST_U8));
    CHECK(!st_dtype_is_float(ST_BOOL));
}

static void test_f32(void)
{
    const float vals[6] = {1.0f, -2.5f, 0.125f, 3e38f, -0.0f, 42.0f};
    /* 57 bytes of header put the data at offset 65: unaligned for float, which st_to_f32 must
     * handle. */
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    buffer b = make_file(h, vals, sizeof vals);
    st_file *f = NULL;
    char err[ERR_LEN] = "";
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_OK);
    CHECK_STR(err, "");
    CHECK_INT(st_count(f), 1);
    const st_tensor *t = st_find(f, "w");
    CHECK(t != NULL && t == st_get(f, 0));
    if (t) {
        CHECK_STR(t->name, "w");
        CHECK_INT(t->dtype, ST_F32);
        CHECK_INT(t->rank, 2);
        CHECK_INT(t->shape[0], 2);
        CHECK_INT(t->shape[1], 3);
        CHECK_INT(t->nelem, 6);
        CHECK_INT(t->nbytes, 24);
        /* No copy: the tensor points into the caller's buffer. */
        CHECK(t->data == b.bytes + LEN_BYTES + strlen(h));
        float out[6];
        CHECK(st_to_f32(t, out));
        CHECK(memcmp(out, vals, sizeof vals) == 0);
        CHECK(signbit(out[4]));
    }
    CHECK(st_find(f, "missing") == NULL);
    CHECK(st_get(f, 1) == NULL);
    st_destroy(f);
    free(b.bytes);
}

static void test_f16(void)
{
    /* Normals, the largest half, the smallest and largest subnormals, signed zeros, infinities
     * and a NaN, as little-endian bytes. */
    const uint16_t halves[12] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400,
                                 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x3555, 0x8001};
    uint8_t bytes[sizeof halves];
    for (size_t i = 0; i < 12; i++) {
        bytes[2 * i] = (uint8_t)(halves[i] & 0xff);
        bytes[2 * i + 1] = (uint8_t)(halves[i] >> 8);
    }
    buffer b = make_file("{\"h\":{\"dtype\":\"F16\",\"shape\":[12],\"data_offsets\":[0,24]}}",
                         bytes, sizeof bytes);
    st_file *f = NULL;
    char err[ERR_LEN];
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_OK);
    const st_tensor *t = st_find(f, "h");
    CHECK(t != NULL);
    if (t) {
        CHECK_INT(t->dtype, ST_F16);
        CHECK_INT(t->nbytes, 24);
        float out[12];
        CHECK(st_to_f32(t, out));
        CHECK(out[0] == 1.0f);
        CHECK(out[1] == -2.0f);
        CHECK(out[2] == 65504.0f);
        CHECK(out[3] == 0x1p-24f);
        CHECK(out[4] == 1023 * 0x1p-24f);
        CHECK(out[5] == 0x1p-14f);
        CHECK(out[6] == 0.0f && signbit(out[6]));
        CHECK(isinf(out[7]) && out[7] > 0);
        CHECK(isinf(out[8]) && out[8] < 0);
        CHECK(isnan(out[9]));
        CHECK(out[10] == 0.333251953125f);
        CHECK(out[11] == -0x1p-24f);
    }
    st_destroy(f);
    free(b.bytes);
}

static void test_bf16_f64(void)
{
    /* bf16 1.0, -5.0, 0.25, +inf; then f64 1.5, -1e-3, 1e300 (beyond float: +inf). */
    uint8_t bytes[8 + 24];
    const uint16_t bf[4] = {0x3f80, 0xc0a0, 0x3e80, 0x7f80};
    for (size_t i = 0; i < 4; i++) {
        bytes[2 * i] = (uint8_t)(bf[i] & 0xff);
        bytes[2 * i + 1] = (uint8_t)(bf[i] >> 8);
    }
    const double dv[3] = {1.5, -1e-3, 1e300};
    for (size_t i = 0; i < 3; i++) {
        uint64_t bits;
        memcpy(&bits, &dv[i], sizeof bits);
        put_u64(bytes + 8 + 8 * i, bits);
    }
    /* Listed in reverse file order, with a scalar (shape []) and __metadata__ first. */
    buffer b = make_file("{\"__metadata__\":{\"format\":\"pt\",\"note\":\"x\"},"
                         "\"d\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[8,32]},"
                         "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}",
                         bytes, sizeof bytes);
    st_file *f = NULL;
    char err[ERR_LEN];
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_OK);
    CHECK_INT(st_count(f), 2);
    const st_tensor *tb = st_find(f, "b"), *td = st_find(f, "d");
    CHECK(tb != NULL && td != NULL);
    CHECK(st_get(f, 0) == tb && st_get(f, 1) == td);
    if (tb && td) {
        float out[4];
        CHECK(st_to_f32(tb, out));
        CHECK(out[0] == 1.0f && out[1] == -5.0f && out[2] == 0.25f);
        CHECK(isinf(out[3]) && out[3] > 0);
        CHECK(st_to_f32(td, out));
        CHECK(out[0] == 1.5f);
        CHECK(out[1] == (float)-1e-3);
        CHECK(isinf(out[2]));
    }
    st_destroy(f);
    free(b.bytes);
}

static void test_shapes_and_order(void)
{
    /* Tensors listed out of order; a scalar, a zero-size tensor sharing its offset with the next
     * tensor and another at the very end; an I64 counter; a header padded with spaces. */
    uint8_t data[20];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)i;
    buffer b = make_file("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[20,20]},"
                         "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},"
                         "\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                         "\"e\":{\"dtype\":\"U8\",\"shape\":[3,0],\"data_offsets\":[12,12]},"
                         "\"u\":{\"dtype\":\"U16\",\"shape\":[4],\"data_offsets\":[12,20]}}     ",
                         data, sizeof data);
    st_file *f = NULL;
    char err[ERR_LEN] = "";
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_OK);
    CHECK_STR(err, "");
    CHECK_INT(st_count(f), 5);
    const char *order[5] = {"n", "s", "e", "u", "z"};
    for (size_t i = 0; i < 5; i++) {
        const st_tensor *t = st_get(f, i);
        CHECK(t != NULL);
        if (t)
            CHECK_STR(t->name, order[i]);
    }
    const st_tensor *s = st_find(f, "s"), *z = st_find(f, "z"), *u = st_find(f, "u");
    CHECK(s && z && u);
    if (s && z && u) {
        CHECK_INT(s->rank, 0);
        CHECK_INT(s->nelem, 1);
        CHECK_INT(s->nbytes, 4);
        CHECK_INT(z->rank, 2);
        CHECK_INT(z->nelem, 0);
        CHECK_INT(z->nbytes, 0);
        float none[1] = {7.0f};
        CHECK(st_to_f32(z, none));
        CHECK(none[0] == 7.0f);
        float tmp[1];
        CHECK(!st_to_f32(u, tmp)); /* U16 is not a float dtype */
        CHECK(u->data[0] == 12);
    }
    st_destroy(f);
    free(b.bytes);

    /* No tensors and no data is a valid, empty file; so is an empty object with metadata. */
    char err2[ERR_LEN];
    CHECK_INT(parse_header("{}", 0, err2), ENGINE_OK);
    CHECK_INT(parse_header("{\"__metadata__\":{}}  ", 0, err2), ENGINE_OK);
    /* Only zero-size tensors, all at offset 0, with no data. */
    CHECK_INT(parse_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                           "\"b\":{\"dtype\":\"F16\",\"shape\":[2,0],\"data_offsets\":[0,0]}}",
                           0, err2),
              ENGINE_OK);
    st_destroy(NULL);
    CHECK_INT(st_count(NULL), 0);
    CHECK(st_find(NULL, "a") == NULL);
}

static void test_malformed(void)
{
    char err[ERR_LEN];
    st_file *f = NULL;

    /* Too short for the length field. */
    CHECK_INT(st_parse((const uint8_t *)"1234567", 7, &f, err, sizeof err), ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "file has 7 bytes; expected at least 8");
    CHECK(f == NULL);
    CHECK_INT(st_parse((const uint8_t *)"", 0, &f, err, sizeof err), ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "file has 0 bytes");

    /* A length past the end of the file, and one past the limit. */
    buffer b = make_file_len(1234, "{}", NULL, 0);
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "header length 1234 exceeds the 2 bytes after it");
    free(b.bytes);
    b = make_file_len(UINT64_MAX, "{}", NULL, 0);
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "header length 18446744073709551615 exceeds the limit of 100000000");
    free(b.bytes);
    b = make_file_len((uint64_t)ST_MAX_HEADER + 1, "{}", NULL, 0);
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "header length 100000001 exceeds the limit");
    free(b.bytes);
    b = make_file_len(0, "", NULL, 0);
    CHECK_INT(st_parse(b.bytes, b.len, &f, err, sizeof err), ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "header is empty");
    free(b.bytes);

    /* The header itself. */
    EXPECT_FAIL(" {}", 0, "header starts with byte 0x20; expected '{'");
    EXPECT_FAIL("[]", 0, "header starts with byte 0x5b");
    EXPECT_FAIL("{\"a\":", 0, "header is not valid JSON");
    EXPECT_FAIL("{} x", 0, "header is not valid JSON");
    EXPECT_FAIL("{\"a\":1,}", 0, "header is not valid JSON");
    EXPECT_FAIL("{\"\xff\":1}", 0, "header is not valid JSON");
    EXPECT_FAIL("{\"a\":{},\"a\":{}}", 0, "duplicate");
    /* A header that starts with '{' and is valid JSON is an object; anything after it is not. */
    EXPECT_FAIL("{}\n[1]", 0, "header is not valid JSON");

    /* __metadata__. */
    EXPECT_FAIL("{\"__metadata__\":[]}", 0, "__metadata__ is an array; expected an object");
    EXPECT_FAIL("{\"__metadata__\":{\"v\":1}}", 0,
                "__metadata__ value 'v' is an integer; expected a string");
    EXPECT_FAIL("{\"__metadata__\":{\"a\":\"x\",\"b\":null}}", 0, "value 'b' is null");

    /* Entries. */
    EXPECT_FAIL("{\"a\":[1]}", 0, "tensor 'a' is an array; expected an object");
    EXPECT_FAIL("{\"a\":\"F32\"}", 0, "tensor 'a' is a string; expected an object");
    EXPECT_FAIL("{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4, "tensor 'a' has no \"dtype\"");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                "tensor 'a' has no \"shape\"");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 4,
                "tensor 'a' has no \"data_offsets\"");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", 4,
                "tensor 'a' has unknown key \"x\"");
    EXPECT_FAIL("{\"fc.weight\":{\"dtype\":\"Q8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1,
                "tensor 'fc.weight' has dtype \"Q8\"; expected one of BOOL, U8, I8, I16, U16, F16, "
                "BF16, I32, U32, F32, F64, I64, U64");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[],\"data_offsets\":[0,1]}}", 1,
                "has dtype \"F8_E4M3\"");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"f32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                "has dtype \"f32\"");
    EXPECT_FAIL("{\"a\":{\"dtype\":32,\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                "tensor 'a' dtype is an integer; expected a string");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16,
                "tensor 'a' shape is an integer; expected an array");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}", 0,
                "tensor 'a' shape element 1 is -1; expected an integer >= 0");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
                "tensor 'a' shape element 0 is a real number; expected an integer");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                "shape element 0 is a string");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
                1, "tensor 'a' shape has 9 dimensions; at most 8");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
                "tensor 'a' data_offsets [4, 0] are reversed");
    EXPECT_FAIL(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
        "tensor 'a' data_offsets is an array of 1 elements; expected an array [begin, end]");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4,
                "data_offsets is an object");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                "data_offsets element 0 is -4; expected an integer >= 0");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
                "data_offsets element 1 is a real number");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12,
                "tensor 'a' data_offsets [0, 12] hold 12 bytes; shape [2,3] F32 needs 24");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 16,
                "tensor 'a' data_offsets [0, 24] run past the end of the 16-byte data buffer");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":"
                "[9223372036854775806,9223372036854775807]}}",
                4, "run past the end of the 4-byte data buffer");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":"
                "[0,1]}}",
                1, "shape [4294967296,4294967296]... has more elements than fit in 64 bits");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":"
                "[0,1]}}",
                1, "shape [4611686018427387904] F64 needs more bytes than fit in 64 bits");
    /* A zero in the shape makes the element count 0 however large the other dimensions. */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[0,9223372036854775807],\"data_offsets\":"
                "[0,1]}}",
                1, "hold 1 bytes; shape [0,9223372036854775807] U8 needs 0");

    /* Names: 255 bytes is the longest that fits ST_MAX_NAME with its NUL. */
    char hdr[1024], name[ST_MAX_NAME + 1];
    memset(name, 'n', sizeof name - 1);
    name[ST_MAX_NAME] = '\0';
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}",
             name);
    EXPECT_FAIL(hdr, 1, "has 256 bytes; at most 255");
    name[ST_MAX_NAME - 1] = '\0';
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}",
             name);
    char err_ok[ERR_LEN];
    CHECK_INT(parse_header(hdr, 1, err_ok), ENGINE_OK);

    /* Coverage of the data buffer. */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                12, "tensors 'a' and 'b' overlap: [0, 8] and [4, 12]");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                8, "tensors 'a' and 'b' overlap");
    /* A zero-size tensor strictly inside another is an overlap, as in the reference. */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                8, "tensors 'a' and 'z' overlap");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}",
                24, "hole of 8 bytes before tensor 'b'");
    EXPECT_FAIL("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                "hole of 4 bytes before tensor 'b' (it begins at 4; expected 0)");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 24,
                "16 bytes after the last tensor are not covered");
    EXPECT_FAIL("{}", 3, "the header lists no tensors but 3 data bytes follow it");
    EXPECT_FAIL("{\"__metadata__\":{\"format\":\"pt\"}}", 1, "lists no tensors");

    /* Error buffers may be tiny or absent. */
    char tiny[8];
    buffer c = make_file("[]", NULL, 0);
    CHECK_INT(st_parse(c.bytes, c.len, &f, tiny, sizeof tiny), ENGINE_E_MODEL);
    CHECK_STR(tiny, "safeten");
    CHECK_INT(st_parse(c.bytes, c.len, &f, NULL, 0), ENGINE_E_MODEL);
    free(c.bytes);
}

static void test_round_trip(void)
{
    static const char path_template[] = "/tmp/test_safetensors_XXXXXX";
    char path[sizeof path_template];
    memcpy(path, path_template, sizeof path);
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    close(fd);

    const float w[6] = {1, 2, 3, 4, 5, -6.5f};
    const float bias[2] = {0.5f, NAN};
    const float scalar[1] = {3.25f};
    const int64_t w_shape[2] = {3, 2}, b_shape[1] = {2}, e_shape[2] = {0, 5};
    const char *const names[4] = {"layer.weight", "layer.bias", "empty", "count"};
    const int ranks[4] = {2, 1, 2, 0};
    const int64_t *const shapes[4] = {w_shape, b_shape, e_shape, NULL};
    const float *const data[4] = {w, bias, NULL, scalar};
    char err[ERR_LEN] = "";
    CHECK_INT(st_write_f32(path, 4, names, ranks, shapes, data, err, sizeof err), ENGINE_OK);
    CHECK_STR(err, "");

    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    uint8_t bytes[1024];
    size_t len = fp ? fread(bytes, 1, sizeof bytes, fp) : 0;
    if (fp)
        fclose(fp);
    unlink(path);

    CHECK(len > LEN_BYTES);
    uint64_t n = 0;
    for (int i = 0; i < LEN_BYTES; i++)
        n |= (uint64_t)bytes[i] << (8 * i);
    CHECK_INT(n % 8, 0);
    CHECK_INT(len, LEN_BYTES + n + (6 + 2 + 0 + 1) * sizeof(float));
    char header[512] = "";
    if (n < sizeof header)
        memcpy(header, bytes + LEN_BYTES, n);
    CHECK_CONTAINS(header, "{\"__metadata__\":{\"format\":\"pt\"},\"layer.weight\":{\"dtype\":"
                           "\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},");

    st_file *f = NULL;
    CHECK_INT(st_parse(bytes, len, &f, err, sizeof err), ENGINE_OK);
    CHECK_INT(st_count(f), 4);
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        /* Written in the given order with contiguous offsets, so file order is the same. */
        CHECK_STR(t->name, names[i]);
        CHECK_INT(t->dtype, ST_F32);
        CHECK_INT(t->rank, ranks[i]);
        for (int d = 0; d < t->rank; d++)
            CHECK_INT(t->shape[d], shapes[i][d]);
        float out[6];
        CHECK(t->nelem <= 6 && st_to_f32(t, out));
        CHECK(t->nelem == 0 || memcmp(out, data[i], t->nelem * sizeof(float)) == 0);
    }
    st_destroy(f);

    /* Arguments the reader would refuse, and a file that cannot be created. */
    const int64_t bad_shape[1] = {-1};
    const int64_t *const bad_shapes[1] = {bad_shape};
    const int bad_rank[1] = {1}, big_rank[1] = {ST_MAX_RANK + 1};
    const char *const dup[2] = {"a", "a"};
    const char *const meta[1] = {"__metadata__"};
    const int64_t *const two_shapes[2] = {b_shape, b_shape};
    const int two_ranks[2] = {1, 1};
    const float *const two_data[2] = {bias, bias};
    CHECK_INT(st_write_f32(path, 1, names, bad_rank, bad_shapes, data, err, sizeof err),
              ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "dimension 0 is -1");
    CHECK_INT(st_write_f32(path, 1, names, big_rank, shapes, data, err, sizeof err),
              ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "has rank 9");
    CHECK_INT(st_write_f32(path, 2, dup, two_ranks, two_shapes, two_data, err, sizeof err),
              ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "cannot write tensor 'a' twice");
    CHECK_INT(st_write_f32(path, 1, meta, two_ranks, two_shapes, two_data, err, sizeof err),
              ENGINE_E_MODEL);
    CHECK_CONTAINS(err, "cannot write a tensor named '__metadata__'");
    CHECK(access(path, F_OK) != 0);
    CHECK_INT(st_write_f32("/nonexistent-dir/x.safetensors", 1, names, ranks, shapes, data, err,
                           sizeof err),
              ENGINE_E_IO);
    CHECK_CONTAINS(err, "cannot create '/nonexistent-dir/x.safetensors'");

    /* An empty file: only the metadata. mkstemp overwrote the template, so restore it. */
    memcpy(path, path_template, sizeof path);
    fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    close(fd);
    CHECK_INT(st_write_f32(path, 0, NULL, NULL, NULL, NULL, err, sizeof err), ENGINE_OK);
    fp = fopen(path, "rb");
    len = fp ? fread(bytes, 1, sizeof bytes, fp) : 0;
    if (fp)
        fclose(fp);
    unlink(path);
    f = NULL;
    CHECK_INT(st_parse(bytes, len, &f, err, sizeof err), ENGINE_OK);
    CHECK_INT(st_count(f), 0);
    st_destroy(f);
}

/* Copies a valid file so it ends flush against a PROT_NONE page, as picohttpparser's tests do:
 * any read past the view faults. Parses it whole, then every truncated prefix, also placed flush
 * against the guard page; each prefix must fail cleanly. */
static void test_guard_page(void)
{
    const float vals[5] = {1, 2, 3, 4, 5};
    const uint8_t half[4] = {0x00, 0x3c, 0x00, 0xc0};
    uint8_t data[sizeof vals + sizeof half];
    memcpy(data, vals, sizeof vals);
    memcpy(data + sizeof vals, half, sizeof half);
    buffer b = make_file("{\"__metadata__\":{\"format\":\"pt\"},"
                         "\"w\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,20]},"
                         "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[20,24]}}  ",
                         data, sizeof data);

    long page = sysconf(_SC_PAGESIZE);
    size_t span = ((b.len + (size_t)page - 1) / (size_t)page) * (size_t)page;
    uint8_t *map =
        mmap(NULL, span + (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED) {
        free(b.bytes);
        return;
    }
    uint8_t *guard = map + span;
    CHECK_INT(mprotect(guard, (size_t)page, PROT_NONE), 0);

    char err[ERR_LEN];
    st_file *f = NULL;
    memcpy(guard - b.len, b.bytes, b.len);
    CHECK_INT(st_parse(guard - b.len, b.len, &f, err, sizeof err), ENGINE_OK);
    const st_tensor *h = st_find(f, "h");
    CHECK(h != NULL && h->data + h->nbytes == guard);
    float out[2] = {0, 0};
    CHECK(h && st_to_f32(h, out));
    CHECK(out[0] == 1.0f && out[1] == -2.0f);
    st_destroy(f);

    int failures = 0, wrong_status = 0;
    for (size_t p = 0; p < b.len; p++) {
        memcpy(guard - p, b.bytes, p);
        f = NULL;
        engine_status s = st_parse(guard - p, p, &f, err, sizeof err);
        failures += s != ENGINE_OK;
        wrong_status += s != ENGINE_OK && s != ENGINE_E_MODEL;
        st_destroy(f);
    }
    CHECK_INT(failures, b.len);
    CHECK_INT(wrong_status, 0);

    munmap(map, span + (size_t)page);
    free(b.bytes);
}

int main(void)
{
    test_dtype_table();
    test_f32();
    test_f16();
    test_bf16_f64();
    test_shapes_and_order();
    test_malformed();
    test_round_trip();
    test_guard_page();
    return check_report("safetensors");
}
