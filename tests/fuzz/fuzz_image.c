/* fuzz_image.c - image_to_tensor_opts: libjpeg-turbo (scaled and full), libspng, stb_image for BMP,
 * GIF and PNM with their guards, the pixel limits, then resize and normalisation.
 *
 * Input layout: 3 bytes of settings (image_settings.h), then the image file. The image is copied
 * into an allocation of its exact size, so a read past it is caught.
 *
 * stb_image is compiled into this target from the installed header (stb_image_impl.c) so that
 * ASan and the coverage feedback see inside its decoders; the server links Debian's libstb built
 * from the same header. libjpeg-turbo and libspng are Debian's shared libraries, uninstrumented
 * (both are fuzzed by OSS-Fuzz); what this target checks there is image.c's use of them. */
#include "fuzz_check.h"
#include "image.h"
#include "image_settings.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ABS_VALUE 3.0f

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < IMAGE_SETTINGS_PREFIX)
        return 0;
    image_settings s = image_settings_read(data);
    size_t len = size - IMAGE_SETTINGS_PREFIX;
    uint8_t *img = fuzz_exact_copy(data + IMAGE_SETTINGS_PREFIX, len);
    size_t n = (size_t)s.channels * (size_t)s.height * (size_t)s.width;
    float *out = malloc(n * sizeof *out);
    FUZZ_CHECK(out != NULL);
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    srv_status st = image_to_tensor_opts(img, len, &s.pp, s.channels, s.height, s.width, &s.opts,
                                         out, err, sizeof err);
    if (st == SRV_OK) {
        /* Pixels are 0..255 and the resize only blends them, so every value lies in [0, 1]
         * without preprocess and in about [-2.2, 2.7] with the ImageNet mean and std. */
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(isfinite(out[i]) && fabsf(out[i]) <= MAX_ABS_VALUE);
    } else {
        FUZZ_CHECK(st == SRV_BAD_REQUEST || st == SRV_TOO_LARGE || st == SRV_UNAVAILABLE);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
    }
    free(out);
    free(img);
    return 0;
}
