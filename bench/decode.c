/* decode.c - bench_decode: milliseconds per image to a model's input, stb_image full decode
 * against image.c's decoders (libjpeg-turbo DCT-scaled and full, libspng), and how far a model's
 * logits move between the scaled and the full JPEG decode. bench/decode.py runs it with PIL beside.
 *
 * Usage: bench_decode [--side N]... [--model DIR] FILE...
 *   prints one line per file, decoder and side: "file side decoder ms"; with --model, one line per
 *   JPEG: "logits file max_abs_diff logit_range top1_same".
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stb_image.h>

#include "engine.h"
#include "image.h"

enum {
    MAX_SIDES = 8,
    ERR_LEN = 512,
    MIN_RUNS = 3,
    CHANNELS = 3,
    MAX_PIXELS = 1 << 30, /* the benchmark measures decoders, not the server's limit */
};
#define MIN_SECONDS 0.5

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    if (!f)
        return NULL;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size > 0 && fseek(f, 0, SEEK_SET) == 0)
        buf = malloc((size_t)size);
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        *len = (size_t)size;
    fclose(f);
    return buf;
}

typedef enum { DEC_STB, DEC_SCALED, DEC_FULL } decoder;
static const char *const DECODER_NAMES[] = {"stb_full", "convserve", "convserve_full"};

/* One decode of `img` to side x side RGB floats; false on failure. stb_full is stb_image's decode
 * alone, what the server did before (its resize to a small input costs microseconds). */
static bool decode_once(decoder d, const uint8_t *img, size_t len, int side, float *out)
{
    if (d == DEC_STB) {
        int w, h, n;
        stbi_uc *pix = stbi_load_from_memory(img, (int)len, &w, &h, &n, CHANNELS);
        stbi_image_free(pix);
        return pix != NULL;
    }
    char err[ERR_LEN];
    image_options opts = {.max_pixels = MAX_PIXELS, .jpeg_full_size = d == DEC_FULL};
    if (image_to_tensor_opts(img, len, NULL, CHANNELS, side, side, &opts, out, err, sizeof err) !=
        SRV_OK) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return false;
    }
    return true;
}

static double ms_per_image(decoder d, const uint8_t *img, size_t len, int side, float *out)
{
    int runs = 0;
    double t0 = now_seconds(), t = 0;
    do {
        if (!decode_once(d, img, len, side, out))
            return -1;
        runs++;
        t = now_seconds() - t0;
    } while (runs < MIN_RUNS || t < MIN_SECONDS);
    return t * 1e3 / runs;
}

/* The model's logits for one image, decoded scaled or full. */
static bool logits_of(engine_runner *r, const spec_model *s, const uint8_t *img, size_t len,
                      bool full, float *in, float *logits, size_t n_logits)
{
    char err[ERR_LEN];
    int64_t h = s->preprocess.resize[0] > 0 ? s->preprocess.resize[0] : s->input_dims[1];
    int64_t w = s->preprocess.resize[1] > 0 ? s->preprocess.resize[1] : s->input_dims[2];
    image_options opts = {.max_pixels = MAX_PIXELS, .jpeg_full_size = full};
    if (image_to_tensor_opts(img, len, &s->preprocess, (int)s->input_dims[0], h, w, &opts, in, err,
                             sizeof err) != SRV_OK) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return false;
    }
    int64_t dims[4] = {1, s->input_dims[0], h, w};
    engine_tensor out;
    if (engine_runner_run(r, in, dims, 4, &out, err, sizeof err) != ENGINE_OK ||
        out.count != n_logits) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return false;
    }
    memcpy(logits, out.data, n_logits * sizeof *logits);
    return true;
}

