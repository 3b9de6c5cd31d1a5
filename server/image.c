/* image.c - decodes an uploaded image (libjpeg-turbo, libspng, stb_image) into a normalised CHW
 * tensor. */
#include "image.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <spng.h>
/* Debian's libstb is a compiled library: the header is included for declarations only, without
 * STB_IMAGE_IMPLEMENTATION (engine-notes section 4). */
#include <stb_image.h>
#include <turbojpeg.h>

enum {
    GRAY_CHANNELS = 1,
    RGB_CHANNELS = 3,
    CMYK_CHANNELS = 4,
    PIXEL_MAX = 255,
};

/* Without a preprocess block a model sees pixels in [0, 1], as with torchvision's ToTensor. */
#define DEFAULT_PIXEL_SCALE (1.0 / 255.0)

/* stb_image's luma weights (stbi__compute_y), used for every format so that a gray model sees
 * the same value whichever decoder ran: (77 r + 150 g + 29 b) >> 8. */
enum {
    LUMA_R = 77,
    LUMA_G = 150,
    LUMA_B = 29,
    LUMA_SHIFT = 8,
};

/* The formats the API promises, recognised by their first bytes before any decoder runs. */
typedef enum {
    IMAGE_UNSUPPORTED,
    IMAGE_PNG,
    IMAGE_JPEG,
    IMAGE_BMP,
    IMAGE_GIF,
    IMAGE_PNM,
} image_type;

static const uint8_t png_signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const uint8_t bmp_magic[] = {'B', 'M'};
static const uint8_t gif87_magic[] = {'G', 'I', 'F', '8', '7', 'a'};
static const uint8_t gif89_magic[] = {'G', 'I', 'F', '8', '9', 'a'};

/* Where a PNG file keeps its size: an 8-byte signature, then the IHDR chunk's 4-byte length,
 * 4-byte type, and big-endian 4-byte width and height. */
enum {
    PNG_TYPE_OFFSET = 12,
    PNG_WIDTH_OFFSET = 16,
    PNG_HEIGHT_OFFSET = 20,
    PNG_IHDR_SIZE_END = 24,
};

/* libspng keeps ancillary chunks (text, ICC profiles), some of them inflated, in a cache: this
 * bounds what one file can make it hold and inflate, well above any real profile or comment.
 * (libspng 0.7's chunk size limit applies to inflated ancillary data only, not to image data.) */
#define PNG_CHUNK_CACHE_LIMIT ((size_t)4 << 20)

/* JPEG markers this file looks for. */
enum {
    JPEG_MARKER = 0xff,
    JPEG_SOI = 0xd8,
    JPEG_SOS = 0xda,
    JPEG_SOF_FIRST = 0xc0, /* SOF0..SOF15, except the three codes below */
    JPEG_SOF_LAST = 0xcf,
    JPEG_DHT = 0xc4,
    JPEG_JPG = 0xc8,
    JPEG_DAC = 0xcc,
    JPEG_SOF_PROGRESSIVE = 0xc2, /* and 0xc6, 0xca, 0xce: the progressive frame types */
    JPEG_SOF_PROGRESSIVE_MASK = 0xf3,
    JPEG_RST_FIRST = 0xd0,
    JPEG_RST_LAST = 0xd7,
    JPEG_TEM = 0x01,
    JPEG_LENGTH_SIZE = 2,
    JPEG_SOF_HEIGHT = 3, /* in a frame header, after its length and sample precision */
    JPEG_SOF_WIDTH = 5,
    JPEG_SOF_SIZE_END = 7,
    /* Every scan passes over all the blocks of its components, even one of a few bytes (a
     * progressive AC scan codes "all blocks empty" in one end-of-band run), so a small file of
     * many scans costs as much as many large images. libjpeg's default progressive script has
     * 10 scans (TurboJPEG's own limit, TJFLAG_LIMITSCANS, is 500, also set below). */
    JPEG_MAX_SCANS = 64,
    /* For the same reason a progressive JPEG's scans times its pixels may be at most this many
     * times the pixel limit. Its AC scans can code "no coefficient here" for 32767 blocks in 15
     * bits, so a 16-megapixel one with 64 scans takes 35 kB and a quarter of a second to decode
     * at 1/8; this bound keeps such a file near 70 ms. A 12-megapixel progressive photo of
     * libjpeg's 10 scans uses 120 M of the 268 M allowed by default. (A sequential JPEG codes
     * every block of every scan in at least 2 bits, so its work follows its size.) */
    JPEG_SCAN_BUDGET = 16,
    JPEG_SCALE_DENOM = 8, /* libjpeg-turbo scales in eighths, from 1/8 to 8/8 */
};

