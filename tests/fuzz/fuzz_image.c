/* fuzz_image.c - image_to_tensor: stb_image's header check and decode, the pixel limit, the PNM and
 * JPEG guards, then resize and normalisation.
 *
 * Input layout: 3 bytes of settings, then the image file.
 *     byte 0, bit 0: 3 channels (RGB) instead of 1 (gray)
 *             bit 1: a preprocess block (mean/std of ImageNet, scale 1/255); bit 2: invert
 *             bit 3: the server's default pixel limit (16,777,216) instead of a small one
 *     byte 1, 2: output height and width, 1 + value % 64
 * The image is copied into an allocation of its exact size, so a read past it is caught.
 *
 * stb_image is compiled into this target from the installed header (stb_image_impl.c) so that
 * ASan and the coverage feedback see inside the decoders; the server links Debian's libstb built
 * from the same header. */
#include "fuzz_check.h"
#include "image.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    PREFIX = 3,
    MAX_SIDE = 64,
    FLAG_RGB = 1,
    FLAG_PREPROCESS = 2,
    FLAG_INVERT = 4,
    FLAG_SERVER_LIMIT = 8,
};

#define MAX_ABS_VALUE 3.0f

/* Small enough that decodes stay fast; the check is the same code at any limit. */
#define SMALL_PIXEL_LIMIT  (INT64_C(1) << 16)
#define SERVER_PIXEL_LIMIT (INT64_C(1) << 24)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX)
        return 0;
    uint8_t flags = data[0];
    int channels = flags & FLAG_RGB ? 3 : 1;
    int64_t height = 1 + data[1] % MAX_SIDE, width = 1 + data[2] % MAX_SIDE;
    int64_t limit = flags & FLAG_SERVER_LIMIT ? SERVER_PIXEL_LIMIT : SMALL_PIXEL_LIMIT;
    spec_preprocess pp = {
        .present = (flags & FLAG_PREPROCESS) != 0,
        .color = channels == 3 ? SPEC_COLOR_RGB : SPEC_COLOR_GRAY,
        .scale = 1.0 / 255.0,
        .mean = {0.485, 0.456, 0.406},
        .std = {0.229, 0.224, 0.225},
        .invert = (flags & FLAG_INVERT) != 0,
    };

    size_t len = size - PREFIX;
    uint8_t *img = fuzz_exact_copy(data + PREFIX, len);
    size_t n = (size_t)channels * (size_t)height * (size_t)width;
    float *out = malloc(n * sizeof *out);
    FUZZ_CHECK(out != NULL);
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    srv_status st =
        image_to_tensor(img, len, &pp, channels, height, width, limit, out, err, sizeof err);
    if (st == SRV_OK) {
        /* Pixels are 0..255 and the resize only blends them, so every value lies in [0, 1]
         * without preprocess and in about [-2.2, 2.7] with the ImageNet mean and std. */
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(isfinite(out[i]) && fabsf(out[i]) <= MAX_ABS_VALUE);
    } else {
        FUZZ_CHECK(st == SRV_BAD_REQUEST || st == SRV_TOO_LARGE);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
    }
    free(out);
    free(img);
    return 0;
}
