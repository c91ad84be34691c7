/*
 * LHTTP/1.0 codec.  See include/lhttp/codec.h for the contract.
 *
 * One forward pass over the input, memchr() for line ends, no allocation,
 * no copies: the result points into the caller's buffer.
 */
#include "lhttp/codec.h"

#include <stdint.h>
#include <string.h>

#define PREFIX "LHTTP/1.0 "
#define PREFIX_LEN (sizeof(PREFIX) - 1)

static int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

const char *lhttp_strerror(int status)
{
    switch (status) {
    case LHTTP_OK: return "ok";
    case LHTTP_E_ARGUMENT: return "invalid argument";
    case LHTTP_E_START_LINE: return "message does not start with \"LHTTP/1.0 \"";
    case LHTTP_E_COMMAND: return "invalid command";
    case LHTTP_E_HEADER: return "invalid header line";
    case LHTTP_E_TOO_MANY_HEADERS: return "too many headers";
    case LHTTP_E_UNTERMINATED: return "headers are not terminated by a blank line";
    case LHTTP_E_NO_SPACE: return "output buffer too small";
    case LHTTP_E_MULTIPART: return "invalid multipart offsets";
    case LHTTP_E_TOO_MANY_PARTS: return "too many multipart parts";
    case LHTTP_E_NOT_FOUND: return "no such header";
    case LHTTP_E_VALUE: return "header value has leading or trailing blanks";
    case LHTTP_E_URL: return "not a valid ws:// or wss:// URL";
    case LHTTP_E_NO_MEMORY: return "out of memory";
    case LHTTP_E_CONNECT: return "cannot connect";
    case LHTTP_E_CLOSED: return "connection closed";
    case LHTTP_E_TOO_LARGE: return "message too large";
    case LHTTP_E_TLS: return "TLS not available";
    default: return "unknown status";
    }
}

lhttp_str lhttp_cstr(const char *s)
{
    lhttp_str r;
    r.ptr = s ? s : "";
    r.len = s ? strlen(s) : 0;
    return r;
}

int lhttp_str_ieq(lhttp_str a, const char *b)
{
    size_t i;
    if (b == NULL)
        return 0;
    for (i = 0; i < a.len; i++) {
        if (b[i] == '\0' ||
            ascii_lower((unsigned char)a.ptr[i]) != ascii_lower((unsigned char)b[i]))
            return 0;
    }
    return b[a.len] == '\0';
}

/* Command token: non-empty, no spaces, no control characters. */
static int valid_command(const char *p, size_t len)
{
    size_t i;
    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == ' ' || is_ctl(c))
            return 0;
    }
    return 1;
}

/* Header name: non-empty, printable ASCII without ':' (as the server's codec). */
static int valid_name(const char *p, size_t len)
{
    size_t i;
    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x21 || c > 0x7e || c == ':')
            return 0;
    }
    return 1;
}

/* Header value: anything but NUL, CR and LF (as the server's codec). */
static int valid_value(const char *p, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\0' || c == '\r' || c == '\n')
            return 0;
    }
    return 1;
}

/*
 * Parse header lines from data[0..len) up to and including the blank line.
 * `*body_at` gets the offset of the first byte after the blank line.
 */
static int parse_headers(const char *data, size_t len, lhttp_header *headers,
                         size_t max_headers, size_t *count, size_t *body_at)
{
    size_t pos = 0;
    size_t n = 0;

    for (;;) {
        const char *line = data + pos;
        const char *nl = (const char *)memchr(line, '\n', len - pos);
        const char *colon;
        const char *vs;
        const char *ve;
        size_t line_len;

        if (nl == NULL)
            return LHTTP_E_UNTERMINATED;
        if (nl == line || nl[-1] != '\r')
            return LHTTP_E_HEADER; /* bare LF */
        line_len = (size_t)(nl - 1 - line);
        pos = (size_t)(nl + 1 - data);
        if (line_len == 0) {
            *count = n;
            *body_at = pos;
            return LHTTP_OK;
        }
        colon = (const char *)memchr(line, ':', line_len);
        if (colon == NULL || !valid_name(line, (size_t)(colon - line)))
            return LHTTP_E_HEADER;
        vs = colon + 1;
        ve = line + line_len;
        while (vs < ve && is_blank((unsigned char)*vs))
            vs++;
        while (ve > vs && is_blank((unsigned char)ve[-1]))
            ve--;
        if (!valid_value(vs, (size_t)(ve - vs)))
            return LHTTP_E_HEADER;
        if (n == max_headers)
            return LHTTP_E_TOO_MANY_HEADERS;
        headers[n].name.ptr = line;
        headers[n].name.len = (size_t)(colon - line);
        headers[n].value.ptr = vs;
        headers[n].value.len = (size_t)(ve - vs);
        n++;
    }
}

