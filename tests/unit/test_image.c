/* test_image.c - image_to_tensor: decoding, channel conversion, PyTorch-exact resizing, limits. */

/* MAP_ANONYMOUS, for the guard page, is outside POSIX 2008. */
#define _DEFAULT_SOURCE

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <stb_image.h>
#include <stb_image_write.h>
#include <turbojpeg.h>
#include <zlib.h>

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
/* How far a DCT-scaled JPEG decode may be from a full decode and the same resize, in 8-bit levels
 * (test_jpeg_scaled_vs_full says why they differ). */
#define SCALED_MEAN_TOL 4.0
#define SCALED_MAX_TOL  32.0

/* Refusals of the checks image.c makes before any stb_image call. */
#define UNSUPPORTED_TYPE                                                                           \
    "cannot decode image: unsupported image type; send PNG, JPEG, BMP, GIF or PNM"
#define PNM_16BIT                                                                                  \
    "cannot decode image: 16-bit PNM (maximum value above 255) is not supported; send 8-bit"

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

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- JPEG (libjpeg-turbo) ------------------------------------------------------------------- */

/* A copy of `b` with `n` bytes inserted at `at`. */
static buffer spliced(const buffer *b, size_t at, const void *ins, size_t n)
{
    buffer r = {0};
    buffer_append(&r, b->p, (int)at);
    buffer_append(&r, (void *)ins, (int)n);
    buffer_append(&r, b->p + at, (int)(b->n - at));
    return r;
}

/* Compresses w x h pixels of TurboJPEG pixel format pf (TJFLAG_PROGRESSIVE in flags for a
 * progressive file). */
