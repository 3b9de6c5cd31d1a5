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

/* The formats the API promises, recognised by their first bytes before any stb_image call. */
typedef enum {
    IMAGE_UNSUPPORTED,
    IMAGE_PNG,
    IMAGE_JPEG,
    IMAGE_BMP,
    IMAGE_GIF,
    IMAGE_PNM,
} image_type;

/* Where a PNG file keeps its size: an 8-byte signature, then the IHDR chunk's 4-byte length,
 * 4-byte type, and big-endian 4-byte width and height. */
enum {
    PNG_TYPE_OFFSET = 12,
    PNG_WIDTH_OFFSET = 16,
    PNG_HEIGHT_OFFSET = 20,
    PNG_IHDR_SIZE_END = 24,
    PNG_CHUNK_HEADER = 8, /* every chunk: a big-endian 4-byte data length, a 4-byte type, */
    PNG_CHUNK_TYPE = 4,   /* (the type's offset and size) */
    PNG_CHUNK_CRC = 4,    /* the data, and a 4-byte CRC */
};
static const uint8_t png_signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const uint8_t bmp_magic[] = {'B', 'M'};
static const uint8_t gif87_magic[] = {'G', 'I', 'F', '8', '7', 'a'};
static const uint8_t gif89_magic[] = {'G', 'I', 'F', '8', '9', 'a'};

enum {
    PNM_MAX_8BIT = 255,      /* the largest PNM sample value stored in one byte; above, two */
    PNM_VALUE_CAP = 1 << 20, /* where a header number stops growing (only "above 255" matters) */
};

