/* jsonkind.h - the kinds of JSON value and how messages name them ("an integer", "a string"): one
 * table for the model.json and safetensors readers and the server's request parsers. */
#ifndef CONVSERVE_JSONKIND_H
#define CONVSERVE_JSONKIND_H

#include <jansson.h>

#define JSONKIND_MAP(XX)                                                                           \
    XX(JSONKIND_OBJECT, "an object")                                                               \
    XX(JSONKIND_ARRAY, "an array")                                                                 \
    XX(JSONKIND_STRING, "a string")                                                                \
    XX(JSONKIND_INTEGER, "an integer")                                                             \
    XX(JSONKIND_REAL, "a real number")                                                             \
    XX(JSONKIND_BOOLEAN, "a boolean")                                                              \
    XX(JSONKIND_NULL, "null")

typedef enum {
#define JSONKIND_ENUM(e, text) e,
    JSONKIND_MAP(JSONKIND_ENUM)
#undef JSONKIND_ENUM
} jsonkind;

/* "an integer", for messages that say what was found. */
static inline const char *jsonkind_name(jsonkind k)
{
    switch (k) {
#define JSONKIND_CASE(e, text)                                                                     \
    case e:                                                                                        \
        return text;
        JSONKIND_MAP(JSONKIND_CASE)
#undef JSONKIND_CASE
    }
    return "an unknown JSON value";
}

static inline jsonkind jsonkind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return JSONKIND_OBJECT;
    case JSON_ARRAY:
        return JSONKIND_ARRAY;
    case JSON_STRING:
        return JSONKIND_STRING;
    case JSON_INTEGER:
        return JSONKIND_INTEGER;
    case JSON_REAL:
        return JSONKIND_REAL;
    case JSON_TRUE:
    case JSON_FALSE:
        return JSONKIND_BOOLEAN;
    case JSON_NULL:
        break;
    }
    return JSONKIND_NULL;
}

/* The name of a value's kind: jsonkind_name(jsonkind_of(v)). */
static inline const char *jsonkind_describe(const json_t *v)
{
    return jsonkind_name(jsonkind_of(v));
}

#endif