/* BMP headers as stb_image 2.27 reads them (stbi__bmp_parse_header, stbi__bmp_load). */
enum {
    BMP_FILE_HEADER = 14,
    BMP_OFFSET_AT = 10,
    BMP_HSZ_AT = 14,
    BMP_CORE_HEADER = 12, /* OS/2 1.x: 16-bit width and height */
    BMP_CORE_PSIZE_BASE = 24,
    BMP_WIDTH_AT = 18,
    BMP_CORE_HEIGHT_AT = 20,
    BMP_CORE_BPP_AT = 24,
    BMP_HEIGHT_AT = 22,
    BMP_BPP_AT = 28,
    BMP_COMPRESS_AT = 30,
    BMP_RGB = 0,
    BMP_BITFIELDS = 3,
    BMP_V3_HEADER = 40,
    BMP_V3_ALPHA_HEADER = 56,
    BMP_V4_HEADER = 108,
    BMP_V5_HEADER = 124,
    BMP_MAX_PALETTE = 256,
    BMP_ROW_ALIGN = 4,
};

enum {
    PNM_MAX_8BIT = 255, /* the largest PNM sample value stored in one byte; above, two */
    /* Where a header number stops growing. stb_image sums the digits into an int without an
     * overflow check (undefined behaviour past INT_MAX), so a number this large is refused
     * before stb reads it; stb refuses sides above 2^24 (STBI_MAX_DIMENSIONS) anyway. */
    PNM_VALUE_CAP = 1 << 24,
};

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static size_t read_be16(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

static uint32_t read_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t read_le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static bool starts_with(const uint8_t *buf, size_t len, const uint8_t *magic, size_t n)
{
    return len >= n && memcmp(buf, magic, n) == 0;
}

/* Only the five promised formats reach a decoder. stb_image also decodes PSD, PIC, HDR and TGA,
 * trying each when the earlier readers decline a file, and those decoders are attack surface the
 * API never needed. None of stb's other readers accepts a file starting with the BMP, GIF or PNM
 * magic: PSD needs "8BPS", PIC 0x53 0x80, HDR "#?", TGA a second byte (its colour map type) of 0
 * or 1. So a file that passes is decoded, or refused, by the reader its magic names. */
static image_type image_type_of(const uint8_t *buf, size_t len)
{
    if (starts_with(buf, len, png_signature, sizeof png_signature))
        return IMAGE_PNG;
    if (len >= 2 && buf[0] == JPEG_MARKER && buf[1] == JPEG_SOI)
        return IMAGE_JPEG;
    if (starts_with(buf, len, bmp_magic, sizeof bmp_magic))
        return IMAGE_BMP;
    if (starts_with(buf, len, gif87_magic, sizeof gif87_magic) ||
        starts_with(buf, len, gif89_magic, sizeof gif89_magic))
        return IMAGE_GIF;
    if (len >= 2 && buf[0] == 'P' && (buf[1] == '5' || buf[1] == '6'))
        return IMAGE_PNM;
    return IMAGE_UNSUPPORTED;
}

/* The decoded image: w x h pixels of `channels` interleaved bytes, owned here. */
typedef struct {
    uint8_t *pix;
    int w, h;
    bool stb; /* allocated by stb_image (freed with stbi_image_free) */
} decoded;

static void decoded_free(decoded *d)
{
    if (d->stb)
        stbi_image_free(d->pix);
    else
        free(d->pix);
    d->pix = NULL;
}

static srv_status too_large(char *err, size_t errlen, int64_t w, int64_t h, int64_t max_pixels)
{
    return srv_fail(err, errlen, SRV_TOO_LARGE,
                    "image is %lldx%lld = %lld pixels; the limit is %lld", (long long)w,
                    (long long)h, (long long)(w * h), (long long)max_pixels);
}

static srv_status out_of_memory(char *err, size_t errlen)
{
    return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory while decoding the image");
}

static uint8_t luma(const uint8_t *rgb)
{
    return (uint8_t)((rgb[0] * LUMA_R + rgb[1] * LUMA_G + rgb[2] * LUMA_B) >> LUMA_SHIFT);
}

/* Turns n RGB pixels into gray in place (the output trails the input). */
static void rgb_to_gray(uint8_t *pix, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pix[i] = luma(pix + i * RGB_CHANNELS);
}

/* ---- JPEG: libjpeg-turbo ------------------------------------------------------------------- */

/* What a JPEG's frame header declares. */
typedef struct {
    int width, height;
    bool progressive;
} jpeg_frame;

/* Reads the first frame header (SOFn): segments before it carry their lengths, so they can be
 * stepped over without reading entropy-coded data. This runs before libjpeg, so that a file whose
 * header declares too many pixels is refused (413) even when libjpeg would refuse it for another
 * reason first. Returns false when the walk cannot reach a frame header; libjpeg, which reads the
 * same structure (and with TJFLAG_STOPONWARNING refuses the stray bytes it would otherwise
 * skip), then fails too. */
static bool jpeg_read_frame(const uint8_t *buf, size_t len, jpeg_frame *f)
{
    size_t pos = 2; /* after SOI */
    for (;;) {
        if (pos >= len || buf[pos] != JPEG_MARKER)
            return false;
        while (pos < len && buf[pos] == JPEG_MARKER)
            pos++;
        if (pos >= len)
            return false;
        int m = buf[pos++];
        if (m >= JPEG_SOF_FIRST && m <= JPEG_SOF_LAST && m != JPEG_DHT && m != JPEG_JPG &&
            m != JPEG_DAC) {
            if (len - pos < JPEG_SOF_SIZE_END)
                return false;
            f->height = (int)read_be16(buf + pos + JPEG_SOF_HEIGHT);
            f->width = (int)read_be16(buf + pos + JPEG_SOF_WIDTH);
            f->progressive = (m & JPEG_SOF_PROGRESSIVE_MASK) == JPEG_SOF_PROGRESSIVE;
            return true;
        }
        if ((m >= JPEG_RST_FIRST && m <= JPEG_RST_LAST) || m == JPEG_TEM)
            continue; /* markers without a segment */
        if (m == JPEG_SOS || len - pos < JPEG_LENGTH_SIZE)
            return false;
        pos += read_be16(buf + pos);
    }
}

/* How many scans a JPEG can have, at most: every SOS marker is the bytes 0xff 0xda, and those
 * bytes mean nothing else in entropy-coded data (where 0xff is followed by 0x00 or a marker). They
 * may occur inside a segment's payload too (a thumbnail in EXIF data), so this may count more,
 * never fewer. */
static size_t jpeg_count_scans(const uint8_t *buf, size_t len)
{
    size_t n = 0;
    for (const uint8_t *p = buf; (p = memchr(p, JPEG_MARKER, len - (size_t)(p - buf)));) {
        p++;
        if (p < buf + len && *p == JPEG_SOS)
            n++;
    }
    return n;
}

/* The numerator (over 8) of the smallest DCT scale whose output still covers out_w x out_h, or 8
 * when the image is smaller than that. TJSCALED rounds up, as libjpeg sizes its output. */
static int jpeg_scale_for(int w, int h, int64_t out_w, int64_t out_h)
{
    for (int num = 1; num < JPEG_SCALE_DENOM; num++) {
        tjscalingfactor sf = {num, JPEG_SCALE_DENOM};
        if (TJSCALED(w, sf) >= out_w && TJSCALED(h, sf) >= out_h)
            return num;
    }
    return JPEG_SCALE_DENOM;
}

/* Adobe CMYK as libjpeg returns it (inverted: 255 is no ink) to RGB, as stb_image 2.27 did:
 * r = c * k / 255 with its rounding (stbi__blinn_8x8). */
static uint8_t blinn(uint8_t x, uint8_t y)
{
    unsigned t = (unsigned)x * y + 128;
    return (uint8_t)((t + (t >> 8)) >> 8);
}

static void cmyk_to_channels(uint8_t *pix, size_t n, int channels)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = pix + i * CMYK_CHANNELS;
        uint8_t rgb[RGB_CHANNELS] = {blinn(s[0], s[3]), blinn(s[1], s[3]), blinn(s[2], s[3])};
        if (channels == GRAY_CHANNELS)
            pix[i] = luma(rgb);
        else
            memcpy(pix + i * RGB_CHANNELS, rgb, sizeof rgb);
    }
}

