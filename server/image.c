/* image.c - decodes an uploaded image with stb_image and turns it into a normalised CHW tensor. */
#include "image.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Debian's libstb is a compiled library: the header is included for declarations only, without
 * STB_IMAGE_IMPLEMENTATION (engine-notes section 4). */
#include <stb_image.h>

enum {
    GRAY_CHANNELS = 1,
    RGB_CHANNELS = 3,
    PIXEL_MAX = 255,
};

/* Without a preprocess block a model sees pixels in [0, 1], as with torchvision's ToTensor. */
#define DEFAULT_PIXEL_SCALE (1.0 / 255.0)

/* Where a PNG file keeps its size: an 8-byte signature, then the IHDR chunk's 4-byte length,
 * 4-byte type, and big-endian 4-byte width and height. */
enum {
    PNG_TYPE_OFFSET = 12,
    PNG_WIDTH_OFFSET = 16,
    PNG_HEIGHT_OFFSET = 20,
    PNG_IHDR_SIZE_END = 24,
};
static const uint8_t png_signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

enum {
    PNM_MAX_8BIT = 255,      /* the largest PNM sample value stored in one byte; above, two */
    PNM_VALUE_CAP = 1 << 20, /* where a header number stops growing (only "above 255" matters) */
};

/* JPEG markers and limits as stb_image 2.27 knows them. */
enum {
    JPEG_MARKER = 0xff,
    JPEG_SOI = 0xd8,
    JPEG_EOI = 0xd9,
    JPEG_SOF_BASELINE = 0xc0,
    JPEG_SOF_EXTENDED = 0xc1,
    JPEG_SOF_PROGRESSIVE = 0xc2,
    JPEG_SOS = 0xda,
    JPEG_RST_FIRST = 0xd0,
    JPEG_RST_LAST = 0xd7,
    JPEG_MAX_COMPONENTS = 4,
    JPEG_SOF_NCOMP = 7, /* offsets inside a segment, counted from its length field */
    JPEG_SOF_COMPONENTS = 8,
    JPEG_SOS_NCOMP = 2,
    JPEG_SOS_COMPONENTS = 3,
    JPEG_SOS_TAIL = 3, /* Ss, Se, Ah/Al after the scan's components */
};

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The size a PNG's IHDR declares. stb_image's PNG header reader refuses very large sizes itself
 * ((1 << 30) / width / channels < height) and the reason is then overwritten by "unknown image
 * type" as the other readers are tried, so without this such a file would read as garbage (400)
 * rather than as too large (413). */
static bool png_declared_size(const uint8_t *buf, size_t len, int64_t *w, int64_t *h)
{
    if (len < PNG_IHDR_SIZE_END || memcmp(buf, png_signature, sizeof png_signature) != 0 ||
        memcmp(buf + PNG_TYPE_OFFSET, "IHDR", 4) != 0)
        return false;
    *w = read_be32(buf + PNG_WIDTH_OFFSET);
    *h = read_be32(buf + PNG_HEIGHT_OFFSET);
    return true;
}

/* A PNM header reader that consumes exactly what stb_image 2.27's stbi__pnm_info does, quirks
 * included: `c` is the byte last read, and a read at the end yields 0. */
typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    char c;
} pnm_reader;

static bool pnm_at_end(const pnm_reader *r)
{
    return r->pos >= r->len;
}

static void pnm_next(pnm_reader *r)
{
    r->c = pnm_at_end(r) ? 0 : (char)r->buf[r->pos++];
}

static bool pnm_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static void pnm_skip_space(pnm_reader *r)
{
    for (;;) {
        while (!pnm_at_end(r) && pnm_is_space(r->c))
            pnm_next(r);
        if (pnm_at_end(r) || r->c != '#')
            break;
        while (!pnm_at_end(r) && r->c != '\n' && r->c != '\r')
            pnm_next(r);
    }
}

/* Reads digits; the value saturates, since only "above 255" matters to the caller. */
static int64_t pnm_integer(pnm_reader *r)
{
    int64_t v = 0;
    while (!pnm_at_end(r) && r->c >= '0' && r->c <= '9') {
        if (v < PNM_VALUE_CAP)
            v = v * 10 + (r->c - '0');
        pnm_next(r);
    }
    return v;
}

