/* json_scan.c - microbenchmark: decoding a 37,632-float KServe v2 JSON tensor, jansson vs scanner.
 *
 * Usage: bench_json [elements] [iterations]. Prints a markdown table of milliseconds per request
 * for jansson's tree (json_loadb, read every number, json_decref) and for infer_request_parse,
 * which takes the scanner path, and the ratio. Both see the same body (numbers printed with %.7g,
 * as clients typically send them).
 */
#include "tensor.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 3 * 112 * 112;
    int iters = argc > 2 ? atoi(argv[2]) : 30;
    size_t cap = n * 24 + 256, len = 0;
    char *body = malloc(cap);
    if (!body || n == 0 || iters < 1)
        return 2;
    len += (size_t)snprintf(body + len, cap - len,
                            "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,%zu],\"datatype\":"
                            "\"FP32\",\"data\":[",
                            n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        float v = (float)(x >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
        len += (size_t)snprintf(body + len, cap - len, "%s%.7g", i ? "," : "", (double)v);
    }
    len += (size_t)snprintf(body + len, cap - len, "]}]}");

    double sum_a = 0, sum_b = 0, best_a = 1e9, best_b = 1e9;
    float check_a = 0, check_b = 0;
    char err[512];
    for (int it = 0; it < iters; it++) {
        double t0 = now_ms();
        json_error_t je;
        json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
        json_t *data = json_object_get(json_array_get(json_object_get(root, "inputs"), 0), "data");
        float *out = malloc(n * sizeof *out);
        for (size_t i = 0; i < n; i++)
            out[i] = (float)json_number_value(json_array_get(data, i));
        check_a = out[n - 1];
        free(out);
        json_decref(root);
        double t1 = now_ms();
        infer_request q;
        if (infer_request_parse(body, len, 0, 0, &q, err, sizeof err) != SRV_OK ||
            infer_request_load(&q, err, sizeof err) != SRV_OK) {
            fprintf(stderr, "parse failed: %s\n", err);
            return 1;
        }
        check_b = q.data[n - 1];
        infer_request_free(&q);
        double t2 = now_ms();
        sum_a += t1 - t0;
        sum_b += t2 - t1;
        best_a = t1 - t0 < best_a ? t1 - t0 : best_a;
        best_b = t2 - t1 < best_b ? t2 - t1 : best_b;
    }
    if (check_a != check_b) {
        fprintf(stderr, "the two decoders disagree: %.9g vs %.9g\n", check_a, check_b);
        return 1;
    }
    printf("| decoder (%zu floats, %zu bytes, %d runs) | mean ms | best ms |\n", n, len, iters);
    printf("|---|---|---|\n");
    printf("| jansson tree (json_loadb + json_number_value + json_decref) | %.2f | %.2f |\n",
           sum_a / iters, best_a);
    printf("| convserve scanner (infer_request_parse + infer_request_load) | %.2f | %.2f |\n",
           sum_b / iters, best_b);
    printf("| speed-up | %.1fx | %.1fx |\n", sum_a / sum_b, best_a / best_b);
    free(body);
    return 0;
}
