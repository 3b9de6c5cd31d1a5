/* fuzz_model_json.c - spec_parse on arbitrary bytes; a model that parses is then run through
 * spec_infer at load time (free batch, H and W) and with concrete sizes, as the server does. */
#include "fuzz_check.h"
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    FREE_SIDE = 32, /* the H and W tried for a model that accepts any */
};

static void check_shapes(const spec_model *m, const int64_t *in, int rank)
{
    spec_shape *out = calloc(m->n_layers, sizeof *out);
    spec_padding *pads = calloc(m->n_layers, sizeof *pads);
    FUZZ_CHECK(out && pads);
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    int bad = -2;
    bool concrete = true;
    for (int i = 0; i < rank; i++)
        concrete &= in[i] > 0;
    if (spec_infer(m, in, rank, out, pads, &bad, err, sizeof err) == ENGINE_OK) {
        for (size_t i = 0; i < m->n_layers; i++) {
            FUZZ_CHECK(out[i].rank == 2 || out[i].rank == 4);
            for (int d = 0; d < out[i].rank; d++)
                FUZZ_CHECK(concrete ? out[i].d[d] >= 1 : out[i].d[d] >= 1 || out[i].d[d] == -1);
            char text[16]; /* deliberately short: the formatter must truncate, not overrun */
            spec_shape_format(&out[i], text, sizeof text);
            FUZZ_CHECK(memchr(text, '\0', sizeof text) != NULL);
        }
    } else {
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
        FUZZ_CHECK(bad >= -1 && bad < (int)m->n_layers);
    }
    free(out);
    free(pads);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[FUZZ_ERR_LEN];
    fuzz_err_poison(err, sizeof err);
    spec_model *m = NULL;
    if (spec_parse((const char *)data, size, &m, err, sizeof err) != ENGINE_OK) {
        FUZZ_CHECK(m == NULL);
        FUZZ_CHECK(fuzz_err_written(err, sizeof err));
        return 0;
    }
    FUZZ_CHECK(m != NULL);
    /* The server indexes the last layer's shape, so a model always has one. */
    FUZZ_CHECK(m->n_layers >= 1 && m->n_layers <= SPEC_MAX_LAYERS);
    FUZZ_CHECK(m->input_rank == 1 || m->input_rank == 3);
    FUZZ_CHECK(m->max_batch_size >= 1 && m->max_batch_size <= SPEC_MAX_BATCH);
    FUZZ_CHECK(memchr(m->name, '\0', sizeof m->name) &&
               memchr(m->input_name, '\0', SPEC_MAX_NAME) &&
               memchr(m->output_name, '\0', SPEC_MAX_NAME));
    for (size_t i = 0; i < m->n_labels; i++)
        FUZZ_CHECK(m->labels && m->labels[i] && strlen(m->labels[i]) < SPEC_MAX_LABEL_LEN);
    if (m->weights)
        fuzz_touch(m->weights, strlen(m->weights));
    for (size_t i = 0; i < m->n_layers; i++) {
        const spec_layer *l = &m->layers[i];
        FUZZ_CHECK(memchr(l->name, '\0', SPEC_MAX_NAME) != NULL);
        FUZZ_CHECK(memchr(l->id, '\0', SPEC_MAX_NAME) != NULL);
        /* The graph is resolved: every reference is the input or an earlier layer, arities hold,
         * and every layer's output is read (the last one's by the model output). */
        FUZZ_CHECK(l->n_inputs >= spec_op_min_inputs(l->op) &&
                   l->n_inputs <= spec_op_max_inputs(l->op) && l->inputs);
        for (int k = 0; k < l->n_inputs; k++)
            FUZZ_CHECK(l->inputs[k] == SPEC_INPUT ||
                       (l->inputs[k] >= 0 && (size_t)l->inputs[k] < i));
        FUZZ_CHECK(m->consumers[i] >= 1);
        FUZZ_CHECK(spec_layer_params(&m->layers[i]) >= 0);
        FUZZ_CHECK(spec_op_name(m->layers[i].op) != NULL);
    }

    /* As at load time: any batch, free sides unknown. */
    int64_t in[SPEC_MAX_RANK] = {-1};
    int rank = m->input_rank + 1;
    for (int i = 0; i < m->input_rank; i++)
        in[i + 1] = m->input_dims[i];
    check_shapes(m, in, rank);
    /* A request: one sample, then a full batch, free sides filled in. */
    for (int i = 1; i < rank; i++)
        if (in[i] < 0)
            in[i] = FREE_SIDE;
    in[0] = 1;
    check_shapes(m, in, rank);
    in[0] = m->max_batch_size;
    check_shapes(m, in, rank);
    spec_destroy(m);
    return 0;
}
