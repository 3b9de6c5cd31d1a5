/* ui.h - the browser page (/), the API docs (/docs) and their files, embedded into the binary. */
#ifndef CONVSERVE_UI_H
#define CONVSERVE_UI_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "request.h"

/* One embedded file. The table is generated at build time from server/ui/assets.txt by
 * server/ui/embed.cmake (ui_assets.c in the build folder), so it is constant data. */
typedef struct ui_asset {
    const char *path;          /* the URL path it is served at: "/", "/ui/app.js" */
    const char *content_type;  /* "text/html;charset=utf-8" */
    const unsigned char *data; /* the bytes sent: gzip-compressed when `gzip` is set */
    size_t len;
    size_t size;      /* of the file itself: len, or what the gzip stream inflates to */
    const char *etag; /* quoted; from a hash of the source file, so it changes with it */
    bool gzip;        /* sent with Content-Encoding: gzip (only large vendored files) */
    bool page;        /* an HTML document: sent with the Content-Security-Policy */
} ui_asset;

extern const ui_asset ui_assets[];
extern const size_t ui_assets_count;

/* The file served at exactly `path` (MHD has already cut the query string off), or NULL when
 * there is none or the settings say --ui off. The pointer is to static data. Thread-safe. */
const ui_asset *ui_find(const config *cfg, const char *path);

/* Answers a GET or HEAD of rq->asset: 200 with the file (inflated for a client whose
 * Accept-Encoding refuses gzip), or 304 when If-None-Match names its ETag. Every answer
 * carries the ETag, Cache-Control: no-cache and nosniff; pages also the Content-Security-Policy
 * (no inline script or style, no eval, nothing from another origin), Referrer-Policy and
 * frame-ancestors 'none'. */
enum MHD_Result ui_reply(request *rq);

#endif
