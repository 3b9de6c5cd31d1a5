/* test_image.c - image_to_tensor: decoding, channel conversion, PyTorch-exact resizing, limits. */

/* MAP_ANONYMOUS, for the guard page, is outside POSIX 2008. */
#define _DEFAULT_SOURCE

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include "check.h"
#include "image.h"

enum {
    ERR_LEN = 256,
    GRAD_W = 7, /* the gradient test image is 7 wide and 5 high */
    GRAD_H = 5,
    BIG_SIDE = 100000,   /* a header's claimed width and height in the bomb tests */
    MEDIUM_SIDE = 20000, /* a PNG size stb_image accepts in a header but the limit refuses */
    MAX_PIXELS = 4096 * 4096,
    JPEG_QUALITY = 95,
    JPEG_TOLERANCE = 4, /* 8-bit levels a JPEG of a flat colour may drift */
};

/* Bilinear results are float sums of a few products of values up to 255: allow a few ulps. */
#define RESIZE_TOL 1e-3
/* Normalised values are about unit size; the C code computes them in double. */
#define NORM_TOL 1e-5
/* A 10-gigapixel header must be refused at once, without decoding or allocating. */
#define BOMB_SECONDS 0.5

/* Refusals of the checks image.c makes before any stb_image call. */
#define UNSUPPORTED_TYPE                                                                           \
    "cannot decode image: unsupported image type; send PNG, JPEG, BMP, GIF or PNM"
#define PNM_16BIT                                                                                  \
    "cannot decode image: 16-bit PNM (maximum value above 255) is not supported; send 8-bit"
#define HUFFMAN_257                                                                                \
    "cannot decode image: corrupt JPEG (a Huffman table has 257 codes; at most 256 are possible)"

/* A growable byte buffer that stbi_write_*_to_func appends to. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buffer;

static void buffer_append(void *ctx, void *data, int size)
{
    buffer *b = ctx;
    if (size <= 0)
        return;
    if (b->n + (size_t)size > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (size_t)size)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            fprintf(stderr, "out of memory\n");
            abort();
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, (size_t)size);
    b->n += (size_t)size;
}

static buffer encode_png(int w, int h, int comp, const uint8_t *pix)
{
    buffer b = {0};
    CHECK(stbi_write_png_to_func(buffer_append, &b, w, h, comp, pix, w * comp));
    return b;
}

/* The test image: a nonlinear pattern, so that every interpolation weight matters. */
static uint8_t gradient_pixel(int x, int y)
{
    return (uint8_t)((x * 37 + y * 53 + x * y * 11) % 256);
}

/* Preprocessing that leaves raw 0..255 pixel values, to compare resizing alone. */
static spec_preprocess raw_pixels(void)
{
    spec_preprocess pp = {0};
    pp.present = true;
    pp.scale = 1.0;
    for (int c = 0; c < 3; c++)
        pp.std[c] = 1.0;
    return pp;
}

/* Expected values from PyTorch 1.13 (/usr/bin/python3), produced by:
 *
 *   import torch, torch.nn.functional as F
 *   H, W = 5, 7
 *   img = torch.tensor([[(x * 37 + y * 53 + x * y * 11) % 256 for x in range(W)]
 *                       for y in range(H)], dtype=torch.float32)
 *   for (oh, ow) in [(3, 4), (10, 9), (5, 3), (1, 1)]:
 *       out = F.interpolate(img[None, None], size=(oh, ow), mode="bilinear",
 *                           align_corners=False, antialias=False)[0, 0]
 *       for row in out.tolist():
 *           print(", ".join("%.6ff" % v for v in row) + ",")
 */
static const float torch_3x4[3 * 4] = {
    32.916664f,  104.083336f, 175.250000f, 161.083328f, /* */
    128.125000f, 199.375000f, 78.625008f,  181.874985f, /* */
    159.333328f, 102.666656f, 88.666679f,  149.333328f,
};
static const float torch_10x9[10 * 9] = {
    0.000000f,   24.666668f,  53.444447f,  82.222221f,  111.000000f, 139.777786f, 168.555557f,
    197.333344f, 222.000000f, 13.250000f,  39.750000f,  70.666672f,  101.583336f, 132.500000f,
    163.416672f, 158.777771f, 161.250000f, 187.750000f, 39.750000f,  69.916664f,  105.111115f,
    140.305557f, 175.500000f, 210.694443f, 139.222214f, 89.083336f,  119.250000f, 66.250000f,
    100.083336f, 139.555557f, 164.805557f, 154.500000f, 193.972229f, 126.777763f, 80.916672f,
    114.750000f, 92.750000f,  130.250000f, 174.000000f, 175.083328f, 69.500000f,  113.250000f,
    121.444443f, 136.750000f, 174.250000f, 119.250000f, 160.416672f, 180.000000f, 149.805557f,
    48.500004f,  96.527779f,  144.555557f, 171.250000f, 169.750000f, 145.750000f, 190.583328f,
    157.555542f, 88.972221f,  91.500000f,  143.805557f, 196.111115f, 184.416656f, 101.250000f,
    172.250000f, 178.083328f, 127.999992f, 77.916672f,  134.500000f, 141.305557f, 183.666672f,
    176.249985f, 96.750000f,  198.750000f, 122.916664f, 91.333336f,  116.638893f, 177.499985f,
    89.027771f,  107.222229f, 146.750000f, 156.250000f, 212.000000f, 95.333328f,  73.000008f,
    136.000000f, 198.999985f, 62.888874f,  69.000008f,  132.000000f, 186.000000f,
};
static const float torch_5x3[5 * 3] = {
    24.666666f,  110.999992f, 197.333328f, /* */
    85.000000f,  197.000000f, 52.999992f,  /* */
    145.333328f, 27.000023f,  164.666656f, /* */
    205.666656f, 112.999992f, 191.000031f, /* */
    95.333344f,  198.999985f, 131.999985f,
};

static const float torch_1x1[1] = {27.0f};

static buffer gradient_png(void)
{
    uint8_t pix[GRAD_H * GRAD_W];
    for (int y = 0; y < GRAD_H; y++)
        for (int x = 0; x < GRAD_W; x++)
            pix[y * GRAD_W + x] = gradient_pixel(x, y);
    return encode_png(GRAD_W, GRAD_H, 1, pix);
}