static int compare_logits(const char *model_dir, char **files, int n_files)
{
    char err[ERR_LEN];
    engine_model *m = NULL;
    engine_runner *r = NULL;
    float *in = NULL, *a = NULL, *b = NULL;
    int rc = 1;
    if (engine_model_load(model_dir, NULL, &m, err, sizeof err) != ENGINE_OK ||
        engine_runner_create(m, 0, &r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "bench_decode: %s\n", err);
        goto done;
    }
    const spec_model *s = engine_model_spec(m);
    if (s->input_rank != 3) {
        fprintf(stderr, "bench_decode: %s does not take images\n", model_dir);
        goto done;
    }
    int64_t shapes_in[4] = {1, s->input_dims[0], s->input_dims[1], s->input_dims[2]};
    size_t n_logits = 0;
    {
        spec_shape *shapes = calloc(s->n_layers, sizeof *shapes);
        int bad = 0;
        if (!shapes ||
            engine_model_shapes(m, shapes_in, 4, shapes, &bad, err, sizeof err) != ENGINE_OK) {
            free(shapes);
            goto done;
        }
        n_logits = (size_t)shapes[s->n_layers - 1].d[1];
        free(shapes);
    }
    size_t n_in = (size_t)(s->input_dims[0] * s->input_dims[1] * s->input_dims[2]);
    in = malloc(n_in * sizeof *in);
    a = malloc(n_logits * sizeof *a);
    b = malloc(n_logits * sizeof *b);
    if (!in || !a || !b)
        goto done;
    for (int f = 0; f < n_files; f++) {
        size_t len = 0;
        uint8_t *img = read_file(files[f], &len);
        if (!img || len < 2 || img[0] != 0xff || img[1] != 0xd8) {
            free(img);
            continue;
        }
        bool ok = logits_of(r, s, img, len, false, in, a, n_logits) &&
                  logits_of(r, s, img, len, true, in, b, n_logits);
        free(img);
        if (!ok)
            goto done;
        float diff = 0, lo = a[0], hi = a[0];
        size_t top_a = 0, top_b = 0;
        for (size_t i = 0; i < n_logits; i++) {
            float d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
            diff = d > diff ? d : diff;
            lo = b[i] < lo ? b[i] : lo;
            hi = b[i] > hi ? b[i] : hi;
            top_a = a[i] > a[top_a] ? i : top_a;
            top_b = b[i] > b[top_b] ? i : top_b;
        }
        printf("logits %s %.4f %.4f %s\n", files[f], diff, hi - lo, top_a == top_b ? "yes" : "no");
    }
    rc = 0;
done:
    free(in);
    free(a);
    free(b);
    engine_runner_destroy(r);
    engine_model_destroy(m);
    return rc;
}

int main(int argc, char **argv)
{
    int sides[MAX_SIDES], n_sides = 0;
    const char *model = NULL;
    int first = 1;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first += 2) {
        if (first + 1 >= argc) {
            fprintf(stderr, "bench_decode: %s needs a value\n", argv[first]);
            return 2;
        }
        if (strcmp(argv[first], "--side") == 0 && n_sides < MAX_SIDES)
            sides[n_sides++] = atoi(argv[first + 1]);
        else if (strcmp(argv[first], "--model") == 0)
            model = argv[first + 1];
        else {
            fprintf(stderr, "usage: bench_decode [--side N]... [--model DIR] FILE...\n");
            return 2;
        }
    }
    if (n_sides == 0)
        sides[n_sides++] = 28;
    int max_side = 0;
    for (int i = 0; i < n_sides; i++)
        max_side = sides[i] > max_side ? sides[i] : max_side;
    float *out = malloc((size_t)CHANNELS * (size_t)max_side * (size_t)max_side * sizeof *out);
    if (!out)
        return 1;
    int rc = 0;
    for (int f = first; f < argc && rc == 0; f++) {
        size_t len = 0;
        uint8_t *img = read_file(argv[f], &len);
        if (!img) {
            fprintf(stderr, "bench_decode: cannot read %s\n", argv[f]);
            rc = 1;
            break;
        }
        bool jpeg = len > 2 && img[0] == 0xff && img[1] == 0xd8;
        for (int s = 0; s < n_sides && rc == 0; s++) {
            for (int d = DEC_STB; d <= (jpeg ? DEC_FULL : DEC_SCALED); d++) {
                double ms = ms_per_image((decoder)d, img, len, sides[s], out);
                if (ms < 0)
                    rc = 1;
                printf("%s %d %s %.2f\n", argv[f], sides[s], DECODER_NAMES[d], ms);
                fflush(stdout);
            }
        }
        free(img);
    }
    free(out);
    if (rc == 0 && model)
        rc = compare_logits(model, argv + first, argc - first);
    return rc;
}
