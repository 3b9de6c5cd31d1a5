/* config.c - parses the settings table of config.h from defaults, environment and command line. */
#include "config.h"
#include "log.h"
#include "repository.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Sets one field from text; `source` names where the text came from for the error message. */
#define CONFIG_SET_STR(field, lo, hi) cfg->field = value;
#define CONFIG_SET_INT(field, lo, hi)                                                              \
    if (!parse_int(value, lo, hi, &cfg->field)) {                                                  \
        snprintf(err, errlen, "%s: '%s' is not an integer in [%lld, %lld]", source, value,         \
                 (long long)(lo), (long long)(hi));                                                \
        return false;                                                                              \
    }

static bool set_field(config *cfg, int index, const char *value, const char *source, char *err,
                      size_t errlen)
{
    int i = 0;
#define CONFIG_SET(field, flag, env, kind, def, lo, hi, help)                                      \
    if (i++ == index) {                                                                            \
        CONFIG_SET_##kind(field, lo, hi) return true;                                              \
    }
    CONFIG_MAP(CONFIG_SET)
#undef CONFIG_SET
    return false;
}

static const char *const flags[] = {
#define CONFIG_FLAG(field, flag, env, kind, def, lo, hi, help) flag,
    CONFIG_MAP(CONFIG_FLAG)
#undef CONFIG_FLAG
};
static const char *const envs[] = {
#define CONFIG_ENV(field, flag, env, kind, def, lo, hi, help) env,
    CONFIG_MAP(CONFIG_ENV)
#undef CONFIG_ENV
};
static const char *const defaults[] = {
#define CONFIG_DEF(field, flag, env, kind, def, lo, hi, help) def,
    CONFIG_MAP(CONFIG_DEF)
#undef CONFIG_DEF
};
static const char *const helps[] = {
#define CONFIG_HELP_TEXT(field, flag, env, kind, def, lo, hi, help) help,
    CONFIG_MAP(CONFIG_HELP_TEXT)
#undef CONFIG_HELP_TEXT
};
enum { CONFIG_COUNT = sizeof flags / sizeof flags[0] };

config_result config_parse(config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < CONFIG_COUNT; i++)
        if (!set_field(cfg, i, defaults[i], "default", err, errlen))
            return CONFIG_ERROR;
    for (int i = 0; i < CONFIG_COUNT; i++) {
        const char *v = getenv(envs[i]);
        if (v && !set_field(cfg, i, v, envs[i], err, errlen))
            return CONFIG_ERROR;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h"))
            return CONFIG_HELP;
        if (!strcmp(arg, "--version"))
            return CONFIG_VERSION;
        const char *value = NULL;
        int found = -1;
        for (int i = 0; i < CONFIG_COUNT && found < 0; i++) {
            size_t n = strlen(flags[i]);
            if (!strncmp(arg, flags[i], n) && arg[n] == '=') {
                found = i;
                value = arg + n + 1;
            } else if (!strcmp(arg, flags[i])) {
                found = i;
                if (a + 1 >= argc) {
                    snprintf(err, errlen, "%s needs a value", arg);
                    return CONFIG_ERROR;
                }
                value = argv[++a];
            }
        }
        if (found < 0) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", arg);
            return CONFIG_ERROR;
        }
        if (!set_field(cfg, found, value, flags[found], err, errlen))
            return CONFIG_ERROR;
    }
    log_level level;
    if (!log_level_parse(cfg->log_level, &level)) {
        snprintf(err, errlen, "--log-level: '%s' is not one of %s", cfg->log_level,
                 log_level_choices());
        return CONFIG_ERROR;
    }
    if (strcmp(cfg->ui, "on") && strcmp(cfg->ui, "off")) {
        snprintf(err, errlen, "--ui: '%s' is not on or off", cfg->ui);
        return CONFIG_ERROR;
    }
    repo_control control;
    if (!repo_control_parse(cfg->model_control, &control)) {
        snprintf(err, errlen, "--model-control: '%s' is not none, poll or explicit",
                 cfg->model_control);
        return CONFIG_ERROR;
    }
    return CONFIG_RUN;
}

void config_print_help(const char *prog)
{
    printf("usage: %s [options]\n\n"
           "convserve serves the models of a repository folder over HTTP (KServe v2 and\n"
           "TorchServe-style image predictions). Every option can also be set through the\n"
           "environment variable shown; options on the command line win.\n\n",
           prog);
    for (int i = 0; i < CONFIG_COUNT; i++)
        printf("  %-22s %-30s %s (default: %s)\n", flags[i], envs[i], helps[i],
               defaults[i][0] ? defaults[i] : "unset");
    printf("  %-22s %-30s %s\n", "--help", "", "print this help");
    printf("  %-22s %-30s %s\n", "--version", "", "print the version");
}