/* JPEG markers and limits as stb_image 2.27 knows them. */
enum {
    JPEG_MARKER = 0xff,
    JPEG_STUFFED = 0x00, /* 0xff 0x00 inside entropy-coded data stands for a 0xff data byte */
    JPEG_SOI = 0xd8,
    JPEG_EOI = 0xd9,
    JPEG_SOF_BASELINE = 0xc0,
    JPEG_SOF_EXTENDED = 0xc1,
    JPEG_SOF_PROGRESSIVE = 0xc2,
    JPEG_DHT = 0xc4,
    JPEG_SOS = 0xda,
    JPEG_DQT = 0xdb,
    JPEG_DNL = 0xdc,
    JPEG_DRI = 0xdd,
    JPEG_APP_FIRST = 0xe0,
    JPEG_APP_LAST = 0xef,
    JPEG_COM = 0xfe,
    JPEG_RST_FIRST = 0xd0,
    JPEG_RST_LAST = 0xd7,
    JPEG_MAX_COMPONENTS = 4,
    JPEG_MAX_COMPONENT_SCANS = 64, /* see jpeg_scan_header */
    JPEG_TABLE_IDS = 4,            /* Huffman and quantisation tables 0..3 */
    JPEG_HUFFMAN_CLASSES = 2,      /* DC, AC */
    JPEG_HUFFMAN_DC = 0,
    JPEG_HUFFMAN_AC = 1,
    JPEG_HUFFMAN_LENGTHS = 16,    /* a DHT table's counts of codes of 1..16 bits */
    JPEG_HUFFMAN_MAX_CODES = 256, /* stb's stbi__huffman holds values[256], size[257] */
    JPEG_DQT_ENTRIES = 64,
    JPEG_DQT_PRECISIONS = 2, /* 8-bit and 16-bit entries */
    JPEG_MAX_SPECTRAL = 63,  /* the last zigzag coefficient index */
    JPEG_MAX_APPROX = 13,    /* stb's limit on the successive approximation bits Ah and Al */
    JPEG_LENGTH_SIZE = 2, /* every segment after its marker: a big-endian length, itself included */
    JPEG_DRI_SIZE = 4,
    JPEG_DNL_SIZE = 4,
    JPEG_DNL_LINES = 2,
    JPEG_SOF_HEIGHT = 3, /* offsets inside a segment, counted from its length field */
    JPEG_SOF_NCOMP = 7,
    JPEG_SOF_COMPONENTS = 8,
    JPEG_SOF_COMPONENT_SIZE = 3, /* id, sampling factors, quantisation table */
    JPEG_SOF_COMPONENT_TQ = 2,
    JPEG_SOS_NCOMP = 2,
    JPEG_SOS_COMPONENTS = 3,
    JPEG_SOS_COMPONENT_SIZE = 2, /* id, DC and AC Huffman tables */
    JPEG_SOS_TAIL = 3,           /* Ss, Se, Ah/Al after the scan's components */
};

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static size_t read_be16(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

static bool starts_with(const uint8_t *buf, size_t len, const uint8_t *magic, size_t n)
{
    return len >= n && memcmp(buf, magic, n) == 0;
}

/* Only the five promised formats reach stb_image. It also decodes PSD, PIC, HDR and TGA, trying
 * each when the earlier readers decline a file, and those decoders are attack surface the API
 * never needed. The magics below are the ones stb's own tests accept (stbi__png_test,
 * stbi__jpeg_test reading an SOI, stbi__bmp_test, stbi__gif_test, stbi__pnm_test), and none of
 * the other readers accepts a file starting with any of them: PSD needs "8BPS", PIC 0x53 0x80,
 * HDR "#?", TGA a second byte (its colour map type) of 0 or 1. So a file that passes is decoded,
 * or refused, by the reader its magic names, and by no other. */
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

/* stb_image 2.27 grows its buffer for the compressed data to each IDAT chunk's declared length,
 * doubling from 4 KB, before it reads the chunk: a 79-byte file declaring a 2 GB chunk makes it
 * allocate 2 GB, which only then fails to fill. So every chunk up to IEND must lie inside the file,
 * as it does in any PNG stb can decode (stb fails on a chunk cut short, since IEND must follow
 * it); stb then allocates at most about twice the file's size. The walk steps over the chunks as
 * stb does, each by its declared length, and stops at IEND, whose length stb ignores. */
static srv_status check_png_chunks(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    size_t pos = sizeof png_signature;
    for (;;) {
        if (len - pos < PNG_CHUNK_HEADER)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "cannot decode image: corrupt PNG (it ends before its IEND chunk)");
        if (memcmp(buf + pos + PNG_CHUNK_TYPE, "IEND", PNG_CHUNK_TYPE) == 0)
            return SRV_OK;
        size_t n = read_be32(buf + pos);
        size_t room = len - pos - PNG_CHUNK_HEADER;
        if (room < PNG_CHUNK_CRC || n > room - PNG_CHUNK_CRC)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "cannot decode image: corrupt PNG (the chunk at byte %zu declares %zu "
                            "bytes; %zu remain)",
                            pos, n, room < PNG_CHUNK_CRC ? 0 : room - PNG_CHUNK_CRC);
        pos += PNG_CHUNK_HEADER + n + PNG_CHUNK_CRC;
    }
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

/* What a binary PNM's header says, read as stb reads it. */
typedef struct {
    int64_t channels, maxval;
    size_t data_offset; /* where stb starts reading the pixel data */
} pnm_header;

static pnm_header pnm_read_header(const uint8_t *buf, size_t len)
{
    pnm_header hdr = {.channels = buf[1] == '6' ? RGB_CHANNELS : GRAY_CHANNELS};
    pnm_reader r = {.buf = buf, .len = len, .pos = 2};
    pnm_next(&r);
    pnm_skip_space(&r);
    (void)pnm_integer(&r); /* width, which stbi_info reports */
    pnm_skip_space(&r);
    (void)pnm_integer(&r); /* height */
    pnm_skip_space(&r);
    hdr.maxval = pnm_integer(&r);
    hdr.data_offset = r.pos;
    return hdr;
}

