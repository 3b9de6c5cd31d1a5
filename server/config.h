/* config.h - every server setting, from the command line or a CONVSERVE_* environment variable. */
#ifndef CONVSERVE_CONFIG_H
#define CONVSERVE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h" /* SPEC_MAX_BATCH */

/* The largest byte count a setting takes: 1 PiB, far past any machine, so that sums stay exact. */
#define CONFIG_MAX_BYTES (INT64_C(1) << 50)

/* One table lists each setting once: field, flag, environment variable, kind, default, bounds and
 * help. Parsing, --help and the README's table all come from it. Command-line flags win over the
 * environment, which wins over the default. */
#define CONFIG_MAP(XX)                                                                             \
    XX(models, "--models", "CONVSERVE_MODELS", STR, "config/models", 0, 0,                         \
       "model repository: one folder per model")                                                   \
    XX(host, "--host", "CONVSERVE_HOST", STR, "127.0.0.1", 0, 0, "address to listen on")           \
    XX(port, "--port", "CONVSERVE_PORT", INT, "8080", 0, 65535, "TCP port; 0 picks a free one")    \
    XX(http_threads, "--http-threads", "CONVSERVE_HTTP_THREADS", INT, "2", 1, 64,                  \
       "HTTP threads (parse, validate, serialise; never run the network)")                         \
    XX(instances, "--instances", "CONVSERVE_INSTANCES", INT, "0", 0, 64,                           \
       "inference workers per model (model.json 'instances' wins); 0 = one per 2 CPUs")            \
    XX(infer_threads, "--infer-threads", "CONVSERVE_INFER_THREADS", INT, "0", 0, 256,              \
       "OpenMP threads per inference worker (model.json 'threads' wins); 0 = CPUs / workers")      \
    XX(decode_threads, "--decode-threads", "CONVSERVE_DECODE_THREADS", INT, "0", 0, 1024,          \
       "threads that decode images (and large JSON tensors) off the HTTP threads; 0 = one per "    \
       "usable CPU")                                                                               \
    XX(decode_queue, "--decode-queue", "CONVSERVE_DECODE_QUEUE", INT, "64", 1, 1048576,            \
       "requests waiting for a decode thread; more get 503")                                       \
    XX(max_body_bytes, "--max-body-bytes", "CONVSERVE_MAX_BODY_BYTES", INT, "67108864", 1024,      \
       1073741824, "largest request body; larger gets 413")                                        \
    XX(request_budget_bytes, "--request-budget-bytes", "CONVSERVE_REQUEST_BUDGET_BYTES", INT, "0", \
       0, CONFIG_MAX_BYTES,                                                                        \
       "bytes of request bodies (and the tensors decoded from them) held at once over all "        \
       "connections; past it 503; 0 = an eighth of the memory")                                    \
    XX(answer_budget_bytes, "--answer-budget-bytes", "CONVSERVE_ANSWER_BUDGET_BYTES", INT, "0", 0, \
       CONFIG_MAX_BYTES,                                                                           \
       "bytes of answers (outputs being computed and sent) held at once; past it 503; 0 = an "     \
       "eighth of the memory")                                                                     \
    XX(max_output_bytes, "--max-output-bytes", "CONVSERVE_MAX_OUTPUT_BYTES", INT, "67108864",      \
       1024, CONFIG_MAX_BYTES,                                                                     \
       "largest output of one request (FP32 values x 4), known before it runs; "                   \
       "larger gets 400")                                                                          \
    XX(max_image_pixels, "--max-image-pixels", "CONVSERVE_MAX_IMAGE_PIXELS", INT, "16777216", 1,   \
       1073741824, "largest width x height of an uploaded image (read from its header)")           \
    XX(max_input_pixels, "--max-input-pixels", "CONVSERVE_MAX_INPUT_PIXELS", INT, "1048576", 1,    \
       1073741824, "largest H x W of a tensor sent to a model whose H and W are free")             \
    XX(max_images, "--max-images", "CONVSERVE_MAX_IMAGES", INT, "64", 1, SPEC_MAX_BATCH,           \
       "most images in one multipart request")                                                     \
    XX(max_connections, "--max-connections", "CONVSERVE_MAX_CONNECTIONS", INT, "1024", 1, 65536,   \
       "concurrent connections")                                                                   \
    XX(connection_timeout, "--connection-timeout", "CONVSERVE_CONNECTION_TIMEOUT", INT, "15", 1,   \
       3600, "seconds an idle or slow connection may stay open")                                   \
    XX(max_queue, "--max-queue", "CONVSERVE_MAX_QUEUE", INT, "256", 1, 1000000,                    \
       "requests waiting per model; more get 503")                                                 \
    XX(queue_timeout_ms, "--queue-timeout-ms", "CONVSERVE_QUEUE_TIMEOUT_MS", INT, "10000", 1,      \
       3600000, "a request waiting longer in the queue gets 503")                                  \
    XX(max_batch_size, "--max-batch-size", "CONVSERVE_MAX_BATCH_SIZE", INT, "0", 0,                \
       SPEC_MAX_BATCH, "override every model's max_batch_size; 0 keeps model.json's")              \
    XX(max_queue_delay_us, "--max-queue-delay-us", "CONVSERVE_MAX_QUEUE_DELAY_US", INT, "-1", -1,  \
       10000000, "override every model's dynamic_batching delay; -1 keeps model.json's")           \
    XX(shutdown_timeout, "--shutdown-timeout", "CONVSERVE_SHUTDOWN_TIMEOUT", INT, "30", 0, 3600,   \
       "seconds to let in-flight requests finish on SIGTERM")                                      \
    XX(api_key, "--api-key", "CONVSERVE_API_KEY", STR, "", 0, 0,                                   \
       "if set, every endpoint but health needs 'Authorization: Bearer <key>'")                    \
    XX(cors_origin, "--cors-origin", "CONVSERVE_CORS_ORIGIN", STR, "", 0, 0,                       \
       "if set, the Access-Control-Allow-Origin answered to browsers")                             \
    XX(log_level, "--log-level", "CONVSERVE_LOG_LEVEL", STR, "info", 0, 0,                         \
       "error, warn, info (one line per request) or debug")                                        \
    XX(ui, "--ui", "CONVSERVE_UI", STR, "on", 0, 0,                                                \
       "on: the browser page at / and the API docs at /docs; off: 404 there")                      \
    XX(model_control, "--model-control", "CONVSERVE_MODEL_CONTROL", STR, "none", 0, 0,             \
       "none: the models found at startup; poll: rescan every --poll-seconds and on SIGHUP; "      \
       "explicit: the repository API loads and unloads (SIGHUP rescans)")                          \
    XX(poll_seconds, "--poll-seconds", "CONVSERVE_POLL_SECONDS", INT, "15", 1, 86400,              \
       "with --model-control poll: seconds between two scans of the repository")

typedef struct {
#define CONFIG_FIELD_STR(field)                                 const char *field;
#define CONFIG_FIELD_INT(field)                                 int64_t field;
#define CONFIG_FIELD(field, flag, env, kind, def, lo, hi, help) CONFIG_FIELD_##kind(field)
    CONFIG_MAP(CONFIG_FIELD)
#undef CONFIG_FIELD
#undef CONFIG_FIELD_STR
#undef CONFIG_FIELD_INT
} config;

typedef enum { CONFIG_RUN, CONFIG_HELP, CONFIG_VERSION, CONFIG_ERROR } config_result;

/* Fills cfg from defaults, the environment and argv, in that order. On CONFIG_ERROR err says which
 * setting is wrong. Strings point into argv, the environment or static defaults. */
config_result config_parse(config *cfg, int argc, char **argv, char *err, size_t errlen);
void config_print_help(const char *prog);

#endif