/* stb_image 2.27 does not check the length of a binary PNM's pixel data (stbi__pnm_load ignores
 * stbi__getn's result) and returns its uninitialised buffer for a short file, which would feed
 * stale heap bytes to the model. So the data length is checked here, with the header read exactly
 * as stb reads it. Other formats are left to stb: they fail or read zeros past the end. */
static srv_status check_pnm_length(const uint8_t *buf, size_t len, int w, int h, char *err,
                                   size_t errlen)
{
    if (len < 2 || buf[0] != 'P' || (buf[1] != '5' && buf[1] != '6'))
        return SRV_OK;
    int64_t comp = buf[1] == '6' ? RGB_CHANNELS : GRAY_CHANNELS;
    pnm_reader r = {.buf = buf, .len = len, .pos = 2};
    pnm_next(&r);
    pnm_skip_space(&r);
    (void)pnm_integer(&r); /* width, already known from stbi_info */
    pnm_skip_space(&r);
    (void)pnm_integer(&r); /* height */
    pnm_skip_space(&r);
    int64_t maxv = pnm_integer(&r);
    int64_t need = (int64_t)w * h * comp * (maxv > PNM_MAX_8BIT ? 2 : 1);
    int64_t have = (int64_t)(len - r.pos);
    if (have < need)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: the PNM pixel data is %lld bytes, expected %lld",
                        (long long)have, (long long)need);
    return SRV_OK;
}

typedef enum { JPEG_DEFER, JPEG_COVERED, JPEG_UNCOVERED } jpeg_verdict;

static bool jpeg_is_rst(uint8_t m)
{
    return m >= JPEG_RST_FIRST && m <= JPEG_RST_LAST;
}

/* Whether every colour component of a JPEG frame is coded by some scan. stb_image 2.27 allocates
 * its sample (baseline) and coefficient (progressive) buffers uninitialised and fills them only
 * while decoding scans, so a file whose frame header is followed by no scan, or by scans that
 * leave a component out, "decodes" to stale heap bytes. A progressive component counts as coded
 * once a first DC scan (Ss = 0, Ah = 0) has covered it: that is where stb zeroes each block.
 * Walks the marker segments as stb does; anything it cannot follow (truncation, a second frame,
 * odd markers) is left to stb, which fails on all of those. */
static jpeg_verdict jpeg_scan_coverage(const uint8_t *buf, size_t len, int *missing_id)
{
    uint8_t ids[JPEG_MAX_COMPONENTS];
    bool coded[JPEG_MAX_COMPONENTS] = {false};
    int ncomp = 0;
    bool progressive = false;

    if (len < 2 || buf[0] != JPEG_MARKER || buf[1] != JPEG_SOI)
        return JPEG_DEFER;
    size_t pos = 2;
    for (;;) {
        if (pos >= len || buf[pos] != JPEG_MARKER)
            return JPEG_DEFER;
        while (pos < len && buf[pos] == JPEG_MARKER)
            pos++;
        if (pos >= len)
            return JPEG_DEFER;
        uint8_t m = buf[pos++];
        if (m == JPEG_EOI)
            break;
        if (len - pos < 2)
            return JPEG_DEFER;
        size_t seg = (size_t)buf[pos] << 8 | buf[pos + 1];
        if (seg < 2 || len - pos < seg)
            return JPEG_DEFER;
        const uint8_t *s = buf + pos;
        pos += seg;

        if (m == JPEG_SOF_BASELINE || m == JPEG_SOF_EXTENDED || m == JPEG_SOF_PROGRESSIVE) {
            if (ncomp > 0 || seg <= JPEG_SOF_NCOMP)
                return JPEG_DEFER;
            ncomp = s[JPEG_SOF_NCOMP];
            if (ncomp < 1 || ncomp > JPEG_MAX_COMPONENTS ||
                seg < JPEG_SOF_COMPONENTS + 3 * (size_t)ncomp)
                return JPEG_DEFER;
            for (int i = 0; i < ncomp; i++)
                ids[i] = s[JPEG_SOF_COMPONENTS + 3 * i];
            progressive = m == JPEG_SOF_PROGRESSIVE;
        } else if (m == JPEG_SOS) {
            if (ncomp == 0 || seg <= JPEG_SOS_NCOMP)
                return JPEG_DEFER;
            int ns = s[JPEG_SOS_NCOMP];
            if (ns < 1 || ns > JPEG_MAX_COMPONENTS ||
                seg < JPEG_SOS_COMPONENTS + 2 * (size_t)ns + JPEG_SOS_TAIL)
                return JPEG_DEFER;
            const uint8_t *tail = s + JPEG_SOS_COMPONENTS + 2 * ns;
            bool first_dc = tail[0] == 0 && (tail[2] >> 4) == 0;
            if (!progressive || first_dc)
                for (int k = 0; k < ns; k++)
                    for (int i = 0; i < ncomp; i++)
                        if (ids[i] == s[JPEG_SOS_COMPONENTS + 2 * k])
                            coded[i] = true;
            /* The entropy-coded data runs to the next marker other than a stuffed 0xff00 or a
             * restart marker. */
            while (pos + 1 < len &&
                   !(buf[pos] == JPEG_MARKER && buf[pos + 1] != 0 && !jpeg_is_rst(buf[pos + 1])))
                pos++;
        }
    }
    if (ncomp == 0)
        return JPEG_DEFER;
    for (int i = 0; i < ncomp; i++) {
        if (!coded[i]) {
            *missing_id = ids[i];
            return JPEG_UNCOVERED;
        }
    }
    return JPEG_COVERED;
}