/* stb_image 2.27 decodes a PNM with more than 255 levels into 16-bit samples, then converts the
 * channel count with its 8-bit routine (1 byte a sample) and the depth with stbi__convert_16_to_8
 * (2 bytes a sample): whenever the file's channels differ from the requested ones, that reads
 * past the converted buffer, and a large image crashes the server. It also reads the big-endian
 * samples in host byte order. Such files are refused before any stb_image call. */
static srv_status check_pnm_depth(const pnm_header *hdr, char *err, size_t errlen)
{
    if (hdr->maxval > PNM_MAX_8BIT)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: 16-bit PNM (maximum value above %d) is not "
                        "supported; send 8-bit",
                        PNM_MAX_8BIT);
    return SRV_OK;
}

/* stb_image 2.27 does not check the length of a binary PNM's pixel data (stbi__pnm_load ignores
 * stbi__getn's result) and returns its uninitialised buffer for a short file, which would feed
 * stale heap bytes to the model. So the data length is checked here, with the header read exactly
 * as stb reads it. */
static srv_status check_pnm_length(const pnm_header *hdr, size_t len, int w, int h, char *err,
                                   size_t errlen)
{
    int64_t need = (int64_t)w * h * hdr->channels;
    int64_t have = (int64_t)(len - hdr->data_offset);
    if (have < need)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: the PNM pixel data is %lld bytes, expected %lld",
                        (long long)have, (long long)need);
    return SRV_OK;
}

/* A JPEG's frame components and which of them a scan codes, for the coverage check that runs
 * after the pixel limit. */
typedef struct {
    int ncomp;
    uint8_t ids[JPEG_MAX_COMPONENTS];
    bool coded[JPEG_MAX_COMPONENTS];
} jpeg_frame;

/* The JPEG walk's position and what the segments read so far have defined. stb_image 2.27
 * allocates its decoder (stbi__jpeg) with malloc, so a table no segment defined is stale heap
 * memory to it. */
typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    bool progressive;
    int component_scans; /* progressive scans so far, each counted once per component */
    size_t height;
    uint8_t quant_of[JPEG_MAX_COMPONENTS]; /* each frame component's quantisation table */
    bool huffman[JPEG_HUFFMAN_CLASSES][JPEG_TABLE_IDS];
    bool quant[JPEG_TABLE_IDS];
    jpeg_frame *frame;
    char *err;
    size_t errlen;
} jpeg_walk;

static bool jpeg_is_rst(int m)
{
    return m >= JPEG_RST_FIRST && m <= JPEG_RST_LAST;
}

static bool jpeg_is_sof(int m)
{
    return m == JPEG_SOF_BASELINE || m == JPEG_SOF_EXTENDED || m == JPEG_SOF_PROGRESSIVE;
}

static srv_status jpeg_corrupt(const jpeg_walk *w, const char *what)
{
    return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST, "cannot decode image: corrupt JPEG (%s)",
                    what);
}

/* The next marker as stbi__get_marker reads it: 0xff, any 0xff fill bytes, then the code; -1 if
 * there is none. With `padding`, bytes other than 0xff are skipped first, as stb does between the
 * segments before the frame header ("some files have extra padding after their blocks"). */
static int jpeg_next_marker(jpeg_walk *w, bool padding)
{
    if (padding)
        while (w->pos < w->len && w->buf[w->pos] != JPEG_MARKER)
            w->pos++;
    if (w->pos >= w->len || w->buf[w->pos] != JPEG_MARKER)
        return -1;
    while (w->pos < w->len && w->buf[w->pos] == JPEG_MARKER)
        w->pos++;
    if (w->pos >= w->len)
        return -1;
    return w->buf[w->pos++];
}

/* A missing marker: stb fails there too, on an end of file without EOI or on a stray byte. */
static srv_status jpeg_no_marker(const jpeg_walk *w)
{
    if (w->pos >= w->len)
        return jpeg_corrupt(w, "it ends before its end-of-image marker");
    return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                    "cannot decode image: corrupt JPEG (expected a marker at byte %zu)", w->pos);
}