static void check_resize(const buffer *png, int oh, int ow, const float *expected)
{
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();
    float *out = calloc((size_t)oh * (size_t)ow, sizeof *out);
    CHECK_INT(image_to_tensor(png->p, png->n, &pp, 1, oh, ow, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int i = 0; i < oh * ow; i++)
        CHECK_NEAR(out[i], expected[i], RESIZE_TOL);
    free(out);
}

static void test_resize_matches_torch(void)
{
    buffer png = gradient_png();
    check_resize(&png, 3, 4, torch_3x4);
    check_resize(&png, 10, 9, torch_10x9);
    check_resize(&png, 5, 3, torch_5x3);
    check_resize(&png, 1, 1, torch_1x1);

    /* Same size: an exact copy, with no interpolation at all. */
    float identity[GRAD_H * GRAD_W];
    for (int y = 0; y < GRAD_H; y++)
        for (int x = 0; x < GRAD_W; x++)
            identity[y * GRAD_W + x] = gradient_pixel(x, y);
    check_resize(&png, GRAD_H, GRAD_W, identity);
    free(png.p);

    /* RGB resizes each plane alike: R is the gradient, G its inverse (bilinear weights sum to 1,
     * so G resizes to 255 - R), B a constant. */
    uint8_t rgb[GRAD_H * GRAD_W * 3];
    for (int y = 0; y < GRAD_H; y++) {
        for (int x = 0; x < GRAD_W; x++) {
            uint8_t *p = rgb + (y * GRAD_W + x) * 3;
            p[0] = gradient_pixel(x, y);
            p[1] = (uint8_t)(255 - p[0]);
            p[2] = 42;
        }
    }
    png = encode_png(GRAD_W, GRAD_H, 3, rgb);
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();
    float out[3 * 10 * 9];
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 3, 10, 9, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int i = 0; i < 10 * 9; i++) {
        CHECK_NEAR(out[i], torch_10x9[i], RESIZE_TOL);
        CHECK_NEAR(out[10 * 9 + i], 255 - torch_10x9[i], RESIZE_TOL);
        CHECK_NEAR(out[2 * 10 * 9 + i], 42, RESIZE_TOL);
    }
    free(png.p);
}

/* stb_image's own luma formula (stbi__compute_y): (77 r + 150 g + 29 b) >> 8. */
static int stb_luma(int r, int g, int b)
{
    return (r * 77 + g * 150 + b * 29) >> 8;
}

static void test_channel_conversion(void)
{
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();

    /* RGB -> gray. */
    const uint8_t rgb[2 * 3] = {255, 0, 0, 10, 200, 30};
    buffer png = encode_png(2, 1, 3, rgb);
    float gray[2];
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 1, 1, 2, MAX_PIXELS, gray, err, sizeof err),
              SRV_OK);
    CHECK_NEAR(gray[0], stb_luma(255, 0, 0), 0);
    CHECK_NEAR(gray[1], stb_luma(10, 200, 30), 0);
    free(png.p);

    /* Gray -> RGB: every channel plane repeats the gray value. */
    const uint8_t g[3] = {0, 77, 254};
    png = encode_png(3, 1, 1, g);
    float chw[3 * 3];
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 3, 1, 3, MAX_PIXELS, chw, err, sizeof err),
              SRV_OK);
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 3; x++)
            CHECK_NEAR(chw[c * 3 + x], g[x], 0);
    free(png.p);

    /* RGBA -> RGB: alpha is dropped, not multiplied in. CHW: plane c holds channel c. */
    const uint8_t rgba[2 * 4] = {10, 20, 30, 0, 200, 100, 50, 128};
    png = encode_png(2, 1, 4, rgba);
    float out[3 * 2];
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 3, 1, 2, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 2; x++)
            CHECK_NEAR(out[c * 2 + x], rgba[x * 4 + c], 0);
    /* RGBA -> gray: luma of the colour, alpha ignored. */
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 1, 1, 2, MAX_PIXELS, gray, err, sizeof err),
              SRV_OK);
    CHECK_NEAR(gray[0], stb_luma(10, 20, 30), 0);
    CHECK_NEAR(gray[1], stb_luma(200, 100, 50), 0);
    free(png.p);

    /* Gray + alpha -> gray. */
    const uint8_t ga[2 * 2] = {90, 0, 180, 255};
    png = encode_png(2, 1, 2, ga);
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 1, 1, 2, MAX_PIXELS, gray, err, sizeof err),
              SRV_OK);
    CHECK_NEAR(gray[0], 90, 0);
    CHECK_NEAR(gray[1], 180, 0);
    free(png.p);
}

