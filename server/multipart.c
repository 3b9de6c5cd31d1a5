/* multipart.c - splits a multipart/form-data body into part views without copying or allocating. */
#include "multipart.h"

#include <stdbool.h>
#include <string.h>

/* "--" opens every boundary line and also follows the last one. */
#define DASHES "--"
enum {
    DASHES_LEN = 2,
    /* How much of a rejected Content-Type or Content-Disposition value an error message quotes. */
    QUOTE_MAX = 64,
};

/* A slice of the input; never NUL-terminated. */
typedef struct {
    const char *p;
    size_t n;
} view;

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive comparison of a view with a lowercase literal, independent of the locale. */
static bool view_ieq(view v, const char *lit)
{
    size_t n = strlen(lit);
    if (v.n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(v.p[i]) != lit[i])
            return false;
    return true;
}

static view view_trim(view v)
{
    while (v.n > 0 && is_ows(v.p[0])) {
        v.p++;
        v.n--;
    }
    while (v.n > 0 && is_ows(v.p[v.n - 1]))
        v.n--;
    return v;
}

/* The characters RFC 2046 allows in a boundary (bcharsnospace, plus space if not last). */
static bool is_bchar(char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("'()+_,-./:=? ", c) != NULL;
}

typedef enum { PARAM_END, PARAM_FOUND, PARAM_MALFORMED } param_result;

/* Reads the next `; name=value` parameter of a header value from s[*pos..n). The value is a token
 * (up to ';' or white space) or a quoted string, returned without its quotes. A backslash is not
 * an escape inside quotes: browsers and curl percent-encode '"' in file names instead, and
 * treating '\' as an escape would misread Windows paths. */
static param_result next_param(const char *s, size_t n, size_t *pos, view *name, view *value)
{
    size_t i = *pos;
    while (i < n && is_ows(s[i]))
        i++;
    if (i == n)
        return PARAM_END;
    if (s[i] != ';')
        return PARAM_MALFORMED;
    i++;
    while (i < n && is_ows(s[i]))
        i++;
    /* A trailing ';' with nothing after it is harmless and common. */
    if (i == n)
        return PARAM_END;

    size_t start = i;
    while (i < n && s[i] != '=' && s[i] != ';' && !is_ows(s[i]))
        i++;
    name->p = s + start;
    name->n = i - start;
    while (i < n && is_ows(s[i]))
        i++;
    if (name->n == 0 || i == n || s[i] != '=')
        return PARAM_MALFORMED;
    i++;
    while (i < n && is_ows(s[i]))
        i++;

    if (i < n && s[i] == '"') {
        i++;
        start = i;
        while (i < n && s[i] != '"')
            i++;
        if (i == n)
            return PARAM_MALFORMED;
        value->p = s + start;
        value->n = i - start;
        i++;
    } else {
        start = i;
        while (i < n && s[i] != ';' && !is_ows(s[i]))
            i++;
        value->p = s + start;
        value->n = i - start;
    }
    *pos = i;
    return PARAM_FOUND;
}

srv_status multipart_boundary(const char *content_type, char *out, size_t cap, char *err,
                              size_t errlen)
{
    if (!content_type)
        return srv_fail(err, errlen, SRV_MEDIA_TYPE,
                        "expected Content-Type multipart/form-data, got none");
    size_t n = strlen(content_type);
    size_t i = 0;
    while (i < n && is_ows(content_type[i]))
        i++;
    size_t type_start = i;
    while (i < n && content_type[i] != ';' && !is_ows(content_type[i]))
        i++;
    view type = {content_type + type_start, i - type_start};
    if (!view_ieq(type, "multipart/form-data"))
        return srv_fail(err, errlen, SRV_MEDIA_TYPE,
                        "expected Content-Type multipart/form-data, got '%.*s'",
                        (int)(type.n < QUOTE_MAX ? type.n : QUOTE_MAX), type.p);

    view boundary = {NULL, 0};
    view name, value;
    param_result r;
    while ((r = next_param(content_type, n, &i, &name, &value)) == PARAM_FOUND) {
        if (!view_ieq(name, "boundary"))
            continue;
        if (boundary.p)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "multipart Content-Type has more than one boundary parameter");
        boundary = value;
    }
    if (r == PARAM_MALFORMED)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "multipart Content-Type has a malformed parameter list: '%.*s'",
                        (int)(n - type_start < QUOTE_MAX ? n - type_start : QUOTE_MAX),
                        content_type + type_start);
    if (!boundary.p)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "multipart Content-Type has no boundary parameter");
    if (boundary.n == 0 || boundary.n > MULTIPART_MAX_BOUNDARY)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "multipart boundary must be 1 to %d characters long, got %zu",
                        MULTIPART_MAX_BOUNDARY, boundary.n);
    for (size_t k = 0; k < boundary.n; k++)
        if (!is_bchar(boundary.p[k]))
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "multipart boundary has character %d at position %zu, which RFC 2046 "
                            "does not allow",
                            (unsigned char)boundary.p[k], k);
    if (boundary.p[boundary.n - 1] == ' ')
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "multipart boundary ends with a space");
    if (!out || cap < boundary.n + 1)
        return srv_fail(err, errlen, SRV_INTERNAL,
                        "multipart_boundary: output buffer of %zu bytes is too small", cap);
    memcpy(out, boundary.p, boundary.n);
    out[boundary.n] = '\0';
    return SRV_OK;
}