static srv_status jpeg_error(tjhandle tj, char *err, size_t errlen)
{
    return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: corrupt JPEG (%s)",
                    tjGetErrorStr2(tj));
}

/* Decodes at the smallest DCT scale that still covers the output (PIL's draft mode does the
 * same), so a 12-megapixel photo for a 28x28 model decodes 1/64 of its pixels. Warnings are
 * errors (TJFLAG_STOPONWARNING): libjpeg would otherwise decode a truncated file by filling its
 * missing blocks, so a few hundred bytes declaring a huge image would cost a full decode. */
static srv_status decode_jpeg(const uint8_t *buf, size_t len, int channels, int64_t out_h,
                              int64_t out_w, const image_options *opts, decoded *d, char *err,
                              size_t errlen)
{
    srv_status st = SRV_OK;
    tjhandle tj = tjInitDecompress();
    if (!tj)
        return out_of_memory(err, errlen);

    jpeg_frame f = {0};
    int hw = 0, hh = 0, subsamp = 0, colorspace = 0;
    if (!jpeg_read_frame(buf, len, &f)) {
        /* libjpeg's reason is the more precise one. */
        if (tjDecompressHeader3(tj, buf, (unsigned long)len, &hw, &hh, &subsamp, &colorspace))
            st = jpeg_error(tj, err, errlen);
        else
            st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                          "cannot decode image: corrupt JPEG (no frame header after its tables)");
        goto done;
    }
    int w = f.width, h = f.height;
    /* libjpeg holds a progressive image's coefficients whole, 2 bytes a sample, at any scale. */
    if (f.progressive && (int64_t)w * h > opts->max_pixels) {
        st = srv_fail(err, errlen, SRV_TOO_LARGE,
                      "progressive JPEG is %dx%d = %lld pixels; the limit is %lld (progressive "
                      "JPEGs are held whole in memory)",
                      w, h, (long long)w * h, (long long)opts->max_pixels);
        goto done;
    }
    int num = opts->jpeg_full_size ? JPEG_SCALE_DENOM : jpeg_scale_for(w, h, out_w, out_h);
    tjscalingfactor sf = {num, JPEG_SCALE_DENOM};
    int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
    if ((int64_t)sw * sh > opts->max_pixels) {
        if (num == JPEG_SCALE_DENOM)
            st = too_large(err, errlen, w, h, opts->max_pixels);
        else
            st = srv_fail(err, errlen, SRV_TOO_LARGE,
                          "image is %dx%d, decoded at %d/%d as %dx%d = %lld pixels; the limit is "
                          "%lld",
                          w, h, num, JPEG_SCALE_DENOM, sw, sh, (long long)sw * sh,
                          (long long)opts->max_pixels);
        goto done;
    }
    size_t scans = jpeg_count_scans(buf, len);
    if (scans > JPEG_MAX_SCANS) {
        st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                      "cannot decode image: the JPEG has %zu scans; at most %d are supported",
                      scans, JPEG_MAX_SCANS);
        goto done;
    }
    if (f.progressive && (int64_t)scans * w * h > JPEG_SCAN_BUDGET * opts->max_pixels) {
        st = srv_fail(err, errlen, SRV_TOO_LARGE,
                      "the progressive JPEG's %zu scans over its %dx%d pixels are too much work: "
                      "scans x pixels may be at most %d x the pixel limit (%lld)",
                      scans, w, h, JPEG_SCAN_BUDGET, (long long)opts->max_pixels);
        goto done;
    }

    if (tjDecompressHeader3(tj, buf, (unsigned long)len, &hw, &hh, &subsamp, &colorspace) != 0) {
        st = jpeg_error(tj, err, errlen);
        goto done;
    }
    /* libjpeg reads the same frame header; a DNL segment could only make it differ, and
     * libjpeg-turbo does not support those. */
    if (hw != w || hh != h || w <= 0 || h <= 0) {
        st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                      "cannot decode image: corrupt JPEG (its size is %dx%d)", hw, hh);
        goto done;
    }

    bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
    int pf = cmyk ? TJPF_CMYK : channels == GRAY_CHANNELS ? TJPF_GRAY : TJPF_RGB;
    d->pix = malloc((size_t)sw * (size_t)sh * (size_t)tjPixelSize[pf]);
    if (!d->pix) {
        st = out_of_memory(err, errlen);
        goto done;
    }
    if (tjDecompress2(tj, buf, (unsigned long)len, d->pix, sw, 0, sh, pf,
                      TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
        st = jpeg_error(tj, err, errlen);
        goto done;
    }
    if (cmyk)
        cmyk_to_channels(d->pix, (size_t)sw * (size_t)sh, channels);
    d->w = sw;
    d->h = sh;

done:
    if (st != SRV_OK)
        decoded_free(d);
    tjDestroy(tj);
    return st;
}