/* One output coordinate's two source neighbours and their weights along one axis. */
typedef struct {
    int i0, i1;
    float l0, l1;
} axis_sample;

/* Mirrors PyTorch's upsample_bilinear2d on CPU for align_corners=False and a given output size
 * (area_pixel_compute_source_index and compute_source_index_and_lambda in UpSample.h): the scale
 * is the float ratio in/out, the source index is clamped at 0 below, and the upper neighbour is
 * clamped to the last pixel. The arithmetic is float, as PyTorch's is for float tensors, so the
 * results agree with it to rounding. */
static axis_sample axis_sample_at(int64_t dst, int64_t in_size, int64_t out_size)
{
    axis_sample s;
    if (in_size == out_size) {
        s.i0 = s.i1 = (int)dst;
        s.l0 = 1.0f;
        s.l1 = 0.0f;
        return s;
    }
    float ratio = (float)in_size / (float)out_size;
    float src = ratio * ((float)dst + 0.5f) - 0.5f;
    if (src < 0.0f)
        src = 0.0f;
    s.i0 = (int)src;
    s.i1 = s.i0 < in_size - 1 ? s.i0 + 1 : s.i0;
    s.l1 = src - (float)s.i0;
    s.l0 = 1.0f - s.l1;
    return s;
}

/* The pixel value of channel c at output position (oy, ox), resized from the decoded in_w x in_h
 * interleaved image; an identity copy when the sizes already match. */
static float resized_pixel(const stbi_uc *pix, int in_w, int in_h, int channels, int c, int64_t oy,
                           int64_t ox, int64_t out_h, int64_t out_w)
{
    if (in_h == out_h && in_w == out_w)
        return (float)pix[((size_t)oy * (size_t)in_w + (size_t)ox) * (size_t)channels + (size_t)c];

    axis_sample sy = axis_sample_at(oy, in_h, out_h);
    axis_sample sx = axis_sample_at(ox, in_w, out_w);
    size_t row0 = (size_t)sy.i0 * (size_t)in_w, row1 = (size_t)sy.i1 * (size_t)in_w;
    size_t ch = (size_t)channels;
    float p00 = pix[(row0 + (size_t)sx.i0) * ch + (size_t)c];
    float p01 = pix[(row0 + (size_t)sx.i1) * ch + (size_t)c];
    float p10 = pix[(row1 + (size_t)sx.i0) * ch + (size_t)c];
    float p11 = pix[(row1 + (size_t)sx.i1) * ch + (size_t)c];
    return sy.l0 * (sx.l0 * p00 + sx.l1 * p01) + sy.l1 * (sx.l0 * p10 + sx.l1 * p11);
}

