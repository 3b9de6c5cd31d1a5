/* stb_image_impl.c - stb_image's implementation, compiled with the fuzz target's sanitizers and
 * coverage so that fuzz_image sees inside the decoders. Its definitions take precedence over
 * Debian's libstb (same header, version 2.27), which the parsers library also links. */
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