/* The segment after marker `m`, from its length field, which must lie wholly inside the buffer:
 * stb would read a longer one's tail as zeros or from the segments that follow. Sets *s and *n
 * and advances past it. */
static srv_status jpeg_segment(jpeg_walk *w, int m, const uint8_t **s, size_t *n)
{
    size_t left = w->len - w->pos;
    size_t seg = left < JPEG_LENGTH_SIZE ? 0 : read_be16(w->buf + w->pos);
    if (left < JPEG_LENGTH_SIZE || seg < JPEG_LENGTH_SIZE || seg > left)
        return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                        "cannot decode image: corrupt JPEG (marker 0x%02x's segment does not fit "
                        "in the %zu bytes after it)",
                        m, left);
    *s = w->buf + w->pos;
    *n = seg;
    w->pos += seg;
    return SRV_OK;
}

/* A DHT segment. stb_image 2.27's stbi__process_marker adds up a table's 16 code counts and
 * stbi__build_huffman writes that many entries into size[257] and values[256] of its decoder
 * struct without a bound, so a sum over 256 overwrites the heap, already inside stbi_info. It
 * also reads a table that runs past the segment's end from the bytes that follow (or as zeros
 * past the file's end), so every table must lie wholly inside its segment, where its counts are
 * the ones checked here. */
static srv_status jpeg_dht(jpeg_walk *w, const uint8_t *d, size_t n)
{
    size_t p = 0;
    while (p < n) {
        if (n - p < 1 + JPEG_HUFFMAN_LENGTHS)
            return jpeg_corrupt(w, "truncated Huffman table");
        int tc = d[p] >> 4, th = d[p] & 0xf;
        if (tc >= JPEG_HUFFMAN_CLASSES || th >= JPEG_TABLE_IDS)
            return jpeg_corrupt(w, "bad Huffman table class or id");
        size_t codes = 0;
        for (int i = 1; i <= JPEG_HUFFMAN_LENGTHS; i++)
            codes += d[p + (size_t)i];
        if (codes > JPEG_HUFFMAN_MAX_CODES)
            return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                            "cannot decode image: corrupt JPEG (a Huffman table has %zu codes; "
                            "at most %d are possible)",
                            codes, JPEG_HUFFMAN_MAX_CODES);
        p += 1 + JPEG_HUFFMAN_LENGTHS;
        if (n - p < codes)
            return jpeg_corrupt(w, "truncated Huffman table");
        p += codes;
        w->huffman[tc][th] = true;
    }
    return SRV_OK;
}

/* A DQT segment: tables of 64 8-bit or 16-bit entries. stb accepts the segment only when its
 * tables fill it exactly, so one that does not is refused here, and a table counts as defined
 * only once stb would have read it. */
static srv_status jpeg_dqt(jpeg_walk *w, const uint8_t *d, size_t n)
{
    size_t p = 0;
    while (p < n) {
        int pq = d[p] >> 4, tq = d[p] & 0xf;
        if (pq >= JPEG_DQT_PRECISIONS || tq >= JPEG_TABLE_IDS)
            return jpeg_corrupt(w, "bad quantization table precision or id");
        size_t size = 1 + (size_t)JPEG_DQT_ENTRIES * (pq ? 2 : 1);
        if (n - p < size)
            return jpeg_corrupt(w, "truncated quantization table");
        p += size;
        w->quant[tq] = true;
    }
    return SRV_OK;
}

/* A segment other than SOF, SOS and DNL: the tables, the restart interval, and the application
 * and comment segments that stb skips. Any other marker makes stb fail ("unknown marker"). */