/* ---- PNG: libspng --------------------------------------------------------------------------- */

/* The size a PNG's IHDR declares, for a 413 when libspng refuses the header as too large. */
static bool png_declared_size(const uint8_t *buf, size_t len, int64_t *w, int64_t *h)
{
    if (len < PNG_IHDR_SIZE_END || memcmp(buf + PNG_TYPE_OFFSET, "IHDR", 4) != 0)
        return false;
    *w = read_be32(buf + PNG_WIDTH_OFFSET);
    *h = read_be32(buf + PNG_HEIGHT_OFFSET);
    return true;
}

static srv_status png_error(int rc, char *err, size_t errlen)
{
    if (rc == SPNG_EMEM)
        return out_of_memory(err, errlen);
    if (rc == SPNG_ECHUNK_LIMITS)
        return srv_fail(err, errlen, SRV_TOO_LARGE,
                        "the PNG's text or ICC chunks inflate to more than %zu bytes",
                        PNG_CHUNK_CACHE_LIMIT);
    return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: corrupt PNG (%s)",
                    spng_strerror(rc));
}

/* libspng checks what stb_image did not (chunk lengths, the image data's length), decodes every
 * output byte or fails, and bounds its chunk cache. A palette index past PLTE decodes as black
 * (its palette is zeroed), where stb read uninitialised memory. Checksums are
 * not verified, as stb_image never did: a bad CRC is no danger, and refusing it would only turn
 * away files every browser shows. 16-bit samples keep their high byte, as with stb_image. */
