/* image_settings.h - how fuzz_image (and the determinism test that replays its corpus) reads the
 * 3 setting bytes in front of each image: channels, preprocessing, pixel limit, JPEG scaling and
 * output size. */
#ifndef CONVSERVE_IMAGE_SETTINGS_H
#define CONVSERVE_IMAGE_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* Input layout: 3 bytes of settings, then the image file.
 *     byte 0, bit 0: 3 channels (RGB) instead of 1 (gray)
 *             bit 1: a preprocess block (mean/std of ImageNet, scale 1/255); bit 2: invert
 *             bit 3: the server's default pixel limit (16,777,216) instead of a small one
 *             bit 4: decode a JPEG at full size instead of DCT-scaled
 *     byte 1, 2: output height and width, 1 + value % 64 */
enum {
    IMAGE_SETTINGS_PREFIX = 3,
    IMAGE_SETTINGS_MAX_SIDE = 64,
    IMAGE_SETTINGS_RGB = 1,
    IMAGE_SETTINGS_PREPROCESS = 2,
    IMAGE_SETTINGS_INVERT = 4,
    IMAGE_SETTINGS_SERVER_LIMIT = 8,
    IMAGE_SETTINGS_JPEG_FULL = 16,
};

/* Small enough that decodes stay fast; the check is the same code at any limit. */
#define IMAGE_SETTINGS_SMALL_LIMIT         (INT64_C(1) << 16)
#define IMAGE_SETTINGS_SERVER_LIMIT_PIXELS (INT64_C(1) << 24)

typedef struct {
    int channels;
    int64_t height, width;
    spec_preprocess pp;
    image_options opts;
} image_settings;

/* The settings the first IMAGE_SETTINGS_PREFIX bytes of `data` describe (size must be at least
 * that). */
static inline image_settings image_settings_read(const uint8_t *data)
{
    uint8_t flags = data[0];
    image_settings s = {
        .channels = flags & IMAGE_SETTINGS_RGB ? 3 : 1,
        .height = 1 + data[1] % IMAGE_SETTINGS_MAX_SIDE,
        .width = 1 + data[2] % IMAGE_SETTINGS_MAX_SIDE,
        .pp =
            {
                .present = (flags & IMAGE_SETTINGS_PREPROCESS) != 0,
                .color = flags & IMAGE_SETTINGS_RGB ? SPEC_COLOR_RGB : SPEC_COLOR_GRAY,
                .scale = 1.0 / 255.0,
                .mean = {0.485, 0.456, 0.406},
                .std = {0.229, 0.224, 0.225},
                .invert = (flags & IMAGE_SETTINGS_INVERT) != 0,
            },
        .opts =
            {
                .max_pixels = flags & IMAGE_SETTINGS_SERVER_LIMIT
                                  ? IMAGE_SETTINGS_SERVER_LIMIT_PIXELS
                                  : IMAGE_SETTINGS_SMALL_LIMIT,
                .jpeg_full_size = (flags & IMAGE_SETTINGS_JPEG_FULL) != 0,
            },
    };
    return s;
}

#endif
