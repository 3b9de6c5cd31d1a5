/* half.h - IEEE binary16 to binary32, the one decoder for FP16 weights and FP16 tensors. */
#ifndef CONVSERVE_HALF_H
#define CONVSERVE_HALF_H

#include <stdint.h>
#include <string.h>

/* Exact: every half value, subnormals included, is a float. The sign of zero and NaN payloads are
 * kept (the payload moves to the top of the float mantissa). */
static inline float half_to_float(uint16_t h)
{
    enum {
        HALF_MANT_BITS = 10,
        HALF_EXP_MASK = 0x1f,
        HALF_BIAS = 15,
        FLOAT_BIAS = 127,
        FLOAT_MANT_BITS = 23,
        SIGN_SHIFT = 31,
        HALF_SIGN_SHIFT = 15,
    };
    uint32_t sign = (uint32_t)(h >> HALF_SIGN_SHIFT) << SIGN_SHIFT;
    uint32_t exp = (h >> HALF_MANT_BITS) & HALF_EXP_MASK;
    uint32_t mant = h & ((1u << HALF_MANT_BITS) - 1);
    uint32_t bits;
    float f;

    if (exp == 0) {
        /* Zero or subnormal: mant * 2^-24 is exact in float; the sign goes on afterwards so that
         * -0 stays -0. */
        f = (float)mant * 0x1p-24f;
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
    } else if (exp == HALF_EXP_MASK) {
        /* Infinity or NaN. */
        bits = sign | 0x7f800000u | mant << (FLOAT_MANT_BITS - HALF_MANT_BITS);
    } else {
        bits = sign | (exp - HALF_BIAS + FLOAT_BIAS) << FLOAT_MANT_BITS |
               mant << (FLOAT_MANT_BITS - HALF_MANT_BITS);
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

#endif