static srv_status decode_png(const uint8_t *buf, size_t len, int channels,
                             const image_options *opts, decoded *d, char *err, size_t errlen)
{
    srv_status st = SRV_OK;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx)
        return out_of_memory(err, errlen);
    int rc = spng_set_crc_action(ctx, SPNG_CRC_USE, SPNG_CRC_USE);
    if (!rc)
        rc = spng_set_chunk_limits(ctx, PNG_CHUNK_CACHE_LIMIT, PNG_CHUNK_CACHE_LIMIT);
    if (!rc)
        rc = spng_set_png_buffer(ctx, buf, len);
    if (rc) {
        st = png_error(rc, err, errlen);
        goto done;
    }

    struct spng_ihdr ihdr;
    rc = spng_get_ihdr(ctx, &ihdr);
    if (rc) {
        int64_t pw = 0, ph = 0;
        /* Each side is below 2^32, so the product fits in 64 unsigned bits. */
        if (png_declared_size(buf, len, &pw, &ph) && pw > 0 && ph > opts->max_pixels / pw)
            st = srv_fail(err, errlen, SRV_TOO_LARGE,
                          "image is %lldx%lld = %llu pixels; the limit is %lld", (long long)pw,
                          (long long)ph, (unsigned long long)pw * (unsigned long long)ph,
                          (long long)opts->max_pixels);
        else
            st = png_error(rc, err, errlen);
        goto done;
    }
    /* libspng refuses sides above 2^31 - 1, so these fit in int64_t and their product too. */
    int64_t w = ihdr.width, h = ihdr.height;
    if (w * h > opts->max_pixels) {
        st = too_large(err, errlen, w, h, opts->max_pixels);
        goto done;
    }
    size_t size = 0;
    rc = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &size);
    if (rc) {
        st = png_error(rc, err, errlen);
        goto done;
    }
    d->pix = malloc(size);
    if (!d->pix) {
        st = out_of_memory(err, errlen);
        goto done;
    }
    rc = spng_decode_image(ctx, d->pix, size, SPNG_FMT_RGB8, 0);
    if (rc) {
        st = png_error(rc, err, errlen);
        goto done;
    }
    if (channels == GRAY_CHANNELS)
        rgb_to_gray(d->pix, (size_t)(w * h));
    d->w = (int)w;
    d->h = (int)h;

done:
    if (st != SRV_OK)
        decoded_free(d);
    spng_ctx_free(ctx);
    return st;
}

/* ---- BMP, GIF and PNM: stb_image, after checks ------------------------------------------------
 */

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

/* Reads digits; the value saturates at PNM_VALUE_CAP. */
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

/* What a binary PNM's header says, read as stb reads it. */
typedef struct {
    int64_t channels, width, height, maxval;
    size_t data_offset; /* where stb starts reading the pixel data */
} pnm_header;

static pnm_header pnm_read_header(const uint8_t *buf, size_t len)
{
    pnm_header hdr = {.channels = buf[1] == '6' ? RGB_CHANNELS : GRAY_CHANNELS};
    pnm_reader r = {.buf = buf, .len = len, .pos = 2};
    pnm_next(&r);
    pnm_skip_space(&r);
    hdr.width = pnm_integer(&r);
    pnm_skip_space(&r);
    hdr.height = pnm_integer(&r);
    pnm_skip_space(&r);
    hdr.maxval = pnm_integer(&r);
    hdr.data_offset = r.pos;
    return hdr;
}

/* stb_image 2.27 decodes a PNM with more than 255 levels into 16-bit samples, then converts the
 * channel count with its 8-bit routine (1 byte a sample) and the depth with stbi__convert_16_to_8
 * (2 bytes a sample): whenever the file's channels differ from the requested ones, that reads
 * past the converted buffer. Such files are refused, and so are header numbers that would
 * overflow stb's int. Then the size limit, and the pixel data's length: stb does not check it
 * (stbi__pnm_load ignores stbi__getn's result) and would return its uninitialised buffer for a
 * short file. */