int lhttp_parse(const char *data, size_t len, lhttp_message *msg,
                lhttp_header *headers, size_t max_headers)
{
    const char *nl;
    const char *cmd;
    size_t cmd_len;
    size_t pos;
    size_t count = 0;
    size_t body_at = 0;
    int rc;

    if ((data == NULL && len > 0) || msg == NULL ||
        (headers == NULL && max_headers > 0))
        return LHTTP_E_ARGUMENT;
    if (len < PREFIX_LEN || memcmp(data, PREFIX, PREFIX_LEN) != 0)
        return LHTTP_E_START_LINE;

    cmd = data + PREFIX_LEN;
    nl = (const char *)memchr(cmd, '\n', len - PREFIX_LEN);
    if (nl == NULL)
        return LHTTP_E_UNTERMINATED;
    if (nl == cmd || nl[-1] != '\r')
        return LHTTP_E_COMMAND;
    cmd_len = (size_t)(nl - 1 - cmd);
    if (!valid_command(cmd, cmd_len))
        return LHTTP_E_COMMAND;
    pos = (size_t)(nl + 1 - data);

    rc = parse_headers(data + pos, len - pos, headers, max_headers, &count, &body_at);
    if (rc != LHTTP_OK)
        return rc;

    msg->command.ptr = cmd;
    msg->command.len = cmd_len;
    msg->headers = headers;
    msg->header_count = count;
    msg->body.ptr = data + pos + body_at;
    msg->body.len = len - pos - body_at;
    return LHTTP_OK;
}

const lhttp_str *lhttp_get_header(const lhttp_message *msg, const char *name)
{
    size_t i;
    if (msg == NULL || name == NULL)
        return NULL;
    for (i = 0; i < msg->header_count; i++) {
        if (lhttp_str_ieq(msg->headers[i].name, name))
            return &msg->headers[i].value;
    }
    return NULL;
}

lhttp_node_kind lhttp_node_kind_of(const lhttp_message *msg)
{
    const lhttp_str *value;
    if (msg == NULL || msg->header_count == 0 || !lhttp_str_ieq(msg->headers[0].name, "lhttp-node"))
        return LHTTP_FROM_CLIENT;
    value = &msg->headers[0].value;
    if (value->len == 5 && memcmp(value->ptr, "reply", 5) == 0)
        return LHTTP_NODE_REPLY;
    if (value->len == 5 && memcmp(value->ptr, "event", 5) == 0)
        return LHTTP_NODE_EVENT;
    if (value->len == 8 && memcmp(value->ptr, "position", 8) == 0)
        return LHTTP_NODE_POSITION;
    return LHTTP_FROM_CLIENT;
}

int lhttp_parse_u64(lhttp_str text, unsigned long long *value)
{
    unsigned long long result = 0;
    size_t i;
    if (value == NULL || text.len == 0 || text.len > 19 || text.ptr == NULL)
        return LHTTP_E_VALUE;
    for (i = 0; i < text.len; i++) {
        unsigned char c = (unsigned char)text.ptr[i];
        if (c < '0' || c > '9')
            return LHTTP_E_VALUE;
        result = result * 10 + (unsigned long long)(c - '0');
    }
    *value = result;
    return LHTTP_OK;
}

int lhttp_next_token(lhttp_str *rest, lhttp_str *token)
{
    const char *p;
    const char *end;
    const char *start;

    if (rest == NULL || token == NULL || rest->len == 0)
        return 0;
    p = rest->ptr;
    end = p + rest->len;
    while (p < end && is_blank((unsigned char)*p))
        p++;
    start = p;
    while (p < end && !is_blank((unsigned char)*p))
        p++;
    token->ptr = start;
    token->len = (size_t)(p - start);
    rest->ptr = p;
    rest->len = (size_t)(end - p);
    return token->len > 0;
}

/* Validate the headers of a message or part and add up their wire size. */
static int headers_size(const lhttp_header *headers, size_t count, size_t *size)
{
    size_t i;
    size_t total = 0;

    if (headers == NULL && count > 0)
        return LHTTP_E_ARGUMENT;
    for (i = 0; i < count; i++) {
        const lhttp_header *h = &headers[i];
        if ((h->name.ptr == NULL && h->name.len > 0) ||
            (h->value.ptr == NULL && h->value.len > 0))
            return LHTTP_E_ARGUMENT;
        if (!valid_name(h->name.ptr, h->name.len) ||
            !valid_value(h->value.ptr, h->value.len))
            return LHTTP_E_HEADER;
        if (h->value.len > 0 &&
            (is_blank((unsigned char)h->value.ptr[0]) ||
             is_blank((unsigned char)h->value.ptr[h->value.len - 1])))
            return LHTTP_E_VALUE;
        total += h->name.len + 1 + h->value.len + 2;
    }
    *size = total + 2; /* blank line */
    return LHTTP_OK;
}