static srv_status jpeg_other_segment(jpeg_walk *w, int m)
{
    bool app = (m >= JPEG_APP_FIRST && m <= JPEG_APP_LAST) || m == JPEG_COM;
    if (m != JPEG_DHT && m != JPEG_DQT && m != JPEG_DRI && !app)
        return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                        "cannot decode image: corrupt JPEG (unexpected marker 0x%02x)", m);
    const uint8_t *s = NULL;
    size_t n = 0;
    srv_status st = jpeg_segment(w, m, &s, &n);
    if (st != SRV_OK)
        return st;
    if (m == JPEG_DHT)
        return jpeg_dht(w, s + JPEG_LENGTH_SIZE, n - JPEG_LENGTH_SIZE);
    if (m == JPEG_DQT)
        return jpeg_dqt(w, s + JPEG_LENGTH_SIZE, n - JPEG_LENGTH_SIZE);
    if (m == JPEG_DRI && n != JPEG_DRI_SIZE)
        return jpeg_corrupt(w, "bad restart interval segment");
    return SRV_OK;
}

/* The frame header, with the checks of stbi__process_frame_header that keep the walk in step. */
static srv_status jpeg_frame_header(jpeg_walk *w, int m)
{
    const uint8_t *s = NULL;
    size_t n = 0;
    srv_status st = jpeg_segment(w, m, &s, &n);
    if (st != SRV_OK)
        return st;
    if (n <= JPEG_SOF_NCOMP)
        return jpeg_corrupt(w, "bad frame header");
    int ncomp = s[JPEG_SOF_NCOMP];
    if ((ncomp != 1 && ncomp != 3 && ncomp != 4) ||
        n != JPEG_SOF_COMPONENTS + JPEG_SOF_COMPONENT_SIZE * (size_t)ncomp)
        return jpeg_corrupt(w, "bad frame header");
    for (int i = 0; i < ncomp; i++) {
        const uint8_t *c = s + JPEG_SOF_COMPONENTS + JPEG_SOF_COMPONENT_SIZE * i;
        if (c[JPEG_SOF_COMPONENT_TQ] >= JPEG_TABLE_IDS)
            return jpeg_corrupt(w, "bad frame header");
        w->frame->ids[i] = c[0];
        w->quant_of[i] = c[JPEG_SOF_COMPONENT_TQ];
    }
    w->frame->ncomp = ncomp;
    w->height = read_be16(s + JPEG_SOF_HEIGHT);
    w->progressive = m == JPEG_SOF_PROGRESSIVE;
    return SRV_OK;
}

/* A scan header, with the checks of stbi__process_scan_header. Each table the scan's decoding
 * uses must be defined by then (see jpeg_walk): a baseline scan decodes with the DC and AC
 * Huffman tables of each component; a progressive one with the DC table in a first DC scan
 * (Ss = 0, Ah = 0), with none in a DC refinement, and with the AC table in an AC scan (Ss > 0).
 * The quantisation table of each component must be defined too, as the standard requires before
 * a scan that codes it. A component counts as coded, for the coverage check, once a baseline scan
 * or a first progressive DC scan has covered it.
 *
 * stb decodes every block of a scan's components again for each scan, even one without data, so
 * a few bytes per scan cost a full pass over those components (about 40 ms for four at the
 * default pixel limit): a 32 KB file of empty scans would take over a minute. The scans are
 * therefore bounded as the standard and real encoders bound them: a sequential (baseline or
 * extended) frame codes each component in exactly one scan, and a progressive one codes
 * components at most JPEG_MAX_COMPONENT_SCANS times in all, over twice the 24 of libjpeg's
 * longest default script (18 scans, for CMYK; its YCbCr script codes components 14 times). */