static srv_status check_pnm(const uint8_t *buf, size_t len, int64_t max_pixels, char *err,
                            size_t errlen)
{
    pnm_header hdr = pnm_read_header(buf, len);
    if (hdr.maxval > PNM_MAX_8BIT)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: 16-bit PNM (maximum value above %d) is not "
                        "supported; send 8-bit",
                        PNM_MAX_8BIT);
    if (hdr.width >= PNM_VALUE_CAP || hdr.height >= PNM_VALUE_CAP)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: the PNM's width or height is %d or more",
                        PNM_VALUE_CAP);
    if (hdr.width <= 0 || hdr.height <= 0)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: its size is %lldx%lld",
                        (long long)hdr.width, (long long)hdr.height);
    if (hdr.width * hdr.height > max_pixels)
        return too_large(err, errlen, hdr.width, hdr.height, max_pixels);
    int64_t need = hdr.width * hdr.height * hdr.channels;
    int64_t have = (int64_t)(len - hdr.data_offset);
    if (have < need)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: the PNM pixel data is %lld bytes, expected %lld",
                        (long long)have, (long long)need);
    return SRV_OK;
}

/* A BMP's header fields that decide how stb_image 2.27 reads its pixels. */
typedef struct {
    int64_t width, height; /* height made positive (a negative one means top-down rows) */
    uint32_t offset, hsz, bpp, compress;
    int64_t palette; /* entries stb reads (psize) */
} bmp_header;

static srv_status bmp_corrupt(char *err, size_t errlen, const char *what)
{
    return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: corrupt BMP (%s)", what);
}

static srv_status bmp_read_header(const uint8_t *buf, size_t len, bmp_header *b, char *err,
                                  size_t errlen)
{
    if (len < BMP_FILE_HEADER + 4)
        return bmp_corrupt(err, errlen, "short header");
    b->offset = read_le32(buf + BMP_OFFSET_AT);
    b->hsz = read_le32(buf + BMP_HSZ_AT);
    if (b->hsz != BMP_CORE_HEADER && b->hsz != BMP_V3_HEADER && b->hsz != BMP_V3_ALPHA_HEADER &&
        b->hsz != BMP_V4_HEADER && b->hsz != BMP_V5_HEADER)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: BMP header size %u is not supported", b->hsz);
    if (len < BMP_FILE_HEADER + (size_t)b->hsz)
        return bmp_corrupt(err, errlen, "short header");
    /* stb skips to the pixel data from the end of the headers it read, and reads zeros from
     * the end of the file instead when the offset points back into them. */
    if (b->offset > INT32_MAX || b->offset < BMP_FILE_HEADER + b->hsz)
        return bmp_corrupt(err, errlen, "bad pixel data offset");
    if (b->hsz == BMP_CORE_HEADER) {
        b->width = read_le16(buf + BMP_WIDTH_AT);
        b->height = read_le16(buf + BMP_CORE_HEIGHT_AT);
        b->bpp = read_le16(buf + BMP_CORE_BPP_AT);
        b->compress = BMP_RGB;
    } else {
        /* stb takes the width unsigned and the height signed. */
        b->width = read_le32(buf + BMP_WIDTH_AT);
        b->height = (int32_t)read_le32(buf + BMP_HEIGHT_AT);
        if (b->height < 0)
            b->height = -b->height; /* int64_t: -INT32_MIN is fine */
        b->bpp = read_le16(buf + BMP_BPP_AT);
        b->compress = read_le32(buf + BMP_COMPRESS_AT);
    }
    if (b->width <= 0 || b->height <= 0 || b->width > INT32_MAX || b->height > INT32_MAX)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: its size is %lldx%lld",
                        (long long)b->width, (long long)b->height);
    if (b->bpp != 1 && b->bpp != 4 && b->bpp != 8 && b->bpp != 16 && b->bpp != 24 && b->bpp != 32)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: BMP with %u bits per pixel is not supported", b->bpp);
    if (b->compress != BMP_RGB && b->compress != BMP_BITFIELDS)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: compressed BMP (type %u) is not supported",
                        b->compress);
    /* stb's palette size: what lies between the headers and the pixel data (its core-header
     * formula subtracts 24 where the headers take 26; it is copied, not corrected). */
    b->palette = 0;
    if (b->bpp < 16) {
        int64_t room = (int64_t)b->offset - BMP_FILE_HEADER;
        b->palette = b->hsz == BMP_CORE_HEADER ? (room - BMP_CORE_PSIZE_BASE) / 3
                                               : (room - (int64_t)b->hsz) / 4;
        if ((int64_t)b->offset - BMP_FILE_HEADER - (int64_t)b->hsz < 0 || b->palette < 1 ||
            b->palette > BMP_MAX_PALETTE)
            return bmp_corrupt(err, errlen, "bad palette size");
    }
    return SRV_OK;
}