srv_status image_to_tensor(const uint8_t *buf, size_t len, const spec_preprocess *pp, int channels,
                           int64_t height, int64_t width, int64_t max_pixels, float *out, char *err,
                           size_t errlen)
{
    stbi_uc *pix = NULL;
    srv_status st = SRV_OK;

    /* These come from the server's own model table, not from the client: a wrong value is a
     * server bug, reported as a 500 rather than decoded into a wrongly sized buffer. */
    if (channels != GRAY_CHANNELS && channels != RGB_CHANNELS)
        return srv_fail(err, errlen, SRV_INTERNAL,
                        "image_to_tensor: channels must be 1 or 3, got %d", channels);
    if (height <= 0 || width <= 0 || height > INT_MAX || width > INT_MAX || !out)
        return srv_fail(err, errlen, SRV_INTERNAL, "image_to_tensor: invalid output size %lldx%lld",
                        (long long)width, (long long)height);

    if (!buf || len == 0)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: the body is empty");
    /* stb_image takes the length as an int. */
    if (len > INT_MAX)
        return srv_fail(err, errlen, SRV_TOO_LARGE,
                        "image is %zu bytes; images over %d bytes are not supported", len, INT_MAX);

    /* Read only the header first, so that a small file declaring a huge image is refused before
     * stb_image allocates the decoded pixels. */
    int w = 0, h = 0, file_channels = 0;
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &file_channels)) {
        const char *reason = stbi_failure_reason();
        int64_t pw, ph;
        /* Each side is below 2^32, so the product fits in 64 unsigned bits. */
        if (png_declared_size(buf, len, &pw, &ph) && pw > 0 && ph > max_pixels / pw)
            return srv_fail(err, errlen, SRV_TOO_LARGE,
                            "image is %lldx%lld = %llu pixels; the limit is %lld", (long long)pw,
                            (long long)ph, (unsigned long long)pw * (unsigned long long)ph,
                            (long long)max_pixels);
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: %s",
                        reason ? reason : "unknown error");
    }
    if (w <= 0 || h <= 0)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: its size is %dx%d", w,
                        h);
    int64_t pixels = (int64_t)w * (int64_t)h;
    if (pixels > max_pixels)
        return srv_fail(err, errlen, SRV_TOO_LARGE,
                        "image is %dx%d = %lld pixels; the limit is %lld", w, h, (long long)pixels,
                        (long long)max_pixels);

    st = check_pnm_length(buf, len, w, h, err, errlen);
    if (st != SRV_OK)
        return st;
    int missing_id = 0;
    if (jpeg_scan_coverage(buf, len, &missing_id) == JPEG_UNCOVERED)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: JPEG component %d is not coded by any scan",
                        missing_id);

    /* stb converts gray <-> RGB itself (its own luma weights) and drops alpha; a GIF gives its
     * first frame. */
    int dw = 0, dh = 0;
    pix = stbi_load_from_memory(buf, (int)len, &dw, &dh, &file_channels, channels);
    if (!pix) {
        const char *reason = stbi_failure_reason();
        st = srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: %s",
                      reason ? reason : "unknown error");
        goto fail;
    }
    /* The limit was checked on the header's size; the decoder must not have produced another. */
    if (dw != w || dh != h) {
        st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                      "cannot decode image: decoded size %dx%d differs from its header's %dx%d", dw,
                      dh, w, h);
        goto fail;
    }

    bool present = pp && pp->present;
    double scale = present ? pp->scale : DEFAULT_PIXEL_SCALE;
    bool invert = present && pp->invert;
    size_t plane = (size_t)height * (size_t)width;
    for (int c = 0; c < channels; c++) {
        double mean = present ? pp->mean[c] : 0.0;
        double std = present ? pp->std[c] : 1.0;
        float *dst = out + (size_t)c * plane;
        for (int64_t y = 0; y < height; y++) {
            for (int64_t x = 0; x < width; x++) {
                double p = resized_pixel(pix, dw, dh, channels, c, y, x, height, width);
                if (invert)
                    p = PIXEL_MAX - p;
                dst[(size_t)y * (size_t)width + (size_t)x] = (float)((p * scale - mean) / std);
            }
        }
    }

fail:
    stbi_image_free(pix);
    return st;
}