/* The body and its dash-boundary ("--" + boundary), which delimits parts where it opens a line. */
typedef struct {
    const uint8_t *body;
    size_t len;
    char dash[DASHES_LEN + MULTIPART_MAX_BOUNDARY];
    size_t dash_len;
} parser;

/* Whether "--boundary" starts at body[pos] (bounds-checked). */
static bool dash_boundary_at(const parser *ps, size_t pos)
{
    return pos <= ps->len && ps->len - pos >= ps->dash_len &&
           memcmp(ps->body + pos, ps->dash, ps->dash_len) == 0;
}

/* The position of the first "\n--boundary" at or after `from`, or ps->len if there is none. The
 * search is bounded by the explicit length, so NUL bytes in binary parts are ordinary data. */
static size_t find_delimiter(const parser *ps, size_t from)
{
    size_t pos = from;
    while (pos < ps->len) {
        const uint8_t *nl = memchr(ps->body + pos, '\n', ps->len - pos);
        if (!nl)
            return ps->len;
        pos = (size_t)(nl - ps->body);
        if (dash_boundary_at(ps, pos + 1))
            return pos;
        pos++;
    }
    return ps->len;
}

typedef enum { LINE_NEXT, LINE_CLOSE, LINE_TRUNCATED, LINE_JUNK } line_result;

/* Classifies what follows a "--boundary" that ends at `pos`: "--" closes the body; optional
 * transport padding (spaces, tabs) and a line end (CRLF or LF) open the next part, which starts
 * at *next. */
static line_result boundary_line_end(const parser *ps, size_t pos, size_t *next)
{
    const uint8_t *b = ps->body;
    if (ps->len - pos >= DASHES_LEN && memcmp(b + pos, DASHES, DASHES_LEN) == 0)
        return LINE_CLOSE;
    /* A lone '-' at the very end is a closing boundary cut short, not a malformed one. */
    if (ps->len - pos == 1 && b[pos] == '-')
        return LINE_TRUNCATED;
    while (pos < ps->len && is_ows((char)b[pos]))
        pos++;
    if (pos < ps->len && b[pos] == '\r')
        pos++;
    if (pos == ps->len)
        return LINE_TRUNCATED;
    if (b[pos] != '\n')
        return LINE_JUNK;
    *next = pos + 1;
    return LINE_NEXT;
}

/* Reads one header line of part `index` and records Content-Disposition and Content-Type. */
static srv_status parse_header(view line, size_t index, multipart_part *part, char *err,
                               size_t errlen)
{
    const char *colon = memchr(line.p, ':', line.n);
    if (!colon || colon == line.p || is_ows(line.p[0]))
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "multipart part %zu has a malformed header line: '%.*s'", index,
                        (int)(line.n < QUOTE_MAX ? line.n : QUOTE_MAX), line.p);
    view name = view_trim((view){line.p, (size_t)(colon - line.p)});
    view value = view_trim((view){colon + 1, line.n - (size_t)(colon - line.p) - 1});

    if (view_ieq(name, "content-type")) {
        part->content_type = value.p;
        part->content_type_len = value.n;
        return SRV_OK;
    }
    if (!view_ieq(name, "content-disposition"))
        return SRV_OK;

    size_t i = 0;
    while (i < value.n && value.p[i] != ';' && !is_ows(value.p[i]))
        i++;
    if (!view_ieq((view){value.p, i}, "form-data"))
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "multipart part %zu has Content-Disposition '%.*s'; expected form-data",
                        index, (int)(value.n < QUOTE_MAX ? value.n : QUOTE_MAX), value.p);
    view pname, pvalue;
    param_result r;
    while ((r = next_param(value.p, value.n, &i, &pname, &pvalue)) == PARAM_FOUND) {
        if (view_ieq(pname, "name") && !part->name) {
            part->name = pvalue.p;
            part->name_len = pvalue.n;
        } else if (view_ieq(pname, "filename") && !part->filename) {
            part->filename = pvalue.p;
            part->filename_len = pvalue.n;
        }
    }
    if (r == PARAM_MALFORMED)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "multipart part %zu has a malformed Content-Disposition: '%.*s'", index,
                        (int)(value.n < QUOTE_MAX ? value.n : QUOTE_MAX), value.p);
    return SRV_OK;
}

