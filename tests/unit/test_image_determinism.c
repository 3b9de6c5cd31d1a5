/* test_image_determinism.c - every image of the given corpora (the fuzz seeds and regressions)
 * decodes to the same answer, status, message and pixels, whatever the heap and the stack held
 * before: an answer is a function of the request alone.
 *
 * Usage: test_image_determinism DIR...   (files are read as fuzz_image reads them: 3 setting
 * bytes, then the image; each is also decoded with the other channel count and JPEG mode)
 *
 * Each file is decoded twice: once after glibc's malloc has been told to fill every allocation
 * and every freed block with one byte pattern (mallopt M_PERTURB, as MALLOC_PERTURB_ does) and
 * the stack below the decoder has been filled with it, then again with another pattern. A
 * decoder that reads memory it never wrote gives different answers in the two passes. */
#define _XOPEN_SOURCE   700 /* nftw */
#define _DEFAULT_SOURCE     /* M_PERTURB */

#include <ftw.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "image.h"
#include "image_settings.h"

enum {
    ERR_LEN = 512,
    STACK_DIRT = 256 * 1024, /* bytes of stack filled below the decoder's frames */
    MAX_FILES = 100000,
    MAX_FILE_BYTES = 64 << 20,
    FTW_FDS = 16,
    VARIANTS = 4, /* the file's own settings; then other channels; other JPEG mode; both */
    HEAP_DIRT_BLOCKS = 64,
};

static const int PATTERNS[2] = {0x55, 0xaa};

typedef struct {
    char **paths;
    size_t n;
} file_list;

/* nftw has no context argument, so the walk appends to this list; it is the only file-scope
 * state and lives only while main collects the paths. */
static file_list *walk_into;

static int collect(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (type != FTW_F)
        return 0;
    if (walk_into->n == MAX_FILES)
        return 1;
    walk_into->paths[walk_into->n] = strdup(path);
    if (!walk_into->paths[walk_into->n])
        return 1;
    walk_into->n++;
    return 0;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    if (!f)
        return NULL;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size >= 0 && size <= MAX_FILE_BYTES && fseek(f, 0, SEEK_SET) == 0)
        buf = malloc(size ? (size_t)size : 1);
    if (buf)
        *len = fread(buf, 1, (size_t)size, f);
    fclose(f);
    return buf;
}

/* FNV-1a, 64-bit: enough to tell two answers apart. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* Fills the stack below this frame, where the decoder's frames will be, with `byte`. */
static __attribute__((noinline)) void dirty_stack(int byte)
{
    volatile uint8_t pad[STACK_DIRT];
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = (uint8_t)byte;
}

/* Leaves freed blocks of many sizes on the heap, each filled with the pattern (M_PERTURB). */
static void dirty_heap(void)
{
    void *blocks[HEAP_DIRT_BLOCKS];
    for (int i = 0; i < HEAP_DIRT_BLOCKS; i++)
        blocks[i] = malloc((size_t)(16 << (i % 12))); /* 16 B .. 32 KB, below mmap's threshold */
    for (int i = 0; i < HEAP_DIRT_BLOCKS; i++)
        free(blocks[i]);
}

/* The answer to one variant of one file, as a hash of status, message and pixels. */
static uint64_t answer(const uint8_t *data, size_t size, int variant, int pattern)
{
    image_settings s = image_settings_read(data);
    if (variant & 1)
        s.channels = 4 - s.channels; /* 1 <-> 3 */
    if (variant & 2)
        s.opts.jpeg_full_size = !s.opts.jpeg_full_size;
    size_t n = (size_t)s.channels * (size_t)s.height * (size_t)s.width;
    float *out = calloc(n, sizeof *out);
    char err[ERR_LEN] = "";
    if (!out)
        return 0;
    dirty_heap();
    dirty_stack(pattern);
    srv_status st =
        image_to_tensor_opts(data + IMAGE_SETTINGS_PREFIX, size - IMAGE_SETTINGS_PREFIX, &s.pp,
                             s.channels, s.height, s.width, &s.opts, out, err, sizeof err);
    uint64_t h = fnv(UINT64_C(0xcbf29ce484222325), &st, sizeof st);
    h = fnv(h, err, strlen(err));
    if (st == SRV_OK)
        h = fnv(h, out, n * sizeof *out);
    free(out);
    return h;
}

int main(int argc, char **argv)
{
    file_list files = {.paths = calloc(MAX_FILES, sizeof(char *))};
    CHECK(files.paths != NULL);
    if (!files.paths)
        return 1;
    walk_into = &files;
    for (int i = 1; i < argc; i++)
        CHECK_INT(nftw(argv[i], collect, FTW_FDS, FTW_PHYS), 0);
    walk_into = NULL;
    /* A corpus that is not there must not pass as "no differences". */
    CHECK(files.n > 0);

    size_t decoded = 0, differ = 0;
    for (size_t f = 0; f < files.n; f++) {
        size_t size = 0;
        uint8_t *data = read_file(files.paths[f], &size);
        CHECK(data != NULL);
        if (data && size >= IMAGE_SETTINGS_PREFIX) {
            for (int v = 0; v < VARIANTS; v++) {
                uint64_t got[2];
                for (int p = 0; p < 2; p++) {
                    mallopt(M_PERTURB, PATTERNS[p]);
                    got[p] = answer(data, size, v, PATTERNS[p]);
                }
                mallopt(M_PERTURB, 0);
                decoded++;
                if (got[0] != got[1]) {
                    differ++;
                    fprintf(stderr, "%s (variant %d): the answer depends on stale memory\n",
                            files.paths[f], v);
                }
            }
        }
        free(data);
        free(files.paths[f]);
    }
    free(files.paths);
    CHECK(differ == 0);
    fprintf(stderr, "decoded %zu files x %d variants, each with two heap and stack patterns\n",
            files.n, VARIANTS);
    (void)decoded;
    return check_report("image_determinism");
}