static void test_normalisation(void)
{
    char err[ERR_LEN] = "";
    const uint8_t rgb[2 * 3] = {0, 128, 255, 51, 102, 204};
    buffer png = encode_png(2, 1, 3, rgb);
    float out[3 * 2];

    /* No preprocess block: x / 255. */
    CHECK_INT(image_to_tensor(png.p, png.n, NULL, 3, 1, 2, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 2; x++)
            CHECK_NEAR(out[c * 2 + x], rgb[x * 3 + c] / 255.0, NORM_TOL);

    /* A block that is not present behaves like none, whatever its fields hold. */
    spec_preprocess absent = {0};
    absent.invert = true;
    absent.scale = 7;
    CHECK_INT(image_to_tensor(png.p, png.n, &absent, 3, 1, 2, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    CHECK_NEAR(out[1], 51 / 255.0, NORM_TOL);

    /* ImageNet-style mean and std, per channel. */
    spec_preprocess pp = {0};
    pp.present = true;
    pp.scale = 1.0 / 255.0;
    const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    memcpy(pp.mean, mean, sizeof mean);
    memcpy(pp.std, std, sizeof std);
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 3, 1, 2, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 2; x++)
            CHECK_NEAR(out[c * 2 + x], (rgb[x * 3 + c] / 255.0 - mean[c]) / std[c], NORM_TOL);

    /* Invert (dark-on-light digits) applies before scaling: MNIST's mean 0.1307, std 0.3081. */
    pp.invert = true;
    for (int c = 0; c < 3; c++) {
        pp.mean[c] = 0.1307;
        pp.std[c] = 0.3081;
    }
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 3, 1, 2, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 2; x++)
            CHECK_NEAR(out[c * 2 + x], ((255 - rgb[x * 3 + c]) / 255.0 - 0.1307) / 0.3081,
                       NORM_TOL);

    /* A scale other than 1/255 (e.g. raw pixels with a mean subtracted). */
    pp.invert = false;
    pp.scale = 2.0;
    pp.mean[0] = 100;
    pp.std[0] = 4;
    CHECK_INT(image_to_tensor(png.p, png.n, &pp, 3, 1, 2, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    CHECK_NEAR(out[1], (51 * 2.0 - 100) / 4, NORM_TOL);
    free(png.p);
}

/* Decodes `img` as RGB at its own size and compares with `want` (HWC) within `tol` levels. */
static void check_rgb_decode(const uint8_t *img, size_t len, int w, int h, const uint8_t *want,
                             int tol)
{
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();
    float *out = calloc((size_t)(3 * w * h), sizeof *out);
    srv_status st = image_to_tensor(img, len, &pp, 3, h, w, MAX_PIXELS, out, err, sizeof err);
    CHECK_INT(st, SRV_OK);
    if (st != SRV_OK)
        fprintf(stderr, "  error: %s\n", err);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < w * h; i++)
            CHECK_NEAR(out[c * w * h + i], want[i * 3 + c], tol);
    free(out);
}

static void test_formats(void)
{
    enum { W = 3, H = 2 };
    const uint8_t rgb[W * H * 3] = {255, 0,  0,  0,   255, 0,   0,   0, 255,
                                    10,  20, 30, 128, 128, 128, 250, 5, 99};

    buffer b = {0};
    CHECK(stbi_write_bmp_to_func(buffer_append, &b, W, H, 3, rgb));
    check_rgb_decode(b.p, b.n, W, H, rgb, 0);
    free(b.p);

    /* JPEG is lossy: a flat colour survives within a few levels. */
    enum { JW = 8, JH = 8 };
    uint8_t flat[JW * JH * 3];
    for (int i = 0; i < JW * JH; i++) {
        flat[i * 3] = 100;
        flat[i * 3 + 1] = 150;
        flat[i * 3 + 2] = 200;
    }
    b = (buffer){0};
    CHECK(stbi_write_jpg_to_func(buffer_append, &b, JW, JH, 3, flat, JPEG_QUALITY));
    check_rgb_decode(b.p, b.n, JW, JH, flat, JPEG_TOLERANCE);
    free(b.p);

    /* PPM (P6) and PGM (P5), binary, written by hand. */
    static const char ppm_header[] = "P6\n# a comment\n3 2\n255\n";
    uint8_t ppm[sizeof ppm_header - 1 + sizeof rgb];
    memcpy(ppm, ppm_header, sizeof ppm_header - 1);
    memcpy(ppm + sizeof ppm_header - 1, rgb, sizeof rgb);
    check_rgb_decode(ppm, sizeof ppm, W, H, rgb, 0);

    static const char pgm_header[] = "P5 2 2 255\n";
    const uint8_t gray[4] = {0, 64, 128, 255};
    uint8_t pgm[sizeof pgm_header - 1 + sizeof gray];
    memcpy(pgm, pgm_header, sizeof pgm_header - 1);
    memcpy(pgm + sizeof pgm_header - 1, gray, sizeof gray);
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();
    float out[4];
    CHECK_INT(image_to_tensor(pgm, sizeof pgm, &pp, 1, 2, 2, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(out[i], gray[i], 0);

    /* A 1x1 GIF87a: a 2-entry palette and one LZW-coded pixel of index 1. With a minimum code
     * size of 2 the codes are 3 bits wide: clear (4), 1, end (5), packed LSB first into
     * 4 | 1 << 3 | 5 << 6 = 0x14c. */
    static const uint8_t gif[] = {
        'G',  'I',  'F',  '8',  '7',  'a', /* signature */
        0x01, 0x00, 0x01, 0x00,            /* screen 1x1 */
        0x80, 0x00, 0x00,                  /* global palette of 2 entries, background, aspect */
        10,   20,   30,   200,  100,  50,  /* palette */
        0x2c, 0x00, 0x00, 0x00, 0x00,      /* image descriptor at (0, 0) */
        0x01, 0x00, 0x01, 0x00, 0x00,      /* 1x1, no local palette */
        0x02, 0x02, 0x4c, 0x01, 0x00,      /* LZW minimum code size, one 2-byte sub-block */
        0x3b,                              /* trailer */
    };
    const uint8_t gif_pixel[3] = {200, 100, 50};
    check_rgb_decode(gif, sizeof gif, 1, 1, gif_pixel, 0);
}

/* The offset of the first `marker` of a JPEG's headers, found by walking its marker segments. */
static size_t jpeg_marker_offset(const buffer *b, uint8_t marker)
{
    size_t pos = 2;
    while (pos + 4 <= b->n && b->p[pos] == 0xff && b->p[pos + 1] != marker)
        pos += 2 + ((size_t)b->p[pos + 2] << 8 | b->p[pos + 3]);
    CHECK(pos + 2 <= b->n && b->p[pos + 1] == marker);
    return pos;
}

/* The offset of the first SOS marker of a JPEG. */
static size_t jpeg_sos_offset(const buffer *b)
{
    return jpeg_marker_offset(b, 0xda);
}

/* Runs a JPEG made of the real file's headers (up to its first scan) and then `tail`. */
static srv_status jpeg_with_tail(const buffer *real, bool progressive, const uint8_t *tail,
                                 size_t tail_len, char *err)
{
    size_t sos = jpeg_sos_offset(real);
    uint8_t *img = malloc(sos + tail_len);
    memcpy(img, real->p, sos);
    memcpy(img + sos, tail, tail_len);
    if (progressive) {
        /* Turn the baseline frame header (SOF0) into a progressive one (SOF2). */
        for (size_t i = 2; i + 1 < sos; i++) {
            if (img[i] == 0xff && img[i + 1] == 0xc0) {
                img[i + 1] = 0xc2;
                break;
            }
        }
    }
    float out[3 * 16 * 16];
    srv_status st =
        image_to_tensor(img, sos + tail_len, NULL, 3, 16, 16, MAX_PIXELS, out, err, ERR_LEN);
    free(img);
    return st;
}

/* stb_image 2.27 leaves the samples of a JPEG component that no scan codes uninitialised and
 * still reports success; image.c refuses such files. */
static void test_jpeg_scans(void)
{
    enum { SIDE = 16 };
    uint8_t rgb[SIDE * SIDE * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7);
    buffer real = {0};
    CHECK(stbi_write_jpg_to_func(buffer_append, &real, SIDE, SIDE, 3, rgb, JPEG_QUALITY));
    char err[ERR_LEN];

    static const uint8_t eoi[] = {0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, false, eoi, sizeof eoi, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: JPEG component 1 is not coded by any scan");

    /* A scan of component 1 alone (Ns = 1, tables 0/0, Ss 0, Se 63, Ah/Al 0), then the end. */
    static const uint8_t one_scan[] = {0xff, 0xda, 0x00, 0x08, 0x01, 0x01,
                                       0x00, 0x00, 0x3f, 0x00, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, false, one_scan, sizeof one_scan, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: JPEG component 2 is not coded by any scan");

    /* Progressive: an AC scan alone leaves the coefficients unset... */
    static const uint8_t ac_scan[] = {0xff, 0xda, 0x00, 0x08, 0x01, 0x01,
                                      0x00, 0x01, 0x3f, 0x00, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, true, ac_scan, sizeof ac_scan, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: JPEG component 1 is not coded by any scan");

    /* ...while a first DC scan of every component zeroes them: stb may decode it (with no
     * entropy data every coefficient is 0) or fail, but the coverage check lets it through. */
    static const uint8_t dc_scan[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02,
                                      0x11, 0x03, 0x11, 0x00, 0x00, 0x00, 0xff, 0xd9};
    err[0] = '\0';
    jpeg_with_tail(&real, true, dc_scan, sizeof dc_scan, err);
    CHECK(strstr(err, "not coded") == NULL);

    /* Data after the real scan: the untouched file still decodes; and a gray JPEG has one
     * component, coded by its one scan. */
    CHECK_INT(jpeg_with_tail(&real, false, real.p + jpeg_sos_offset(&real),
                             real.n - jpeg_sos_offset(&real), err),
              SRV_OK);
    free(real.p);
    uint8_t gray[SIDE * SIDE];
    memset(gray, 90, sizeof gray);
    buffer g = {0};
    CHECK(stbi_write_jpg_to_func(buffer_append, &g, SIDE, SIDE, 1, gray, JPEG_QUALITY));
    float out[SIDE * SIDE];
    spec_preprocess pp = raw_pixels();
    CHECK_INT(image_to_tensor(g.p, g.n, &pp, 1, SIDE, SIDE, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    CHECK_NEAR(out[0], 90, JPEG_TOLERANCE);
    free(g.p);
}

/* A copy of `b` with `n` bytes inserted at `at`. */
static buffer spliced(const buffer *b, size_t at, const void *ins, size_t n)
{
    buffer r = {0};
    buffer_append(&r, b->p, (int)at);
    buffer_append(&r, (void *)ins, (int)n);
    buffer_append(&r, b->p + at, (int)(b->n - at));
    return r;
}

/* Appends a complete DHT segment: one DC table 0 of `codes` codes, all 15 or 16 bits long. */
static void append_dht(buffer *b, int codes)
{
    enum { LENGTHS = 16, MAX_COUNT = 255 };
    int seg = 2 + 1 + LENGTHS + codes;
    uint8_t head[4 + 1 + LENGTHS] = {0xff, 0xc4, (uint8_t)(seg >> 8), (uint8_t)seg, 0x00};
    head[4 + LENGTHS] = (uint8_t)(codes < MAX_COUNT ? codes : MAX_COUNT);
    head[4 + LENGTHS - 1] = (uint8_t)(codes - head[4 + LENGTHS]);
    buffer_append(b, head, (int)sizeof head);
    uint8_t *values = calloc((size_t)codes, 1);
    buffer_append(b, values, codes);
    free(values);
}

/* A hand-made baseline JPEG, 16x8 gray: two blocks whose coefficients are all 0 (it decodes to a
 * flat 128), restart interval 1, quantisation table 0 of ones, and one-code Huffman tables (DC:
 * difference 0; AC: end of block), so that each block is the bits 00, padded with 1s to 0x3f.
 * `ecs` is the entropy-coded data, e.g. {0x3f, 0xff, 0xd0, 0x3f}: block, RST0, block. */
static buffer restart_jpeg(const uint8_t *ecs, size_t n)
{
    static const uint8_t head[] = {
        0xff, 0xd8,                   /* SOI */
        0xff, 0xdb, 0x00, 0x43, 0x00, /* DQT of table 0, 64 entries follow */
    };
    static const uint8_t tail[] = {
        0xff, 0xc0, 0x00, 0x0b, 0x08, 0x00, 0x08, 0x00, /* SOF0, 8 bits, height 8, */
        0x10, 0x01, 0x01, 0x11, 0x00,                   /* width 16, component 1: 1x1, table 0 */
        0xff, 0xc4, 0x00, 0x26,                         /* DHT, two tables */
        0x00, 0x01, 0,    0,    0,    0,    0,    0,    0,    0,
        0,    0,    0,    0,    0,    0,    0,    0x00, /* DC 0: one 1-bit code */
        0x10, 0x01, 0,    0,    0,    0,    0,    0,    0,    0,
        0,    0,    0,    0,    0,    0,    0,    0x00,             /* AC 0: EOB */
        0xff, 0xdd, 0x00, 0x04, 0x00, 0x01,                         /* DRI: restart every MCU */
        0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3f, 0x00, /* SOS */
    };
    static const uint8_t eoi[] = {0xff, 0xd9};
    uint8_t ones[64];
    memset(ones, 1, sizeof ones);
    buffer b = {0};
    buffer_append(&b, (void *)head, (int)sizeof head);
    buffer_append(&b, ones, (int)sizeof ones);
    buffer_append(&b, (void *)tail, (int)sizeof tail);
    buffer_append(&b, (void *)ecs, (int)n);
    buffer_append(&b, (void *)eoi, (int)sizeof eoi);
    return b;
}

static srv_status decode_gray_16x8(const buffer *b, float *out, char *err)
{
    spec_preprocess pp = raw_pixels();
    return image_to_tensor(b->p, b->n, &pp, 1, 8, 16, MAX_PIXELS, out, err, ERR_LEN);
}

/* stb_image 2.27 writes past its Huffman arrays (size[257], values[256]) for a DHT table whose 16
 * counts add up to more than 256, already in stbi_info; image.c checks every DHT segment first. */
static void test_jpeg_huffman_tables(void)
{
    char err[ERR_LEN] = "";
    float out[1];

    /* The fuzzer's input (tests/fuzz/image/regressions/jpeg_dht_over_256_codes, without its 3
     * setting bytes): its counts add up to 414, in a segment that also runs past the file. */
    static const uint8_t fuzz_dht[] = {
        0xff, 0xd8, 0xff, 0xc4, 0x01, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x00, 0x40, 0x00, 0x40, 0x03, 0x01, 0x11, 0x00,
        0xff, 0xff, 0x0c, 0xfc, 0xfb, 0xfe, 0xfd, 0xfc, 0xfe, 0x05,
    };
    CHECK_INT(
        image_to_tensor(fuzz_dht, sizeof fuzz_dht, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
        SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (marker 0xc4's segment does not fit in the "
                   "28 bytes after it)");

    /* A complete segment with 257 codes is refused for its count; 256 passes the check (and the
     * file then fails for its missing frame). */
    static const uint8_t soi[] = {0xff, 0xd8}, eoi[] = {0xff, 0xd9};
    buffer b = {0};
    buffer_append(&b, (void *)soi, (int)sizeof soi);
    append_dht(&b, 257);
    buffer_append(&b, (void *)eoi, (int)sizeof eoi);
    CHECK_INT(image_to_tensor(b.p, b.n, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, HUFFMAN_257);
    free(b.p);
    b = (buffer){0};
    buffer_append(&b, (void *)soi, (int)sizeof soi);
    append_dht(&b, 256);
    buffer_append(&b, (void *)eoi, (int)sizeof eoi);
    CHECK_INT(image_to_tensor(b.p, b.n, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (unexpected marker 0xd9)");
    free(b.p);

    /* A table that runs past its segment: stb would take the rest from the bytes after it. */
    static const uint8_t short_values[] = {0xff, 0xd8, 0xff, 0xc4, 0x00, 0x16, 0x00, 0,   0, 10,
                                           0,    0,    0,    0,    0,    0,    0,    0,   0, 0,
                                           0,    0,    0,    1,    2,    3,    0xff, 0xd9};
    CHECK_INT(image_to_tensor(short_values, sizeof short_values, NULL, 1, 1, 1, MAX_PIXELS, out,
                              err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (truncated Huffman table)");
    static const uint8_t short_counts[] = {0xff, 0xd8, 0xff, 0xc4, 0x00, 0x12, 0x00, 0,
                                           0,    0,    0,    0,    0,    0,    0,    0,
                                           0,    0,    0,    0,    0,    0,    0xff, 0xd9};
    CHECK_INT(image_to_tensor(short_counts, sizeof short_counts, NULL, 1, 1, 1, MAX_PIXELS, out,
                              err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (truncated Huffman table)");
    static const uint8_t bad_class[] = {0xff, 0xd8, 0xff, 0xc4, 0x00, 0x13, 0x20, 0, 0,
                                        0,    0,    0,    0,    0,    0,    0,    0, 0,
                                        0,    0,    0,    0,    0,    0xff, 0xd9};
    CHECK_INT(image_to_tensor(bad_class, sizeof bad_class, NULL, 1, 1, 1, MAX_PIXELS, out, err,
                              sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (bad Huffman table class or id)");

    /* The walk follows the segments as stb does, so a table cannot hide from it: after padding
     * between header segments (which stb skips), or after a restart marker preceded by a fill
     * byte inside a scan (which stb's bit reader skips). Without the bad table both decode. */
    static const uint8_t two_blocks[] = {0x3f, 0xff, 0xff, 0xd0, 0x3f};
    b = restart_jpeg(two_blocks, sizeof two_blocks);
    float px[8 * 16];
    CHECK_INT(decode_gray_16x8(&b, px, err), SRV_OK);
    for (int i = 0; i < 8 * 16; i++)
        CHECK_NEAR(px[i], 128, 0);
    buffer after_rst = {0};
    buffer_append(&after_rst, b.p, (int)(b.n - 2)); /* drop EOI */
    append_dht(&after_rst, 257);
    buffer_append(&after_rst, (void *)eoi, (int)sizeof eoi);
    CHECK_INT(decode_gray_16x8(&after_rst, px, err), SRV_BAD_REQUEST);
    CHECK_STR(err, HUFFMAN_257);
    free(after_rst.p);

    static const uint8_t padding[] = {0x00, 0x12, 0x34};
    size_t sof = jpeg_marker_offset(&b, 0xc0);
    buffer padded = spliced(&b, sof, padding, sizeof padding);
    CHECK_INT(decode_gray_16x8(&padded, px, err), SRV_OK);
    CHECK_NEAR(px[0], 128, 0);
    buffer dht = {0};
    buffer_append(&dht, (void *)padding, (int)sizeof padding);
    append_dht(&dht, 257);
    buffer hidden = spliced(&b, sof, dht.p, dht.n);
    CHECK_INT(decode_gray_16x8(&hidden, px, err), SRV_BAD_REQUEST);
    CHECK_STR(err, HUFFMAN_257);
    free(hidden.p);
    free(dht.p);
    free(padded.p);
    free(b.p);

    /* A restart marker without a fill byte decodes the same. */
    static const uint8_t plain_rst[] = {0x3f, 0xff, 0xd0, 0x3f};
    b = restart_jpeg(plain_rst, sizeof plain_rst);
    CHECK_INT(decode_gray_16x8(&b, px, err), SRV_OK);
    CHECK_NEAR(px[8 * 16 - 1], 128, 0);
    free(b.p);
}

/* stb_image 2.27 allocates its JPEG decoder with malloc, so a scan that uses a Huffman table no
 * DHT defined decodes with stale heap memory (and indexes with it, out of bounds), and a
 * quantisation table no DQT defined scales the coefficients with stale memory. image.c refuses
 * both. The real file defines DC and AC tables 0 and 1, and quantisation tables 0 (component 1)
 * and 1 (components 2 and 3). */
static void test_jpeg_undefined_tables(void)
{
    enum { SIDE = 16 };
    uint8_t rgb[SIDE * SIDE * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7);
    buffer real = {0};
    CHECK(stbi_write_jpg_to_func(buffer_append, &real, SIDE, SIDE, 3, rgb, JPEG_QUALITY));
    char err[ERR_LEN] = "";

    /* Baseline: each component needs its DC and its AC table. */
    static const uint8_t dc2[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02,
                                  0x21, 0x03, 0x11, 0x00, 0x3f, 0x00, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, false, dc2, sizeof dc2, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (a scan of component 2 uses DC Huffman "
                   "table 2, which no DHT segment defines)");
    static const uint8_t ac3[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02,
                                  0x13, 0x03, 0x11, 0x00, 0x3f, 0x00, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, false, ac3, sizeof ac3, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (a scan of component 2 uses AC Huffman "
                   "table 3, which no DHT segment defines)");

    /* Progressive: a first DC scan needs the DC table, whatever its AC one... */
    static const uint8_t prog_dc2[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x03, 0x02,
                                       0x23, 0x03, 0x13, 0x00, 0x00, 0x00, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, true, prog_dc2, sizeof prog_dc2, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (a scan of component 2 uses DC Huffman "
                   "table 2, which no DHT segment defines)");
    /* ...an AC scan (Ss > 0) the AC table, whatever its DC one... */
    static const uint8_t prog_ac2[] = {0xff, 0xda, 0x00, 0x08, 0x01, 0x01,
                                       0x32, 0x01, 0x3f, 0x00, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, true, prog_ac2, sizeof prog_ac2, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (a scan of component 1 uses AC Huffman "
                   "table 2, which no DHT segment defines)");
    /* ...and a DC refinement (Ah > 0) none: this one fails only for coding no component. */
    static const uint8_t prog_refine[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x33, 0x02,
                                          0x33, 0x03, 0x33, 0x00, 0x00, 0x10, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&real, true, prog_refine, sizeof prog_refine, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: JPEG component 1 is not coded by any scan");

    /* Component 1's quantisation table turned into table 2 (SOF0: marker, length, precision,
     * height, width, count, then id, sampling, table per component). */
    enum { SOF_FIRST_TQ = 12, SOF_COMPONENT = 3 };
    static const uint8_t scan_all[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02,
                                       0x11, 0x03, 0x11, 0x00, 0x3f, 0x00, 0xff, 0xd9};
    size_t sof = jpeg_marker_offset(&real, 0xc0);
    buffer q = spliced(&real, 0, NULL, 0);
    q.p[sof + SOF_FIRST_TQ] = 2;
    CHECK_INT(jpeg_with_tail(&q, false, scan_all, sizeof scan_all, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (component 1 uses quantization table 2, "
                   "which no DQT segment defines)");
    free(q.p);

    /* Two frame components with id 1: stb decodes a scan of id 1 into the first only, so the
     * second is never coded. */
    buffer dup = spliced(&real, 0, NULL, 0);
    dup.p[sof + SOF_FIRST_TQ + SOF_COMPONENT - 2] = 1;
    static const uint8_t scan_1_3[] = {0xff, 0xda, 0x00, 0x0a, 0x02, 0x01, 0x00,
                                       0x03, 0x11, 0x00, 0x3f, 0x00, 0xff, 0xd9};
    CHECK_INT(jpeg_with_tail(&dup, false, scan_1_3, sizeof scan_1_3, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: JPEG component 1 is not coded by any scan");
    free(dup.p);

    /* The untouched file decodes, and so does the file with bytes after its EOI, which stb
     * ignores, to the same pixels. */
    float a[3 * SIDE * SIDE], b[3 * SIDE * SIDE];
    spec_preprocess pp = raw_pixels();
    CHECK_INT(image_to_tensor(real.p, real.n, &pp, 3, SIDE, SIDE, MAX_PIXELS, a, err, sizeof err),
              SRV_OK);
    static const char trailer[] = "trailing bytes";
    buffer tail = spliced(&real, real.n, trailer, sizeof trailer);
    CHECK_INT(image_to_tensor(tail.p, tail.n, &pp, 3, SIDE, SIDE, MAX_PIXELS, b, err, sizeof err),
              SRV_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    free(tail.p);
    free(real.p);
}

/* stb decodes all blocks of a scan's components again for every scan, even an empty one, so
 * each scan header of a few bytes costs a full pass: image.c bounds the scans as the standard and
 * real encoders do (tests/fuzz/image/regressions/jpeg_*_scans). */
static void test_jpeg_scan_limits(void)
{
    enum { SIDE = 16, LIMIT = 64, NCOMP = 3 };
    uint8_t rgb[SIDE * SIDE * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7);
    buffer real = {0};
    CHECK(stbi_write_jpg_to_func(buffer_append, &real, SIDE, SIDE, 3, rgb, JPEG_QUALITY));
    char err[ERR_LEN] = "";
    static const uint8_t eoi[] = {0xff, 0xd9};

    /* Sequential: each component in exactly one scan. */
    static const uint8_t all[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00,
                                  0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00};
    buffer twice = {0};
    buffer_append(&twice, (void *)all, (int)sizeof all);
    buffer_append(&twice, (void *)all, (int)sizeof all);
    buffer_append(&twice, (void *)eoi, (int)sizeof eoi);
    CHECK_INT(jpeg_with_tail(&real, false, twice.p, twice.n, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (component 1 is coded by more than one "
                   "scan)");
    free(twice.p);

    /* Progressive: components coded 64 times in all decode (a first DC scan of the three, then
     * AC scans of component 1); once more is refused. */
    static const uint8_t dc[] = {0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00,
                                 0x02, 0x11, 0x03, 0x11, 0x00, 0x00, 0x00};
    static const uint8_t ac[] = {0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x01, 0x3f, 0x00};
    buffer prog = {0};
    buffer_append(&prog, (void *)dc, (int)sizeof dc);
    for (int i = NCOMP; i < LIMIT; i++)
        buffer_append(&prog, (void *)ac, (int)sizeof ac);
    buffer ok = spliced(&prog, prog.n, eoi, sizeof eoi);
    CHECK_INT(jpeg_with_tail(&real, true, ok.p, ok.n, err), SRV_OK);
    buffer_append(&prog, (void *)ac, (int)sizeof ac);
    buffer_append(&prog, (void *)eoi, (int)sizeof eoi);
    CHECK_INT(jpeg_with_tail(&real, true, prog.p, prog.n, err), SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: the progressive JPEG's scans code its components more "
                   "than 64 times in all, which is not supported");
    free(ok.p);
    free(prog.p);
    free(real.p);
}

/* stb_image 2.27 converts a 16-bit PNM's channels with its 8-bit routine, then reads 2 bytes a
 * sample from the result: a crash when the requested channels differ from the file's. image.c
 * refuses every PNM with more than 255 levels before any stb_image call. */
static void test_pnm_16bit(void)
{
    char err[ERR_LEN] = "";
    float out[3 * 4 * 4];

    /* The fuzzer's inputs (tests/fuzz/image/regressions/pnm16_*), at their 4x4 output size. */
    static const uint8_t gray_to_rgb[] = "P5 2 2 65535\n\0\1\2\3\4\5\6\7";
    CHECK_INT(image_to_tensor(gray_to_rgb, sizeof gray_to_rgb - 1, NULL, 3, 4, 4, MAX_PIXELS, out,
                              err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, PNM_16BIT);
    static const uint8_t rgb_to_gray[] = "P6 2 1 65535\n\0\1\2\3\4\5\6\7\10\11\12\13";
    CHECK_INT(image_to_tensor(rgb_to_gray, sizeof rgb_to_gray - 1, NULL, 1, 4, 4, MAX_PIXELS, out,
                              err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, PNM_16BIT);

    /* The size that crashed the server, within the pixel limit: refused from its header alone. */
    static const char big[] = "P5\n4096 4096\n65535\n";
    CHECK_INT(image_to_tensor((const uint8_t *)big, sizeof big - 1, NULL, 3, 4, 4, MAX_PIXELS, out,
                              err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, PNM_16BIT);

    /* 256 levels already take two bytes a sample; 255 take one, and decode. */
    static const char p256[] = "P5 1 1 256\n\1\2";
    CHECK_INT(image_to_tensor((const uint8_t *)p256, sizeof p256 - 1, NULL, 1, 1, 1, MAX_PIXELS,
                              out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, PNM_16BIT);
    static const char p255[] = "P5 1 1 255\n\177";
    spec_preprocess pp = raw_pixels();
    CHECK_INT(image_to_tensor((const uint8_t *)p255, sizeof p255 - 1, &pp, 3, 1, 1, MAX_PIXELS, out,
                              err, sizeof err),
              SRV_OK);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(out[c], 127, 0);
}

/* Formats stb_image decodes but the API does not promise are refused by their magic bytes, so
 * that stb's TGA, HDR, PSD and PIC decoders are never reached. stbi_info shows that stb itself
 * would have taken each. */
static void check_unsupported(const uint8_t *img, size_t len, bool stb_takes_it)
{
    char err[ERR_LEN] = "";
    float out[3];
    int x, y, comp;
    CHECK(stbi_info_from_memory(img, (int)len, &x, &y, &comp) == (int)stb_takes_it);
    CHECK_INT(image_to_tensor(img, len, NULL, 3, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, UNSUPPORTED_TYPE);
}

static void test_unsupported_types(void)
{
    enum { W = 3, H = 2 };
    uint8_t rgb[W * H * 3];
    float hdr[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) {
        rgb[i] = (uint8_t)(i * 13);
        hdr[i] = (float)i / (W * H * 3);
    }

    buffer b = {0};
    CHECK(stbi_write_tga_to_func(buffer_append, &b, W, H, 3, rgb));
    check_unsupported(b.p, b.n, true);
    free(b.p);

    b = (buffer){0};
    CHECK(stbi_write_hdr_to_func(buffer_append, &b, W, H, 3, hdr));
    check_unsupported(b.p, b.n, true);
    free(b.p);

    /* stb reads a JPEG's SOI after any number of 0xff bytes; the API takes a JPEG that starts
     * with it, as encoders write it. */
    b = (buffer){0};
    CHECK(stbi_write_jpg_to_func(buffer_append, &b, W, H, 3, rgb, JPEG_QUALITY));
    static const uint8_t fill = 0xff;
    buffer filled = spliced(&b, 0, &fill, 1);
    check_unsupported(filled.p, filled.n, true);
    free(filled.p);
    free(b.p);

    /* ASCII PNM, which stb_image never decoded. */
    static const char p3[] = "P3 1 1 255\n1 2 3\n";
    check_unsupported((const uint8_t *)p3, sizeof p3 - 1, false);
}

/* A buffer whose last byte sits flush against a PROT_NONE page, so that a read past the view
 * faults at once, even inside the uninstrumented libstb. */
typedef struct {
    uint8_t *map;
    size_t usable, total;
} guarded;

static bool guarded_create(guarded *g, size_t cap)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    g->usable = (cap + page - 1) / page * page;
    g->total = g->usable + page;
    g->map = mmap(NULL, g->total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED)
        return false;
    return mprotect(g->map + g->usable, page, PROT_NONE) == 0;
}

static const uint8_t *guarded_place(guarded *g, const uint8_t *data, size_t n)
{
    uint8_t *p = g->map + g->usable - n;
    memcpy(p, data, n);
    return p;
}

/* Every prefix of a valid image decodes or fails with 400; none crashes or reads past its end.
 * Returns how many failed. */
static int check_prefixes(const buffer *img, int channels)
{
    guarded g;
    if (!guarded_create(&g, img->n)) {
        CHECK(!"mmap failed");
        return -1;
    }
    char err[ERR_LEN];
    float out[GRAD_H * GRAD_W * 3];
    int failures = 0;
    bool statuses_ok = true;
    for (size_t n = 0; n <= img->n; n++) {
        const uint8_t *p = guarded_place(&g, img->p, n);
        srv_status st =
            image_to_tensor(p, n, NULL, channels, GRAD_H, GRAD_W, MAX_PIXELS, out, err, sizeof err);
        if (st != SRV_OK && st != SRV_BAD_REQUEST)
            statuses_ok = false;
        if (st == SRV_BAD_REQUEST && !strstr(err, "cannot decode image"))
            statuses_ok = false;
        failures += st != SRV_OK;
    }
    CHECK(statuses_ok);
    /* The whole file decodes; a prefix missing most of the data cannot. */
    CHECK(failures >= 1 && failures <= (int)img->n);
    munmap(g.map, g.total);
    return failures;
}

static void test_truncated(void)
{
    buffer png = gradient_png();
    check_prefixes(&png, 1);
    check_prefixes(&png, 3);
    free(png.p);

    uint8_t rgb[GRAD_H * GRAD_W * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7);
    buffer b = {0};
    CHECK(stbi_write_jpg_to_func(buffer_append, &b, GRAD_W, GRAD_H, 3, rgb, JPEG_QUALITY));
    check_prefixes(&b, 3);
    free(b.p);
    b = (buffer){0};
    CHECK(stbi_write_bmp_to_func(buffer_append, &b, GRAD_W, GRAD_H, 3, rgb));
    check_prefixes(&b, 3);
    free(b.p);

    /* A PPM has no checksum or end marker: only the length check stops every proper prefix. */
    static const char ppm_header[] = "P6\n# comment\n7 5\n255\n";
    b = (buffer){0};
    buffer_append(&b, (void *)ppm_header, (int)sizeof ppm_header - 1);
    buffer_append(&b, rgb, (int)sizeof rgb);
    CHECK_INT(check_prefixes(&b, 3), (int)b.n);
    free(b.p);
}

static void test_garbage_and_empty(void)
{
    char err[ERR_LEN] = "";
    float out[1];
    static const char garbage[] = "this is not an image, just some text\r\n\x00\x01\x02";
    CHECK_INT(image_to_tensor((const uint8_t *)garbage, sizeof garbage, NULL, 1, 1, 1, MAX_PIXELS,
                              out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, UNSUPPORTED_TYPE);

    err[0] = '\0';
    CHECK_INT(image_to_tensor((const uint8_t *)garbage, 0, NULL, 1, 1, 1, MAX_PIXELS, out, err,
                              sizeof err),
              SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "empty");
    CHECK_INT(image_to_tensor(NULL, 0, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);

    /* A PNG signature with nothing after it. */
    static const uint8_t sig[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    CHECK_INT(image_to_tensor(sig, sizeof sig, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "cannot decode image");

    /* A PGM that claims a zero width. */
    static const char zero[] = "P5 0 4 255\n";
    CHECK_INT(image_to_tensor((const uint8_t *)zero, sizeof zero - 1, NULL, 1, 1, 1, MAX_PIXELS,
                              out, err, sizeof err),
              SRV_BAD_REQUEST);

    /* A PNM header within the limit whose pixel data is short. stb_image 2.27 would "decode" it
     * into uninitialised memory; image.c refuses it. One byte short is enough. */
    static const char nodata[] = "P5 64 64 255\n";
    CHECK_INT(image_to_tensor((const uint8_t *)nodata, sizeof nodata - 1, NULL, 1, 1, 1, MAX_PIXELS,
                              out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: the PNM pixel data is 0 bytes, expected 4096");
    static const char short_ppm[] = "P6\n# c\n2 1\n255\n\1\2\3\4\5";
    CHECK_INT(image_to_tensor((const uint8_t *)short_ppm, sizeof short_ppm - 1, NULL, 3, 1, 2,
                              MAX_PIXELS, (float[6]){0}, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: the PNM pixel data is 5 bytes, expected 6");
    /* 16-bit PNM is refused before any stb_image call (test_pnm_16bit), even when short. */
    static const char ppm16[] = "P6 1 1 65535\n\1\2\3\4\5";
    CHECK_INT(image_to_tensor((const uint8_t *)ppm16, sizeof ppm16 - 1, NULL, 3, 1, 1, MAX_PIXELS,
                              (float[3]){0}, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, PNM_16BIT);

    /* Channel counts other than 1 and 3 are a caller bug, reported as such. */
    buffer png = gradient_png();
    CHECK_INT(image_to_tensor(png.p, png.n, NULL, 2, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_INTERNAL);
    CHECK_INT(image_to_tensor(png.p, png.n, NULL, 1, 0, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_INTERNAL);
    free(png.p);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A PNG signature and an 8-bit gray IHDR chunk of the given size, and nothing else. stb_image
 * does not verify chunk CRCs, so the CRC is left zero. */
static size_t png_header(uint8_t *p, uint32_t w, uint32_t h)
{
    static const uint8_t sig[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    enum { IHDR_LEN = 13 };
    size_t n = 0;
    memcpy(p, sig, sizeof sig);
    n += sizeof sig;
    put_be32(p + n, IHDR_LEN);
    memcpy(p + n + 4, "IHDR", 4);
    n += 8;
    put_be32(p + n, w);
    put_be32(p + n + 4, h);
    p[n + 8] = 8;  /* bit depth */
    p[n + 9] = 0;  /* gray */
    p[n + 10] = 0; /* deflate */
    p[n + 11] = 0; /* adaptive filtering */
    p[n + 12] = 0; /* no interlace */
    n += IHDR_LEN;
    memset(p + n, 0, 4);
    return n + 4;
}

/* A 24-bit BITMAPINFOHEADER BMP header with no pixel data. */
static size_t bmp_header(uint8_t *p, uint32_t w, uint32_t h)
{
    enum { FILE_HEADER = 14, INFO_HEADER = 40 };
    memset(p, 0, FILE_HEADER + INFO_HEADER);
    p[0] = 'B';
    p[1] = 'M';
    put_le32(p + 2, FILE_HEADER + INFO_HEADER);
    put_le32(p + 10, FILE_HEADER + INFO_HEADER);
    put_le32(p + 14, INFO_HEADER);
    put_le32(p + 18, w);
    put_le32(p + 22, h);
    p[26] = 1;  /* planes */
    p[28] = 24; /* bits per pixel */
    return FILE_HEADER + INFO_HEADER;
}

static void check_bomb(const uint8_t *img, size_t len, const char *what)
{
    char err[ERR_LEN] = "";
    float out[1];
    double t0 = now_seconds();
    srv_status st = image_to_tensor(img, len, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err);
    double dt = now_seconds() - t0;
    /* Decoding would have failed with 400 (no pixel data), so 413 shows it was not attempted. */
    CHECK_INT(st, SRV_TOO_LARGE);
    CHECK(dt < BOMB_SECONDS);
    if (st != SRV_TOO_LARGE)
        fprintf(stderr, "  %s: %s\n", what, err);
}

static void test_limits(void)
{
    char err[ERR_LEN] = "";
    uint8_t hdr[64];

    size_t n = bmp_header(hdr, BIG_SIDE, BIG_SIDE);
    check_bomb(hdr, n, "BMP");
    image_to_tensor(hdr, n, NULL, 1, 1, 1, MAX_PIXELS, (float[1]){0}, err, sizeof err);
    CHECK_STR(err, "image is 100000x100000 = 10000000000 pixels; the limit is 16777216");

    static const char pgm[] = "P5\n100000 100000\n255\n";
    check_bomb((const uint8_t *)pgm, sizeof pgm - 1, "PGM");

    /* stb_image's own PNG header check refuses this one (and reports "unknown image type"); the
     * IHDR size still makes it a 413 with the same message. */
    n = png_header(hdr, BIG_SIDE, BIG_SIDE);
    check_bomb(hdr, n, "PNG 100000");
    image_to_tensor(hdr, n, NULL, 1, 1, 1, MAX_PIXELS, (float[1]){0}, err, sizeof err);
    CHECK_STR(err, "image is 100000x100000 = 10000000000 pixels; the limit is 16777216");
    n = png_header(hdr, UINT32_MAX, UINT32_MAX);
    check_bomb(hdr, n, "PNG 2^32-1");
    image_to_tensor(hdr, n, NULL, 1, 1, 1, MAX_PIXELS, (float[1]){0}, err, sizeof err);
    CHECK_STR(err, "image is 4294967295x4294967295 = 18446744065119617025 pixels; the limit is "
                   "16777216");

    n = png_header(hdr, MEDIUM_SIDE, MEDIUM_SIDE);
    check_bomb(hdr, n, "PNG 20000");
    image_to_tensor(hdr, n, NULL, 1, 1, 1, MAX_PIXELS, (float[1]){0}, err, sizeof err);
    CHECK_STR(err, "image is 20000x20000 = 400000000 pixels; the limit is 16777216");

    /* The limit is inclusive. */
    buffer png = gradient_png();
    float out[1];
    CHECK_INT(image_to_tensor(png.p, png.n, NULL, 1, 1, 1, GRAD_W * GRAD_H, out, err, sizeof err),
              SRV_OK);
    CHECK_INT(
        image_to_tensor(png.p, png.n, NULL, 1, 1, 1, GRAD_W * GRAD_H - 1, out, err, sizeof err),
        SRV_TOO_LARGE);
    CHECK_STR(err, "image is 7x5 = 35 pixels; the limit is 34");
    free(png.p);
}

/* stb_image 2.27 grows its compressed-data buffer to each IDAT chunk's declared length before
 * reading the chunk, so a tiny file could make it allocate 2 GB; image.c refuses a chunk that runs
 * past the file. This is tests/fuzz/image/regressions/png_idat_length_past_end. */
static void test_png_chunk_lengths(void)
{
    static const uint8_t iend[] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    enum { HUGE_CHUNK = 0x7ffff000 };
    char err[ERR_LEN] = "";
    float out[GRAD_H * GRAD_W];
    uint8_t png[128];
    size_t n = png_header(png, 1, 1);
    put_be32(png + n, HUGE_CHUNK);
    memcpy(png + n + 4, "IDAT", 4);
    memset(png + n + 8, 0, 4);
    n += 12;
    memcpy(png + n, iend, sizeof iend);
    n += sizeof iend;
    CHECK_INT(image_to_tensor(png, n, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt PNG (the chunk at byte 33 declares 2147479552 "
                   "bytes; 12 remain)");

    /* A PNG must reach its IEND chunk; stb ignores what follows it, and reads a missing IEND
     * CRC as zeros, so both of those still decode, to the same pixels. */
    buffer g = gradient_png();
    spec_preprocess pp = raw_pixels();
    float want[GRAD_H * GRAD_W];
    CHECK_INT(image_to_tensor(g.p, g.n, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, want, err, sizeof err),
              SRV_OK);
    CHECK_INT(image_to_tensor(g.p, g.n - sizeof iend, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, out, err,
                              sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt PNG (it ends before its IEND chunk)");
    CHECK_INT(
        image_to_tensor(g.p, g.n - 4, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, out, err, sizeof err),
        SRV_OK);
    CHECK(memcmp(out, want, sizeof want) == 0);
    static const char trailer[] = "trailing bytes";
    buffer t = spliced(&g, g.n, trailer, sizeof trailer);
    CHECK_INT(image_to_tensor(t.p, t.n, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    CHECK(memcmp(out, want, sizeof want) == 0);
    free(t.p);
    free(g.p);
}

int main(void)
{
    test_resize_matches_torch();
    test_channel_conversion();
    test_normalisation();
    test_formats();
    test_jpeg_scans();
    test_jpeg_huffman_tables();
    test_jpeg_undefined_tables();
    test_jpeg_scan_limits();
    test_pnm_16bit();
    test_unsupported_types();
    test_truncated();
    test_garbage_and_empty();
    test_limits();
    test_png_chunk_lengths();
    return check_report("image");
}