/* The bytes stb reads for one row of pixels, padding included. */
static int64_t bmp_row_bytes(const bmp_header *b)
{
    int64_t w = b->width;
    int64_t data = b->bpp == 1 ? (w + 7) / 8 : b->bpp == 4 ? (w + 1) / 2 : w * (b->bpp / 8);
    if (b->bpp == 32)
        return data; /* stb reads 32-bit rows unpadded; they are 4-byte multiples anyway */
    return (data + BMP_ROW_ALIGN - 1) / BMP_ROW_ALIGN * BMP_ROW_ALIGN;
}

/* stb_image 2.27 keeps a BMP's palette in a 256-entry stack array and fills only the entries the
 * file has, so a pixel whose index is past them reads stale stack memory; and it decodes a short
 * file as if the rest were zeros. A BMP's pixel data must therefore be in the file, and with a
 * palette, every index in it must name an entry. */
static srv_status check_bmp_pixels(const uint8_t *buf, size_t len, const bmp_header *b, char *err,
                                   size_t errlen)
{
    int64_t row = bmp_row_bytes(b);
    int64_t need = row * b->height; /* at most 4 bytes a pixel plus 3 of padding a row */
    if ((int64_t)b->offset > (int64_t)len || (int64_t)len - b->offset < need)
        return srv_fail(
            err, errlen, SRV_BAD_REQUEST,
            "cannot decode image: the BMP pixel data is %lld bytes, expected %lld",
            (long long)((int64_t)b->offset > (int64_t)len ? 0 : (int64_t)len - b->offset),
            (long long)need);
    if (b->bpp >= 16 || b->palette >= (INT64_C(1) << b->bpp))
        return SRV_OK;
    int per_byte = 8 / (int)b->bpp;
    int mask = (1 << b->bpp) - 1;
    for (int64_t y = 0; y < b->height; y++) {
        const uint8_t *r = buf + b->offset + y * row;
        for (int64_t x = 0; x < b->width; x++) {
            int shift = 8 - (int)b->bpp * (int)(x % per_byte + 1);
            int index = r[x / per_byte] >> shift & mask;
            if (index >= b->palette)
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "cannot decode image: the BMP pixel at (%lld, %lld) uses palette "
                                "entry %d of %lld",
                                (long long)x, (long long)y, index, (long long)b->palette);
        }
    }
    return SRV_OK;
}

static srv_status check_bmp(const uint8_t *buf, size_t len, int64_t max_pixels, char *err,
                            size_t errlen)
{
    bmp_header b = {0};
    srv_status st = bmp_read_header(buf, len, &b, err, errlen);
    if (st != SRV_OK)
        return st;
    if (b.width * b.height > max_pixels)
        return too_large(err, errlen, b.width, b.height, max_pixels);
    return check_bmp_pixels(buf, len, &b, err, errlen);
}

/* BMP, GIF (first frame) and PNM through stb_image, which converts gray <-> RGB itself (the same
 * luma weights as above) and drops alpha. stb_image allocates a GIF's canvas zeroed, so a GIF
 * needs no check beyond the size limit. */
static srv_status decode_stb(const uint8_t *buf, size_t len, image_type type, int channels,
                             const image_options *opts, decoded *d, char *err, size_t errlen)
{
    srv_status st = SRV_OK;
    if (type == IMAGE_PNM)
        st = check_pnm(buf, len, opts->max_pixels, err, errlen);
    else if (type == IMAGE_BMP)
        st = check_bmp(buf, len, opts->max_pixels, err, errlen);
    if (st != SRV_OK)
        return st;

    /* stb_image takes the length as an int. */
    if (len > INT_MAX)
        return srv_fail(err, errlen, SRV_TOO_LARGE,
                        "image is %zu bytes; images over %d bytes are not supported", len, INT_MAX);
    int w = 0, h = 0, file_channels = 0;
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &file_channels)) {
        const char *reason = stbi_failure_reason();
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: %s",
                        reason ? reason : "unknown error");
    }
    if (type == IMAGE_BMP && h < 0)
        h = -h; /* top-down rows; check_bmp has refused INT_MIN */
    if (w <= 0 || h <= 0)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: its size is %dx%d", w,
                        h);
    if ((int64_t)w * h > opts->max_pixels)
        return too_large(err, errlen, w, h, opts->max_pixels);

    int dw = 0, dh = 0;
    d->pix = stbi_load_from_memory(buf, (int)len, &dw, &dh, &file_channels, channels);
    d->stb = true;
    if (!d->pix) {
        const char *reason = stbi_failure_reason();
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: %s",
                        reason ? reason : "unknown error");
    }
    /* The limit was checked on the header's size; the decoder must not have produced another. */
    if (dw != w || dh != h) {
        decoded_free(d);
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: decoded size %dx%d differs from its header's %dx%d",
                        dw, dh, w, h);
    }
    d->w = dw;
    d->h = dh;
    return SRV_OK;
}