static char *put(char *out, const char *p, size_t len)
{
    if (len > 0)
        memcpy(out, p, len);
    return out + len;
}

static char *put_headers(char *out, const lhttp_header *headers, size_t count)
{
    size_t i;
    for (i = 0; i < count; i++) {
        out = put(out, headers[i].name.ptr, headers[i].name.len);
        *out++ = ':';
        out = put(out, headers[i].value.ptr, headers[i].value.len);
        *out++ = '\r';
        *out++ = '\n';
    }
    *out++ = '\r';
    *out++ = '\n';
    return out;
}

int lhttp_serialized_size(const lhttp_message *msg, size_t *size)
{
    size_t hsize = 0;
    int rc;

    if (msg == NULL || size == NULL ||
        (msg->command.ptr == NULL && msg->command.len > 0) ||
        (msg->body.ptr == NULL && msg->body.len > 0))
        return LHTTP_E_ARGUMENT;
    if (!valid_command(msg->command.ptr, msg->command.len))
        return LHTTP_E_COMMAND;
    rc = headers_size(msg->headers, msg->header_count, &hsize);
    if (rc != LHTTP_OK)
        return rc;
    *size = PREFIX_LEN + msg->command.len + 2 + hsize + msg->body.len;
    return LHTTP_OK;
}

int lhttp_serialize(const lhttp_message *msg, char *out, size_t cap,
                    size_t *written)
{
    size_t need = 0;
    char *p;
    int rc;

    if (written == NULL || (out == NULL && cap > 0))
        return LHTTP_E_ARGUMENT;
    rc = lhttp_serialized_size(msg, &need);
    if (rc != LHTTP_OK)
        return rc;
    *written = need;
    if (need > cap)
        return LHTTP_E_NO_SPACE;
    p = put(out, PREFIX, PREFIX_LEN);
    p = put(p, msg->command.ptr, msg->command.len);
    *p++ = '\r';
    *p++ = '\n';
    p = put_headers(p, msg->headers, msg->header_count);
    put(p, msg->body.ptr, msg->body.len);
    return LHTTP_OK;
}

/* Parse one decimal offset token; values beyond `limit` are errors. */
static int parse_offset(lhttp_str token, size_t limit, size_t *value)
{
    size_t i;
    size_t v = 0;

    for (i = 0; i < token.len; i++) {
        unsigned char c = (unsigned char)token.ptr[i];
        size_t d;
        if (c < '0' || c > '9')
            return LHTTP_E_MULTIPART;
        d = (size_t)(c - '0');
        if (v > (SIZE_MAX - d) / 10)
            return LHTTP_E_MULTIPART;
        v = v * 10 + d;
        if (v >= limit)
            return LHTTP_E_MULTIPART;
    }
    *value = v;
    return LHTTP_OK;
}

/*
 * Walk the offsets of a multipart header value, checking them and calling
 * `each(ctx, start, end)` for every part.  Shared by the two public entry
 * points so the rules live in one place.
 */
typedef int (*part_fn)(void *ctx, size_t index, size_t start, size_t end);

static int walk_offsets(lhttp_str value, size_t body_len, part_fn each, void *ctx)
{
    lhttp_str rest = value;
    lhttp_str token;
    size_t index = 0;
    size_t prev = 0;
    int rc;

    if (value.ptr == NULL && value.len > 0)
        return LHTTP_E_ARGUMENT;
    while (lhttp_next_token(&rest, &token)) {
        size_t off = 0;
        rc = parse_offset(token, body_len, &off);
        if (rc != LHTTP_OK)
            return rc;
        if (index > 0) {
            if (off <= prev)
                return LHTTP_E_MULTIPART;
            rc = each(ctx, index - 1, prev, off);
            if (rc != LHTTP_OK)
                return rc;
        }
        prev = off;
        index++;
    }
    if (index == 0)
        return LHTTP_E_MULTIPART;
    return each(ctx, index - 1, prev, body_len);
}

struct offsets_ctx {
    size_t *offsets;
    size_t max;
    size_t count;
};

static int store_offset(void *vctx, size_t index, size_t start, size_t end)
{
    struct offsets_ctx *ctx = (struct offsets_ctx *)vctx;
    (void)end;
    if (index >= ctx->max)
        return LHTTP_E_TOO_MANY_PARTS;
    ctx->offsets[index] = start;
    ctx->count = index + 1;
    return LHTTP_OK;
}