/* Reads the header block of part `index` starting at *pos, up to and including its blank line,
 * and leaves *pos on the first byte of the part's data. */
static srv_status parse_headers(const parser *ps, size_t *pos, size_t index, multipart_part *part,
                                char *err, size_t errlen)
{
    const size_t start = *pos;
    size_t line = start;
    for (;;) {
        /* A line that is a boundary means the part ended inside its headers. */
        if (line == ps->len || dash_boundary_at(ps, line))
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "multipart part %zu has no blank line after its headers", index);
        const uint8_t *nl = memchr(ps->body + line, '\n', ps->len - line);
        size_t end = nl ? (size_t)(nl - ps->body) : ps->len;
        view text = {(const char *)ps->body + line, end - line};
        if (text.n > 0 && text.p[text.n - 1] == '\r')
            text.n--;
        if (nl && text.n == 0) {
            *pos = end + 1;
            return SRV_OK;
        }
        /* The block counts its header lines with their line ends, not the blank line. */
        if (end + 1 - start > MULTIPART_MAX_HEADERS)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "multipart part %zu has a header block over %d bytes", index,
                            MULTIPART_MAX_HEADERS);
        if (!nl)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "multipart part %zu has no blank line after its headers", index);
        srv_status st = parse_header(text, index, part, err, errlen);
        if (st != SRV_OK)
            return st;
        line = end + 1;
    }
}

srv_status multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                           multipart_part *parts, size_t max_parts, size_t *nparts, char *err,
                           size_t errlen)
{
    if (nparts)
        *nparts = 0;
    size_t blen = boundary ? strlen(boundary) : 0;
    if (blen == 0 || blen > MULTIPART_MAX_BOUNDARY || !nparts || (!parts && max_parts > 0))
        return srv_fail(err, errlen, SRV_INTERNAL, "multipart_parse: invalid arguments");
    if (!body)
        len = 0;

    parser ps = {.body = body, .len = len, .dash_len = DASHES_LEN + blen};
    memcpy(ps.dash, DASHES, DASHES_LEN);
    memcpy(ps.dash + DASHES_LEN, boundary, blen);

    /* The first boundary opens the body or follows a preamble that ends with a line end. */
    size_t pos;
    if (dash_boundary_at(&ps, 0)) {
        pos = ps.dash_len;
    } else {
        size_t nl = find_delimiter(&ps, 0);
        if (nl == len)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "multipart body does not start with the boundary");
        pos = nl + 1 + ps.dash_len;
    }

    size_t count = 0;
    for (;;) {
        size_t next = 0;
        switch (boundary_line_end(&ps, pos, &next)) {
        case LINE_CLOSE:
            /* Whatever follows the closing boundary is the epilogue and is ignored. */
            if (count == 0)
                return srv_fail(err, errlen, SRV_BAD_REQUEST, "multipart body has no parts");
            *nparts = count;
            return SRV_OK;
        case LINE_TRUNCATED:
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "multipart body has no closing boundary");
        case LINE_JUNK:
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "multipart boundary line %zu has unexpected bytes after the boundary",
                            count + 1);
        case LINE_NEXT:
            break;
        }
        if (next == len)
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "multipart body has no closing boundary");
        if (count == max_parts)
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "multipart body has more than %zu parts",
                            max_parts);

        multipart_part part = {0};
        pos = next;
        srv_status st = parse_headers(&ps, &pos, count + 1, &part, err, errlen);
        if (st != SRV_OK)
            return st;

        /* The data runs to the line end before the next boundary. Searching from the blank
         * line's own '\n' lets that line end double as the delimiter's, i.e. an empty part. */
        size_t nl = find_delimiter(&ps, pos - 1);
        if (nl == len)
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "multipart body has no closing boundary");
        /* The CR of a CRLF before the boundary belongs to the delimiter. (In a bare-LF body, data
         * that itself ends in CR loses it: the two cannot be told apart.) */
        size_t data_end = nl;
        if (data_end > pos && body[data_end - 1] == '\r')
            data_end--;
        if (data_end < pos)
            data_end = pos;
        part.data = body + pos;
        part.len = data_end - pos;
        parts[count++] = part;
        pos = nl + 1 + ps.dash_len;
    }
}