/* ---- resize and normalise ------------------------------------------------------------------- */

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

/* The pixel value of channel c at output position (oy, ox), resized from the decoded image; an
 * identity copy when the sizes already match. */
static float resized_pixel(const decoded *d, int channels, int c, int64_t oy, int64_t ox,
                           int64_t out_h, int64_t out_w)
{
    size_t ch = (size_t)channels;
    if (d->h == out_h && d->w == out_w)
        return (float)d->pix[((size_t)oy * (size_t)d->w + (size_t)ox) * ch + (size_t)c];

    axis_sample sy = axis_sample_at(oy, d->h, out_h);
    axis_sample sx = axis_sample_at(ox, d->w, out_w);
    size_t row0 = (size_t)sy.i0 * (size_t)d->w, row1 = (size_t)sy.i1 * (size_t)d->w;
    float p00 = d->pix[(row0 + (size_t)sx.i0) * ch + (size_t)c];
    float p01 = d->pix[(row0 + (size_t)sx.i1) * ch + (size_t)c];
    float p10 = d->pix[(row1 + (size_t)sx.i0) * ch + (size_t)c];
    float p11 = d->pix[(row1 + (size_t)sx.i1) * ch + (size_t)c];
    return sy.l0 * (sx.l0 * p00 + sx.l1 * p01) + sy.l1 * (sx.l0 * p10 + sx.l1 * p11);
}

static void normalise_into(const decoded *d, const spec_preprocess *pp, int channels,
                           int64_t height, int64_t width, float *out)
{
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
                double p = resized_pixel(d, channels, c, y, x, height, width);
                if (invert)
                    p = PIXEL_MAX - p;
                dst[(size_t)y * (size_t)width + (size_t)x] = (float)((p * scale - mean) / std);
            }
        }
    }
}

srv_status image_to_tensor_opts(const uint8_t *buf, size_t len, const spec_preprocess *pp,
                                int channels, int64_t height, int64_t width,
                                const image_options *opts, float *out, char *err, size_t errlen)
{
    /* These come from the server's own model table, not from the client: a wrong value is a
     * server bug, reported as a 500 rather than decoded into a wrongly sized buffer. */
    if (channels != GRAY_CHANNELS && channels != RGB_CHANNELS)
        return srv_fail(err, errlen, SRV_INTERNAL,
                        "image_to_tensor: channels must be 1 or 3, got %d", channels);
    if (height <= 0 || width <= 0 || height > INT_MAX || width > INT_MAX || !out || !opts)
        return srv_fail(err, errlen, SRV_INTERNAL, "image_to_tensor: invalid output size %lldx%lld",
                        (long long)width, (long long)height);

    if (!buf || len == 0)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "cannot decode image: the body is empty");

    decoded d = {0};
    srv_status st = SRV_OK;
    switch (image_type_of(buf, len)) {
    case IMAGE_JPEG:
        st = decode_jpeg(buf, len, channels, height, width, opts, &d, err, errlen);
        break;
    case IMAGE_PNG:
        st = decode_png(buf, len, channels, opts, &d, err, errlen);
        break;
    case IMAGE_BMP:
        st = decode_stb(buf, len, IMAGE_BMP, channels, opts, &d, err, errlen);
        break;
    case IMAGE_GIF:
        st = decode_stb(buf, len, IMAGE_GIF, channels, opts, &d, err, errlen);
        break;
    case IMAGE_PNM:
        st = decode_stb(buf, len, IMAGE_PNM, channels, opts, &d, err, errlen);
        break;
    case IMAGE_UNSUPPORTED:
        st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                      "cannot decode image: unsupported image type; send PNG, JPEG, BMP, GIF or "
                      "PNM");
        break;
    }
    if (st == SRV_OK)
        normalise_into(&d, pp, channels, height, width, out);
    decoded_free(&d);
    return st;
}

srv_status image_to_tensor(const uint8_t *buf, size_t len, const spec_preprocess *pp, int channels,
                           int64_t height, int64_t width, int64_t max_pixels, float *out, char *err,
                           size_t errlen)
{
    image_options opts = {.max_pixels = max_pixels};
    return image_to_tensor_opts(buf, len, pp, channels, height, width, &opts, out, err, errlen);
}