static buffer encode_jpeg(const uint8_t *pix, int w, int h, int pf, int subsamp, int flags)
{
    buffer b = {0};
    tjhandle tj = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long n = 0;
    CHECK(tj != NULL);
    if (tj && tjCompress2(tj, pix, w, 0, h, pf, &jpeg, &n, subsamp, JPEG_QUALITY, flags) == 0)
        buffer_append(&b, jpeg, (int)n);
    CHECK(b.n > 0);
    tjFree(jpeg);
    tjDestroy(tj);
    return b;
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

static uint32_t xorshift32(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* A photo-like RGB image: a few smooth shapes across the frame (a sky-to-ground gradient, broad
 * light and shade, colour that drifts), plus per-pixel grain of +-noise levels, as sensors and
 * fine texture give. The noise is what a downscale without antialiasing samples differently. */
static uint8_t *photo_rgb(int w, int h, int noise)
{
    uint8_t *pix = malloc((size_t)w * (size_t)h * 3);
    CHECK(pix != NULL);
    uint32_t seed = 0x9e3779b9u;
    const double pi = 3.14159265358979;
    for (int y = 0; y < h; y++) {
        double fy = (double)y / h;
        for (int x = 0; x < w; x++) {
            double fx = (double)x / w;
            double shade = 50 * sin(2 * pi * (1.5 * fx + 0.3)) * cos(2 * pi * (1.2 * fy));
            for (int c = 0; c < 3; c++) {
                double v = 60 + 120 * (1 - fy) * (c == 2 ? 1.0 : 0.6) + shade +
                           30 * sin(2 * pi * (fx + fy + c / 3.0));
                v += (double)(xorshift32(&seed) % (2 * noise + 1)) - noise;
                pix[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    return pix;
}

static srv_status decode_jpeg_opts(const buffer *b, int channels, int h, int w, int64_t max_pixels,
                                   bool full, float *out, char *err)
{
    spec_preprocess pp = raw_pixels();
    image_options opts = {.max_pixels = max_pixels, .jpeg_full_size = full};
    return image_to_tensor_opts(b->p, b->n, &pp, channels, h, w, &opts, out, err, ERR_LEN);
}

/* Photos to a model's input: the DCT-scaled decode against a full decode and the same bilinear
 * resize, on 3 MP (2048x1536) and 12 MP (4000x3000) photo-like images at 28x28 and 224x224.
 * They differ: bilinear resizing without antialiasing samples 4 pixels of the full image per
 * output pixel, while the scaled decode has already averaged each 8x8 block (1/8) or 4x4 (1/4),
 * so the grain averages out. The bounds are in 8-bit levels, over all pixels and channels. */
static void test_jpeg_scaled_vs_full(void)
{
    static const struct {
        int w, h;
    } photos[] = {{2048, 1536}, {4000, 3000}};
    static const int sides[] = {28, 224};
    enum { GRAIN = 12 };
    char err[ERR_LEN] = "";
    for (size_t i = 0; i < sizeof photos / sizeof *photos; i++) {
        int pw = photos[i].w, ph = photos[i].h;
        uint8_t *rgb = photo_rgb(pw, ph, GRAIN);
        buffer jpg = encode_jpeg(rgb, pw, ph, TJPF_RGB, TJSAMP_420, 0);
        free(rgb);
        for (size_t k = 0; k < sizeof sides / sizeof *sides; k++) {
            int s = sides[k];
            size_t n = (size_t)3 * s * s;
            float *scaled = malloc(n * sizeof *scaled), *full = malloc(n * sizeof *full);
            CHECK_INT(decode_jpeg_opts(&jpg, 3, s, s, MAX_PIXELS, false, scaled, err), SRV_OK);
            CHECK_INT(decode_jpeg_opts(&jpg, 3, s, s, MAX_PIXELS, true, full, err), SRV_OK);
            double sum = 0, max = 0;
            for (size_t j = 0; j < n; j++) {
                double d = fabs((double)scaled[j] - full[j]);
                sum += d;
                max = d > max ? d : max;
            }
            fprintf(
                stderr,
                "  jpeg %dx%d -> %dx%d: scaled vs full decode, mean |diff| %.2f, max %.1f levels\n",
                pw, ph, s, s, sum / (double)n, max);
            CHECK(sum / (double)n <= SCALED_MEAN_TOL);
            CHECK(max <= SCALED_MAX_TOL);
            free(scaled);
            free(full);
        }
        free(jpg.p);
    }
}

/* The scale is the smallest eighth whose output covers the model's input: a 64x64 JPEG for an
 * 8x8 input decodes at 1/8 to exactly TurboJPEG's own 8x8 pixels (no resize left to do); a 63x63
 * input needs the full 64x64. Without scaling (an input at least the image's size) the scaled and
 * full paths are the same decode. */
static void test_jpeg_scale_choice(void)
{
    enum { SIDE = 64, EIGHTH = 8 };
    uint8_t *rgb = photo_rgb(SIDE, SIDE, 20);
    buffer jpg = encode_jpeg(rgb, SIDE, SIDE, TJPF_RGB, TJSAMP_444, 0);
    free(rgb);
    char err[ERR_LEN] = "";

    uint8_t ref[EIGHTH * EIGHTH * 3];
    tjhandle tj = tjInitDecompress();
    CHECK(tj && tjDecompress2(tj, jpg.p, jpg.n, ref, EIGHTH, 0, EIGHTH, TJPF_RGB,
                              TJFLAG_STOPONWARNING) == 0);
    tjDestroy(tj);
    float out[3 * EIGHTH * EIGHTH];
    CHECK_INT(decode_jpeg_opts(&jpg, 3, EIGHTH, EIGHTH, MAX_PIXELS, false, out, err), SRV_OK);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < EIGHTH * EIGHTH; i++)
            CHECK_NEAR(out[c * EIGHTH * EIGHTH + i], ref[i * 3 + c], 0);

    size_t n = (size_t)3 * (SIDE - 1) * (SIDE - 1);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    CHECK_INT(decode_jpeg_opts(&jpg, 3, SIDE - 1, SIDE - 1, MAX_PIXELS, false, a, err), SRV_OK);
    CHECK_INT(decode_jpeg_opts(&jpg, 3, SIDE - 1, SIDE - 1, MAX_PIXELS, true, b, err), SRV_OK);
    CHECK(memcmp(a, b, n * sizeof *a) == 0);
    free(a);
    free(b);
    free(jpg.p);
}

/* A copy of a JPEG with a comment segment holding `n` 0xff 0xda pairs, which the scan count
 * counts (it errs on the safe side) and libjpeg skips. */
static buffer with_scan_markers(const buffer *jpg, int n)
{
    buffer com = {0};
    int seg = 2 + 2 * n;
    uint8_t head[4] = {0xff, 0xfe, (uint8_t)(seg >> 8), (uint8_t)seg};
    buffer_append(&com, head, (int)sizeof head);
    for (int i = 0; i < n; i++)
        buffer_append(&com, (uint8_t[]){0xff, 0xda}, 2);
    buffer b = spliced(jpg, 2, com.p, com.n);
    free(com.p);
    return b;
}

static int count_scan_markers(const buffer *b)
{
    int n = 0;
    for (size_t i = 0; i + 1 < b->n; i++)
        n += b->p[i] == 0xff && b->p[i + 1] == 0xda;
    return n;
}

/* The limit counts the pixels decoded: a 64x64 baseline JPEG fits a 256-pixel limit when it
 * decodes at 1/8 (8x8) or 2/8 (16x16), and not at 3/8 (24x24) or in full. A progressive JPEG is
 * held whole in memory, so its full size counts, and its scans x pixels at most 16 x the limit. */
static void test_jpeg_limits(void)
{
    enum { SIDE = 64, LIMIT = 256, BUDGET = 16 };
    uint8_t *rgb = photo_rgb(SIDE, SIDE, 20);
    buffer base = encode_jpeg(rgb, SIDE, SIDE, TJPF_RGB, TJSAMP_420, 0);
    buffer prog = encode_jpeg(rgb, SIDE, SIDE, TJPF_RGB, TJSAMP_420, TJFLAG_PROGRESSIVE);
    free(rgb);
    char err[ERR_LEN] = "";
    float out[3 * 24 * 24];
    CHECK_INT(decode_jpeg_opts(&base, 3, 8, 8, LIMIT, false, out, err), SRV_OK);
    CHECK_INT(decode_jpeg_opts(&base, 3, 16, 16, LIMIT, false, out, err), SRV_OK);
    CHECK_INT(decode_jpeg_opts(&base, 3, 24, 24, LIMIT, false, out, err), SRV_TOO_LARGE);
    CHECK_STR(err, "image is 64x64, decoded at 3/8 as 24x24 = 576 pixels; the limit is 256");
    CHECK_INT(decode_jpeg_opts(&base, 3, 8, 8, LIMIT, true, out, err), SRV_TOO_LARGE);
    CHECK_STR(err, "image is 64x64 = 4096 pixels; the limit is 256");

    CHECK_INT(decode_jpeg_opts(&prog, 3, 8, 8, SIDE * SIDE, false, out, err), SRV_OK);
    CHECK_INT(decode_jpeg_opts(&prog, 3, 8, 8, SIDE * SIDE - 1, false, out, err), SRV_TOO_LARGE);
    CHECK_STR(err, "progressive JPEG is 64x64 = 4096 pixels; the limit is 4095 (progressive JPEGs "
                   "are held whole in memory)");
    int own = count_scan_markers(&prog);
    CHECK(own > 1 && own < BUDGET);
    for (int scans = BUDGET; scans <= BUDGET + 1; scans++) {
        buffer b = with_scan_markers(&prog, scans - own);
        CHECK_INT(decode_jpeg_opts(&b, 3, 8, 8, SIDE * SIDE, false, out, err),
                  scans <= BUDGET ? SRV_OK : SRV_TOO_LARGE);
        free(b.p);
    }
    CHECK_STR(err, "the progressive JPEG's 17 scans over its 64x64 pixels are too much work: "
                   "scans x pixels may be at most 16 x the pixel limit (4096)");
    free(base.p);
    free(prog.p);
}

/* A small JPEG whose frame header declares 4072x4072 (16.6 M pixels, under the default limit):
 * its few blocks of data end long before the image does. libjpeg would fill the rest and decode
 * it all (0.57 s with stb_image); with warnings as errors it stops at the end of the data. This
 * is tests/fuzz/image/regressions/jpeg_16m_pixels_truncated. */
static void test_jpeg_truncated_bomb(void)
{
    enum { SIDE = 16, CLAIMED = 4072, SOF_HEIGHT = 5, SOF_WIDTH = 7 };
    uint8_t *rgb = photo_rgb(SIDE, SIDE, 20);
    buffer b = encode_jpeg(rgb, SIDE, SIDE, TJPF_RGB, TJSAMP_420, 0);
    free(rgb);
    size_t sof = jpeg_marker_offset(&b, 0xc0);
    b.p[sof + SOF_HEIGHT] = CLAIMED >> 8;
    b.p[sof + SOF_HEIGHT + 1] = CLAIMED & 0xff;
    b.p[sof + SOF_WIDTH] = CLAIMED >> 8;
    b.p[sof + SOF_WIDTH + 1] = CLAIMED & 0xff;
    char err[ERR_LEN] = "";
    size_t n = (size_t)3 * 224 * 224;
    float *out = malloc(n * sizeof *out);
    for (int full = 0; full <= 1; full++) {
        double t0 = now_seconds();
        CHECK_INT(decode_jpeg_opts(&b, 3, 224, 224, MAX_PIXELS, full, out, err), SRV_BAD_REQUEST);
        CHECK(now_seconds() - t0 < BOMB_SECONDS);
        CHECK_STR(err, "cannot decode image: corrupt JPEG (Corrupt JPEG data: premature end of "
                       "data segment)");
    }
    free(out);
    free(b.p);
}

/* Malformed files get libjpeg's reason. Each of these made stb_image read stale memory or write
 * past its tables (tests/fuzz/image/regressions/jpeg_*). */
static void test_jpeg_refusals(void)
{
    char err[ERR_LEN] = "";
    float out[3 * 16 * 16];

    /* A DHT segment whose counts add up to 414 and which runs past the file. */
    static const uint8_t fuzz_dht[] = {
        0xff, 0xd8, 0xff, 0xc4, 0x01, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x00, 0x40, 0x00, 0x40, 0x03, 0x01, 0x11, 0x00,
        0xff, 0xff, 0x0c, 0xfc, 0xfb, 0xfe, 0xfd, 0xfc, 0xfe, 0x05,
    };
    CHECK_INT(
        image_to_tensor(fuzz_dht, sizeof fuzz_dht, NULL, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
        SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (Bogus Huffman table definition)");

    enum { SIDE = 16 };
    uint8_t *rgb = photo_rgb(SIDE, SIDE, 20);
    buffer real = encode_jpeg(rgb, SIDE, SIDE, TJPF_RGB, TJSAMP_444, 0);
    free(rgb);
    size_t sos = jpeg_marker_offset(&real, 0xda);

    /* The headers and no scan. */
    static const uint8_t eoi[] = {0xff, 0xd9};
    buffer headers = {0};
    buffer_append(&headers, real.p, (int)sos);
    buffer_append(&headers, (void *)eoi, (int)sizeof eoi);
    CHECK_INT(image_to_tensor(headers.p, headers.n, NULL, 3, SIDE, SIDE, MAX_PIXELS, out, err,
                              sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (Invalid JPEG file structure: missing SOS "
                   "marker)");
    free(headers.p);

    /* A scan that uses a Huffman table no DHT defines (component 2's DC table 0 -> 2). */
    buffer undefined = spliced(&real, 0, NULL, 0);
    enum { SOS_SECOND_TABLES = 8 };
    undefined.p[sos + SOS_SECOND_TABLES] = 0x21;
    CHECK_INT(image_to_tensor(undefined.p, undefined.n, NULL, 3, SIDE, SIDE, MAX_PIXELS, out, err,
                              sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (Huffman table 0x02 was not defined)");
    free(undefined.p);

    /* Cut in the middle of the scan. */
    CHECK_INT(
        image_to_tensor(real.p, sos + 20, NULL, 3, SIDE, SIDE, MAX_PIXELS, out, err, sizeof err),
        SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt JPEG (Premature end of JPEG file)");

    /* Bytes after EOI are ignored: the same pixels. */
    spec_preprocess pp = raw_pixels();
    float a[3 * SIDE * SIDE], b[3 * SIDE * SIDE];
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

/* Every scan passes over all the blocks of its components however few bytes it has, so the scans
 * are counted before decoding, as the 0xff 0xda pairs of the file: 64 decode, 65 are refused. */
static void test_jpeg_scan_limit(void)
{
    enum { SIDE = 16, LIMIT = 64 };
    uint8_t *rgb = photo_rgb(SIDE, SIDE, 20);
    buffer real = encode_jpeg(rgb, SIDE, SIDE, TJPF_RGB, TJSAMP_444, 0);
    free(rgb);
    char err[ERR_LEN] = "";
    float out[3 * SIDE * SIDE];
    for (int extra = LIMIT - 1; extra <= LIMIT; extra++) {
        buffer b = with_scan_markers(&real, extra);
        srv_status st =
            image_to_tensor(b.p, b.n, NULL, 3, SIDE, SIDE, MAX_PIXELS, out, err, sizeof err);
        CHECK_INT(st, extra < LIMIT ? SRV_OK : SRV_BAD_REQUEST);
        if (extra == LIMIT)
            CHECK_STR(err, "cannot decode image: the JPEG has 65 scans; at most 64 are supported");
        free(b.p);
    }
    free(real.p);
}

/* Colour conversions: a colour JPEG to a gray model gives its luma (JPEG's Y), within the
 * rounding of the two formulas; a CMYK (Adobe, inverted) JPEG converts as stb_image did. */
static void test_jpeg_colours(void)
{
    enum { SIDE = 16 };
    uint8_t rgb[SIDE * SIDE * 3], cmyk[SIDE * SIDE * 4];
    static const uint8_t colour[3] = {100, 150, 200}, ink[4] = {200, 100, 50, 220};
    for (int i = 0; i < SIDE * SIDE; i++) {
        memcpy(rgb + i * 3, colour, 3);
        memcpy(cmyk + i * 4, ink, 4);
    }
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();
    float out[3 * SIDE * SIDE];
    buffer b = encode_jpeg(rgb, SIDE, SIDE, TJPF_RGB, TJSAMP_444, 0);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 1, SIDE, SIDE, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    CHECK_NEAR(out[0], stb_luma(colour[0], colour[1], colour[2]), JPEG_TOLERANCE);
    free(b.p);

    b = encode_jpeg(cmyk, SIDE, SIDE, TJPF_CMYK, TJSAMP_444, 0);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 3, SIDE, SIDE, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    for (int c = 0; c < 3; c++)
        CHECK_NEAR(out[c * SIDE * SIDE], ink[c] * ink[3] / 255.0, JPEG_TOLERANCE);
    free(b.p);
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

/* Appends a PNG chunk (CRCs are not checked, so it is left zero). */
static void append_chunk(buffer *b, const char *type, const uint8_t *data, uint32_t n)
{
    uint8_t head[8];
    put_be32(head, n);
    memcpy(head + 4, type, 4);
    buffer_append(b, head, (int)sizeof head);
    buffer_append(b, (void *)data, (int)n);
    buffer_append(b, (uint8_t[4]){0}, 4);
}

/* An 8-bit palette PNG of w x 1 pixels with the given indices, its image data deflated as one
 * stored block. */
static buffer palette_png(const uint8_t *plte, uint32_t entries, const uint8_t *idx, uint32_t w)
{
    buffer b = {0};
    uint8_t hdr[64];
    size_t n = png_header(hdr, w, 1);
    hdr[8 + 8 + 9] = 3; /* colour type: palette */
    buffer_append(&b, hdr, (int)n);
    append_chunk(&b, "PLTE", plte, 3 * entries);
    uint8_t z[64];
    uint32_t raw = 1 + w; /* filter byte, then the indices */
    size_t k = 0;
    z[k++] = 0x78;
    z[k++] = 0x01;
    z[k++] = 0x01; /* final stored block */
    z[k++] = (uint8_t)raw;
    z[k++] = (uint8_t)(raw >> 8);
    z[k++] = (uint8_t)~raw;
    z[k++] = (uint8_t)(~raw >> 8);
    z[k++] = 0;
    memcpy(z + k, idx, w);
    k += w;
    uint32_t a = 1, s = 0;
    for (size_t i = k - raw; i < k; i++) {
        a = (a + z[i]) % 65521;
        s = (s + a) % 65521;
    }
    put_be32(z + k, s << 16 | a);
    k += 4;
    append_chunk(&b, "IDAT", z, (uint32_t)k);
    append_chunk(&b, "IEND", NULL, 0);
    return b;
}

/* stb_image decoded a palette index past PLTE from uninitialised memory. libspng keeps a
 * zeroed 256-entry palette, so such a pixel is black, every time (as libpng shows it). */
static void test_png_palette(void)
{
    static const uint8_t plte[] = {10, 20, 30, 200, 100, 50};
    static const uint8_t good[] = {0, 1, 1, 0}, past[] = {0, 1, 2, 255};
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();
    float out[3 * 4];
    buffer b = palette_png(plte, 2, good, 4);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 3, 1, 4, MAX_PIXELS, out, err, sizeof err), SRV_OK);
    for (int x = 0; x < 4; x++)
        for (int c = 0; c < 3; c++)
            CHECK_NEAR(out[c * 4 + x], plte[good[x] * 3 + c], 0);
    free(b.p);
    b = palette_png(plte, 2, past, 4);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 3, 1, 4, MAX_PIXELS, out, err, sizeof err), SRV_OK);
    for (int c = 0; c < 3; c++) {
        CHECK_NEAR(out[c * 4 + 1], plte[3 + c], 0);
        CHECK_NEAR(out[c * 4 + 2], 0, 0);
        CHECK_NEAR(out[c * 4 + 3], 0, 0);
    }
    free(b.p);
}

/* A chunk that declares more bytes than the file has is refused (stb_image would have allocated
 * for it first). libspng stops after the image data, so a PNG without its IEND chunk, or with
 * bytes after it, decodes to the same pixels. */
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
    CHECK_STR(err, "cannot decode image: corrupt PNG (end of stream)");

    buffer g = gradient_png();
    spec_preprocess pp = raw_pixels();
    float want[GRAD_H * GRAD_W];
    CHECK_INT(image_to_tensor(g.p, g.n, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, want, err, sizeof err),
              SRV_OK);
    CHECK_INT(image_to_tensor(g.p, g.n - sizeof iend, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, out, err,
                              sizeof err),
              SRV_OK);
    CHECK(memcmp(out, want, sizeof want) == 0);
    static const char trailer[] = "trailing bytes";
    buffer t = spliced(&g, g.n, trailer, sizeof trailer);
    CHECK_INT(image_to_tensor(t.p, t.n, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    CHECK(memcmp(out, want, sizeof want) == 0);
    free(t.p);
    /* Cut inside the image data: refused, never padded. */
    CHECK_INT(image_to_tensor(g.p, g.n - sizeof iend - 6, &pp, 1, GRAD_H, GRAD_W, MAX_PIXELS, out,
                              err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_CONTAINS(err, "cannot decode image: corrupt PNG (");
    free(g.p);
}

/* Big files: a 4.6 MB PNG of noise decodes (its image data is far above the 4 MB cap on inflated
 * text and ICC data); a zTXt chunk that inflates to 8 MB is held to that cap. */
static void test_png_sizes(void)
{
    enum { W = 1400, H = 1100, BOMB = 8 << 20 };
    char err[ERR_LEN] = "";
    uint8_t *rgb = malloc((size_t)W * H * 3);
    uint32_t seed = 12345;
    for (size_t i = 0; i < (size_t)W * H * 3; i++)
        rgb[i] = (uint8_t)xorshift32(&seed);
    buffer big = encode_png(W, H, 3, rgb);
    CHECK(big.n > (4u << 20));
    spec_preprocess pp = raw_pixels();
    float out[3];
    CHECK_INT(image_to_tensor(big.p, big.n, &pp, 3, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_OK);
    free(big.p);
    free(rgb);

    /* zTXt: keyword, NUL, compression method 0, then a zlib stream of 8 MB of zeros. */
    uint8_t *zeros = calloc(BOMB, 1);
    uLongf zlen = compressBound(BOMB);
    uint8_t *z = malloc(zlen);
    CHECK(zeros && z && compress2(z, &zlen, zeros, BOMB, Z_BEST_COMPRESSION) == Z_OK);
    free(zeros);
    buffer g = gradient_png();
    buffer text = {0};
    buffer_append(&text, "Comment\0\0", 9);
    buffer_append(&text, z, (int)zlen);
    free(z);
    buffer chunk = {0};
    append_chunk(&chunk, "zTXt", text.p, (uint32_t)text.n);
    buffer bomb = spliced(&g, 33, chunk.p, chunk.n); /* after the signature and IHDR */
    CHECK_INT(image_to_tensor(bomb.p, bomb.n, &pp, 1, 1, 1, MAX_PIXELS, out, err, sizeof err),
              SRV_TOO_LARGE);
    CHECK_STR(err, "the PNG's text or ICC chunks inflate to more than 4194304 bytes");
    free(bomb.p);
    free(chunk.p);
    free(text.p);
    free(g.p);
}

/* An 8-bit palette BMP (40-byte header) of w x |h| pixels, rows bottom-up for h > 0. */
static buffer palette_bmp(int32_t w, int32_t h, const uint8_t *bgr, int entries, const uint8_t *idx,
                          size_t nidx)
{
    enum { FILE_HEADER = 14, INFO_HEADER = 40 };
    uint8_t head[FILE_HEADER + INFO_HEADER] = {'B', 'M'};
    put_le32(head + 10, FILE_HEADER + INFO_HEADER + 4 * (uint32_t)entries);
    put_le32(head + 14, INFO_HEADER);
    put_le32(head + 18, (uint32_t)w);
    put_le32(head + 22, (uint32_t)h);
    head[26] = 1; /* planes */
    head[28] = 8; /* bits per pixel */
    buffer b = {0};
    buffer_append(&b, head, (int)sizeof head);
    for (int i = 0; i < entries; i++)
        buffer_append(&b, (uint8_t[4]){bgr[3 * i], bgr[3 * i + 1], bgr[3 * i + 2], 0}, 4);
    buffer_append(&b, (void *)idx, (int)nidx);
    return b;
}

/* stb_image keeps a BMP's palette in a stack array and fills only the entries the file has, so
 * an index past them read stale stack memory; and it read a short file's missing pixels as
 * zeros. Both are refused. A top-down BMP (negative height) decodes. */
static void test_bmp_checks(void)
{
    static const uint8_t bgr[] = {30, 20, 10, 50, 100, 200}; /* RGB (10,20,30), (200,100,50) */
    static const uint8_t rows[] = {0, 1, 1, 0, 1, 0, 0, 1};  /* 4x2, rows padded to 4 already */
    char err[ERR_LEN] = "";
    spec_preprocess pp = raw_pixels();
    float out[3 * 8];

    buffer b = palette_bmp(4, -2, bgr, 2, rows, sizeof rows);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 3, 2, 4, MAX_PIXELS, out, err, sizeof err), SRV_OK);
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(out[i], bgr[rows[i] * 3 + 2], 0); /* red plane, top row first */
    free(b.p);

    uint8_t bad[sizeof rows];
    memcpy(bad, rows, sizeof rows);
    bad[6] = 2;
    b = palette_bmp(4, 2, bgr, 2, bad, sizeof bad);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 3, 2, 4, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: the BMP pixel at (2, 1) uses palette entry 2 of 2");
    free(b.p);

    b = palette_bmp(4, 2, bgr, 2, rows, sizeof rows - 1);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 3, 2, 4, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: the BMP pixel data is 7 bytes, expected 8");
    free(b.p);

    /* An offset pointing into the headers makes stb's palette size negative: it then read no
     * palette at all. */
    b = palette_bmp(4, 2, bgr, 2, rows, sizeof rows);
    put_le32(b.p + 10, 20);
    CHECK_INT(image_to_tensor(b.p, b.n, &pp, 3, 2, 4, MAX_PIXELS, out, err, sizeof err),
              SRV_BAD_REQUEST);
    CHECK_STR(err, "cannot decode image: corrupt BMP (bad pixel data offset)");
    free(b.p);
}

int main(void)
{
    test_resize_matches_torch();
    test_channel_conversion();
    test_normalisation();
    test_formats();
    test_jpeg_scaled_vs_full();
    test_jpeg_scale_choice();
    test_jpeg_limits();
    test_jpeg_truncated_bomb();
    test_jpeg_refusals();
    test_jpeg_scan_limit();
    test_jpeg_colours();
    test_pnm_16bit();
    test_unsupported_types();
    test_truncated();
    test_garbage_and_empty();
    test_limits();
    test_png_chunk_lengths();
    test_png_palette();
    test_png_sizes();
    test_bmp_checks();
    return check_report("image");
}
