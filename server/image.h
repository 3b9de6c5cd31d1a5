/* image.h - turns an uploaded image (PNG, JPEG, BMP, GIF, PNM) into a model's normalised input.
 *
 * Usage:
 *     float x[1 * 28 * 28];
 *     char err[256];
 *     srv_status s = image_to_tensor(bytes, len, &spec->preprocess, 1, 28, 28, max_pixels, x,
 *                                    err, sizeof err);
 *
 * The header is read first (stbi_info_from_memory) and an image whose width * height exceeds
 * max_pixels is refused before anything is decoded, so a small file cannot make the server allocate
 * without bound. Takes a byte view and never reads past it; it is a fuzz target.
 */
#ifndef CONVSERVE_IMAGE_H
#define CONVSERVE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "spec.h"
#include "status.h"

/* Decodes `buf`, converts it to `channels` (1: gray, 3: RGB; alpha dropped), resizes it to
 * height x width with bilinear interpolation (half-pixel centres, as PyTorch's
 * F.interpolate(mode="bilinear", align_corners=False, antialias=False)), and writes CHW floats:
 * x = ((invert ? 255 - p : p) * scale - mean[c]) / std[c]. `pp` may be NULL or not present:
 * then scale 1/255, mean 0, std 1. Errors: SRV_BAD_REQUEST for bytes that are not a supported
 * image ("cannot decode image: <reason>"), SRV_TOO_LARGE for too many pixels. Only PNG, JPEG,
 * BMP, GIF and binary 8-bit PNM (P5, P6) are accepted, by their magic bytes; other formats that
 * stb_image could decode (TGA, PSD, HDR, PIC) and 16-bit PNM are refused, and so are JPEGs with
 * malformed or undefined Huffman or quantization tables, before any stb_image call. */
srv_status image_to_tensor(const uint8_t *buf, size_t len, const spec_preprocess *pp, int channels,
                           int64_t height, int64_t width, int64_t max_pixels, float *out, char *err,
                           size_t errlen);

#endif