static srv_status jpeg_scan_header(jpeg_walk *w)
{
    jpeg_frame *f = w->frame;
    const uint8_t *s = NULL;
    size_t n = 0;
    srv_status st = jpeg_segment(w, JPEG_SOS, &s, &n);
    if (st != SRV_OK)
        return st;
    if (n <= JPEG_SOS_NCOMP)
        return jpeg_corrupt(w, "bad scan header");
    int ns = s[JPEG_SOS_NCOMP];
    if (ns < 1 || ns > f->ncomp ||
        n != JPEG_SOS_COMPONENTS + JPEG_SOS_COMPONENT_SIZE * (size_t)ns + JPEG_SOS_TAIL)
        return jpeg_corrupt(w, "bad scan header");
    if (w->progressive && (w->component_scans += ns) > JPEG_MAX_COMPONENT_SCANS)
        return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                        "cannot decode image: the progressive JPEG's scans code its components "
                        "more than %d times in all, which is not supported",
                        JPEG_MAX_COMPONENT_SCANS);
    const uint8_t *tail = s + JPEG_SOS_COMPONENTS + JPEG_SOS_COMPONENT_SIZE * ns;
    int ss = tail[0], se = tail[1], ah = tail[2] >> 4, al = tail[2] & 0xf;
    if (w->progressive ? ss > JPEG_MAX_SPECTRAL || se > JPEG_MAX_SPECTRAL || ss > se ||
                             ah > JPEG_MAX_APPROX || al > JPEG_MAX_APPROX
                       : ss != 0 || ah != 0 || al != 0)
        return jpeg_corrupt(w, "bad scan header");
    bool first_dc = ss == 0 && ah == 0;
    bool needs_dc = !w->progressive || first_dc;
    bool needs_ac = !w->progressive || ss > 0;

    for (int k = 0; k < ns; k++) {
        const uint8_t *c = s + JPEG_SOS_COMPONENTS + JPEG_SOS_COMPONENT_SIZE * k;
        /* stb takes the first frame component with the id, so a duplicate id is never coded. */
        int which = 0;
        while (which < f->ncomp && f->ids[which] != c[0])
            which++;
        if (which == f->ncomp)
            return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                            "cannot decode image: corrupt JPEG (a scan codes component %d, which "
                            "the frame does not have)",
                            c[0]);
        int hd = c[1] >> 4, ha = c[1] & 0xf;
        if (hd >= JPEG_TABLE_IDS || ha >= JPEG_TABLE_IDS)
            return jpeg_corrupt(w, "bad scan header");
        bool dc_missing = needs_dc && !w->huffman[JPEG_HUFFMAN_DC][hd];
        if (dc_missing || (needs_ac && !w->huffman[JPEG_HUFFMAN_AC][ha]))
            return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                            "cannot decode image: corrupt JPEG (a scan of component %d uses %s "
                            "Huffman table %d, which no DHT segment defines)",
                            c[0], dc_missing ? "DC" : "AC", dc_missing ? hd : ha);
        if (!w->quant[w->quant_of[which]])
            return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                            "cannot decode image: corrupt JPEG (component %d uses quantization "
                            "table %d, which no DQT segment defines)",
                            c[0], w->quant_of[which]);
        if (!w->progressive && f->coded[which])
            return srv_fail(w->err, w->errlen, SRV_BAD_REQUEST,
                            "cannot decode image: corrupt JPEG (component %d is coded by more "
                            "than one scan)",
                            c[0]);
        if (needs_dc)
            f->coded[which] = true;
    }
    return SRV_OK;
}

/* Skips a scan's entropy-coded data as stb's bit reader (stbi__grow_buffer_unsafe) tokenises it:
 * 0xff, any 0xff fill bytes, then 0x00 is a data byte; then a restart marker continues the scan;
 * any other code ends it. Returns that code, or -1 at the end of the file. stb always resumes
 * after this same marker or fails: its reader stops at the first marker and crosses a restart
 * marker only by restarting, and when it finishes the scan early it looks for the next 0xff,
 * where a stuffed byte, a restart marker or too few fill bytes all make it fail. */
static int jpeg_skip_scan(jpeg_walk *w)
{
    while (w->pos < w->len) {
        if (w->buf[w->pos++] != JPEG_MARKER)
            continue;
        while (w->pos < w->len && w->buf[w->pos] == JPEG_MARKER)
            w->pos++;
        if (w->pos >= w->len)
            return -1;
        int c = w->buf[w->pos++];
        if (c != JPEG_STUFFED && !jpeg_is_rst(c))
            return c;
    }
    return -1;
}