int lhttp_multipart_offsets(lhttp_str value, size_t body_len, size_t *offsets,
                            size_t max_offsets, size_t *count)
{
    struct offsets_ctx ctx;
    int rc;

    if (count == NULL || (offsets == NULL && max_offsets > 0))
        return LHTTP_E_ARGUMENT;
    ctx.offsets = offsets;
    ctx.max = max_offsets;
    ctx.count = 0;
    *count = 0;
    rc = walk_offsets(value, body_len, store_offset, &ctx);
    if (rc == LHTTP_OK)
        *count = ctx.count;
    return rc;
}

struct parts_ctx {
    const char *body;
    lhttp_part *parts;
    size_t max_parts;
    lhttp_header *headers;
    size_t max_headers;
    size_t used_headers;
    size_t count;
};

static int split_part(void *vctx, size_t index, size_t start, size_t end)
{
    struct parts_ctx *ctx = (struct parts_ctx *)vctx;
    lhttp_part *part;
    size_t n = 0;
    size_t body_at = 0;
    int rc;

    if (index >= ctx->max_parts)
        return LHTTP_E_TOO_MANY_PARTS;
    part = &ctx->parts[index];
    rc = parse_headers(ctx->body + start, end - start,
                       ctx->headers ? ctx->headers + ctx->used_headers : NULL,
                       ctx->max_headers - ctx->used_headers, &n, &body_at);
    if (rc != LHTTP_OK)
        return rc;
    part->headers = ctx->headers ? ctx->headers + ctx->used_headers : NULL;
    part->header_count = n;
    part->body.ptr = ctx->body + start + body_at;
    part->body.len = end - start - body_at;
    ctx->used_headers += n;
    ctx->count = index + 1;
    return LHTTP_OK;
}

int lhttp_parse_multipart(const lhttp_message *msg, lhttp_part *parts,
                          size_t max_parts, lhttp_header *headers,
                          size_t max_headers, size_t *part_count)
{
    struct parts_ctx ctx;
    const lhttp_str *value;
    int rc;

    if (msg == NULL || part_count == NULL ||
        (parts == NULL && max_parts > 0) ||
        (headers == NULL && max_headers > 0) ||
        (msg->body.ptr == NULL && msg->body.len > 0))
        return LHTTP_E_ARGUMENT;
    *part_count = 0;
    value = lhttp_get_header(msg, "multipart");
    if (value == NULL)
        return LHTTP_E_NOT_FOUND;
    ctx.body = msg->body.ptr;
    ctx.parts = parts;
    ctx.max_parts = max_parts;
    ctx.headers = headers;
    ctx.max_headers = max_headers;
    ctx.used_headers = 0;
    ctx.count = 0;
    rc = walk_offsets(*value, msg->body.len, split_part, &ctx);
    if (rc == LHTTP_OK)
        *part_count = ctx.count;
    return rc;
}

/* Decimal digits of v. */
static size_t digits(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static char *put_decimal(char *out, size_t v)
{
    size_t n = digits(v);
    size_t i;
    for (i = n; i > 0; i--) {
        out[i - 1] = (char)('0' + v % 10);
        v /= 10;
    }
    return out + n;
}

int lhttp_serialize_multipart(const lhttp_part *parts, size_t count,
                              char *body, size_t body_cap, size_t *body_len,
                              char *offsets, size_t offsets_cap,
                              size_t *offsets_len)
{
    size_t i;
    size_t body_need = 0;
    size_t off_need = 0;
    char *b;
    char *o;
    int rc;

    if (body_len == NULL || offsets_len == NULL || count == 0 ||
        parts == NULL || (body == NULL && body_cap > 0) ||
        (offsets == NULL && offsets_cap > 0))
        return LHTTP_E_ARGUMENT;
    for (i = 0; i < count; i++) {
        size_t hsize = 0;
        if (parts[i].body.ptr == NULL && parts[i].body.len > 0)
            return LHTTP_E_ARGUMENT;
        rc = headers_size(parts[i].headers, parts[i].header_count, &hsize);
        if (rc != LHTTP_OK)
            return rc;
        off_need += (i > 0 ? 1 : 0) + digits(body_need);
        body_need += hsize + parts[i].body.len;
    }
    *body_len = body_need;
    *offsets_len = off_need;
    if (body_need > body_cap || off_need > offsets_cap)
        return LHTTP_E_NO_SPACE;
    b = body;
    o = offsets;
    for (i = 0; i < count; i++) {
        if (i > 0)
            *o++ = ' ';
        o = put_decimal(o, (size_t)(b - body));
        b = put_headers(b, parts[i].headers, parts[i].header_count);
        b = put(b, parts[i].body.ptr, parts[i].body.len);
    }
    return LHTTP_OK;
}

int lhttp_utf8_valid(const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;

    if (data == NULL)
        return len == 0;
    while (i < len) {
        unsigned char c = p[i];
        size_t n;
        unsigned long cp;
        size_t k;

        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i <= n)
            return 0;
        for (k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return 0;
        i += n + 1;
    }
    return 1;
}
