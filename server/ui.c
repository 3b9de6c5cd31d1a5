/* ui.c - serves the embedded browser page, API docs and their files (server/ui/, assets.txt).
 *
 * The files are static: they hold no model data and no key, and everything they show comes from
 * the public API, called by the browser with the user's own key. That is why they are answered
 * without the API key (the page must load to ask for it), and why the policy below can forbid
 * everything the page does not need. */
#include "ui.h"
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

enum {
    UI_MAX_HEADERS = 12,                  /* name/value pairs of one answer */
    UI_GZIP_WINDOW_BITS = 16 + MAX_WBITS, /* zlib: a gzip stream (header and trailer) */
};

/* Scripts, styles, fonts and fetches from this origin only; no inline script or style, no eval
 * (no 'unsafe-eval'), no plugins, no <base>, no form posts, no framing. Images may also be data:
 * URLs (Swagger UI's CSS icons) and blob: URLs (the preview of a picked file). */
static const char ui_csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                             "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
                             "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const ui_asset *ui_find(const config *cfg, const char *path)
{
    if (strcmp(cfg->ui, "on") != 0)
        return NULL;
    for (size_t i = 0; i < ui_assets_count; i++)
        if (!strcmp(ui_assets[i].path, path))
            return &ui_assets[i];
    return NULL;
}

/* True when the parameters of one Accept-Encoding entry (";q=0.5", up to the next comma) give it
 * a quality of zero ("q=0", "q=0.0", "q=0.000"), which means "not acceptable". */
static bool quality_is_zero(const char *p, size_t n)
{
    for (size_t i = 0; i + 2 <= n; i++) {
        if ((p[i] == 'q' || p[i] == 'Q') && p[i + 1] == '=' &&
            (i == 0 || p[i - 1] == ';' || p[i - 1] == ' ')) {
            size_t j = i + 2;
            if (j >= n || p[j] != '0')
                return false;
            for (j++; j < n && (p[j] == '.' || p[j] == '0'); j++)
                ;
            return j >= n || p[j] == ' ' || p[j] == ';' || p[j] == '\t';
        }
    }
    return false;
}

/* Whether gzip may be sent (RFC 9110 12.5.3): yes without Accept-Encoding (any coding is then
 * acceptable), and yes when it names gzip or "*" with a non-zero quality, unless it refuses gzip
 * by name (gzip;q=0). */
static bool accepts_gzip(const char *ae)
{
    if (!ae)
        return true;
    bool named = false, star = false, refused = false;
    for (const char *p = ae; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,;");
        size_t params = strcspn(p + n, ",");
        bool zero = quality_is_zero(p + n, params);
        if ((n == 4 && !strncasecmp(p, "gzip", 4)) || (n == 6 && !strncasecmp(p, "x-gzip", 6))) {
            named = named || !zero;
            refused = refused || zero;
        } else if (n == 1 && *p == '*') {
            star = !zero;
        }
        p += n + params;
    }
    return !refused && (named || star);
}

/* If-None-Match holds "*" or a list of entity tags; the weak comparison RFC 9110 asks for here
 * ignores a W/ prefix, so finding the quoted tag in the list is enough. */
static bool etag_matches(const char *inm, const char *etag)
{
    return !strcmp(inm, "*") || strstr(inm, etag) != NULL;
}

/* The file of a gzip-stored asset, inflated into a malloc'd buffer of a->size bytes (the caller
 * frees it), or NULL when out of memory. Only clients that refuse gzip need this; browsers never
 * do, so the binary keeps the large files compressed only. */
static char *inflate_asset(const ui_asset *a)
{
    char *dst = malloc(a->size ? a->size : 1);
    if (!dst)
        return NULL;
    z_stream zs = {.next_in = (Bytef *)a->data,
                   .avail_in = (uInt)a->len,
                   .next_out = (Bytef *)dst,
                   .avail_out = (uInt)a->size};
    int rc = Z_STREAM_ERROR;
    if (inflateInit2(&zs, UI_GZIP_WINDOW_BITS) == Z_OK) {
        rc = inflate(&zs, Z_FINISH);
        inflateEnd(&zs);
    }
    if (rc != Z_STREAM_END || zs.total_out != a->size) {
        free(dst);
        return NULL;
    }
    return dst;
}

enum MHD_Result ui_reply(request *rq)
{
    const ui_asset *a = rq->asset;
    const char *h[UI_MAX_HEADERS * 2 + 1];
    int n = 0;
    h[n++] = MHD_HTTP_HEADER_ETAG;
    h[n++] = a->etag;
    /* The paths do not change with the content, so the browser asks again each time and gets a
     * 304 while the binary is the same. */
    h[n++] = MHD_HTTP_HEADER_CACHE_CONTROL;
    h[n++] = "no-cache";
    h[n++] = "X-Content-Type-Options";
    h[n++] = "nosniff";
    h[n++] = "Cross-Origin-Resource-Policy";
    h[n++] = "same-origin";
    if (a->gzip) {
        h[n++] = MHD_HTTP_HEADER_VARY;
        h[n++] = MHD_HTTP_HEADER_ACCEPT_ENCODING;
    }
    if (a->page) {
        h[n++] = "Content-Security-Policy";
        h[n++] = ui_csp;
        h[n++] = "Referrer-Policy";
        h[n++] = "no-referrer";
        h[n++] = "X-Frame-Options"; /* frame-ancestors for browsers without CSP level 2 */
        h[n++] = "DENY";
        h[n++] = "Cross-Origin-Opener-Policy";
        h[n++] = "same-origin";
    }
    const char *inm =
        MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && etag_matches(inm, a->etag)) {
        h[n] = NULL;
        return reply_static(rq, MHD_HTTP_NOT_MODIFIED, NULL, NULL, 0, h);
    }
    if (a->gzip && !accepts_gzip(MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_ACCEPT_ENCODING))) {
        h[n] = NULL;
        char *body = inflate_asset(a);
        if (!body)
            return reply_error(rq, SRV_INTERNAL, "out of memory inflating %s", a->path);
        return reply_raw(rq, MHD_HTTP_OK, a->content_type, body, a->size, h);
    }
    if (a->gzip) {
        h[n++] = MHD_HTTP_HEADER_CONTENT_ENCODING;
        h[n++] = "gzip";
    }
    h[n] = NULL;
    return reply_static(rq, MHD_HTTP_OK, a->content_type, a->data, a->len, h);
}
