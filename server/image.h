/* image.h - turns an uploaded image (PNG, JPEG, BMP, GIF, PNM) into a model's normalised input.
 *
 * Usage:
 *     float x[1 * 28 * 28];
 *     char err[256];
 *     srv_status s = image_to_tensor(bytes, len, &spec->preprocess, 1, 28, 28, max_pixels, x,
 *                                    err, sizeof err);
 *
 * Decoders: JPEG with libjpeg-turbo (TurboJPEG), decoded in the DCT domain at the smallest scale
 * (1/8 .. 1) that still gives at least the output size; PNG with libspng; BMP, GIF and 8-bit PNM
 * with stb_image, after checks that keep it from reading memory the file did not define. Every
 * answer is a function of the bytes alone.
 *
 * Work is bounded by the pixels actually decoded: the header is read first, and an image that
 * would decode to more than max_pixels (a JPEG counted after its DCT scaling) is refused with
 * SRV_TOO_LARGE before anything is decoded. Takes a byte view and never reads past it; it is a
 * fuzz target.
 */
#ifndef CONVSERVE_IMAGE_H
#define CONVSERVE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h"
#include "status.h"

/* How an image is decoded. */
typedef struct {
    /* Pixels an image may decode to (a JPEG's after DCT scaling); more is SRV_TOO_LARGE. A
     * progressive JPEG is limited by its full size, since libjpeg keeps its whole coefficient
     * array in memory whatever the scale. */
    int64_t max_pixels;
    /* Decode a JPEG at full size, as stb_image did: for tests and the benchmark, which compare
     * the scaled decode against it. */
    bool jpeg_full_size;
} image_options;

/* Decodes `buf`, converts it to `channels` (1: gray, 3: RGB; alpha dropped), resizes it to
 * height x width with bilinear interpolation (half-pixel centres, as PyTorch's
 * F.interpolate(mode="bilinear", align_corners=False, antialias=False)), and writes CHW floats:
 * x = ((invert ? 255 - p : p) * scale - mean[c]) / std[c]. `pp` may be NULL or not present:
 * then scale 1/255, mean 0, std 1. Errors: SRV_BAD_REQUEST for bytes that are not a supported
 * image ("cannot decode image: <reason>"), SRV_TOO_LARGE for too many pixels, SRV_UNAVAILABLE
 * when memory runs out. Only PNG, JPEG, BMP, GIF and binary 8-bit PNM (P5, P6) are accepted, by
 * their magic bytes; other formats that stb_image could decode (TGA, PSD, HDR, PIC) and 16-bit
 * PNM are refused before any decoder runs. */
srv_status image_to_tensor_opts(const uint8_t *buf, size_t len, const spec_preprocess *pp,
                                int channels, int64_t height, int64_t width,
                                const image_options *opts, float *out, char *err, size_t errlen);

/* image_to_tensor_opts with max_pixels and the default options. */
srv_status image_to_tensor(const uint8_t *buf, size_t len, const spec_preprocess *pp, int channels,
                           int64_t height, int64_t width, int64_t max_pixels, float *out, char *err,
                           size_t errlen);

#endif