/* Walks a JPEG's segments exactly as stb_image 2.27 does (stbi__decode_jpeg_header, which
 * stbi_info runs too, then stbi__decode_jpeg_image) and refuses, before any stb_image call, every
 * file whose tables would make stb corrupt or read stale memory: see jpeg_dht and
 * jpeg_scan_header. Whatever the walk cannot follow is refused too, since stb fails on all of it
 * (a missing marker or EOI, a segment that does not fit, an unknown marker, a second frame), and a
 * walk that stopped there could miss a table stb goes on to read. */
static srv_status check_jpeg(const uint8_t *buf, size_t len, jpeg_frame *frame, char *err,
                             size_t errlen)
{
    jpeg_walk w = {.buf = buf, .len = len, .pos = 2, .frame = frame, .err = err, .errlen = errlen};
    srv_status st = SRV_OK;
    *frame = (jpeg_frame){0};

    /* Up to the frame header; image_type_of has seen the SOI. */
    bool padding = false;
    int m;
    for (;;) {
        m = jpeg_next_marker(&w, padding);
        if (m < 0)
            return jpeg_no_marker(&w);
        if (jpeg_is_sof(m))
            break;
        st = jpeg_other_segment(&w, m);
        if (st != SRV_OK)
            return st;
        padding = true;
    }
    st = jpeg_frame_header(&w, m);
    if (st != SRV_OK)
        return st;

    /* The scans and what comes between them, up to EOI; stb ignores anything after it. */
    m = jpeg_next_marker(&w, false);
    while (m != JPEG_EOI) {
        if (m < 0)
            return jpeg_no_marker(&w);
        if (m == JPEG_SOS) {
            st = jpeg_scan_header(&w);
            if (st != SRV_OK)
                return st;
            m = jpeg_skip_scan(&w);
            continue;
        }
        if (m == JPEG_DNL) {
            /* stb accepts a DNL only when it repeats the frame's height. */
            const uint8_t *s = NULL;
            size_t n = 0;
            st = jpeg_segment(&w, m, &s, &n);
            if (st != SRV_OK)
                return st;
            if (n != JPEG_DNL_SIZE || read_be16(s + JPEG_DNL_LINES) != w.height)
                return jpeg_corrupt(&w, "bad DNL segment");
        } else {
            st = jpeg_other_segment(&w, m);
            if (st != SRV_OK)
                return st;
        }
        m = jpeg_next_marker(&w, false);
    }
    return SRV_OK;
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

    /* Before any stb_image call: the format must be one the API promises, and the PNM and JPEG
     * headers must be free of what corrupts stb's memory (its JPEG tables are already read by
     * stbi_info). */
    image_type type = image_type_of(buf, len);
    if (type == IMAGE_UNSUPPORTED)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "cannot decode image: unsupported image type; send PNG, JPEG, BMP, GIF or "
                        "PNM");
    pnm_header pnm = {0};
    if (type == IMAGE_PNM) {
        pnm = pnm_read_header(buf, len);
        st = check_pnm_depth(&pnm, err, errlen);
        if (st != SRV_OK)
            return st;
    }
    jpeg_frame frame = {0};
    if (type == IMAGE_JPEG) {
        st = check_jpeg(buf, len, &frame, err, errlen);
        if (st != SRV_OK)
            return st;
    }

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

    /* These guard the decode only, so they follow the limit: a header-only PNG or PNM declaring
     * a huge image reads as too large. */
    if (type == IMAGE_PNG) {
        st = check_png_chunks(buf, len, err, errlen);
        if (st != SRV_OK)
            return st;
    }
    if (type == IMAGE_PNM) {
        st = check_pnm_length(&pnm, len, w, h, err, errlen);
        if (st != SRV_OK)
            return st;
    }
    /* After the limit, so that a header-only JPEG declaring a huge image reads as too large. */
    for (int i = 0; i < frame.ncomp; i++)
        if (!frame.coded[i])
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "cannot decode image: JPEG component %d is not coded by any scan",
                            frame.ids[i]);

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
