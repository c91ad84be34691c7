/*
 * libFuzzer target for the codec.  For any input: parsing never crashes or
 * reads out of bounds; whatever parses serializes and parses back to the same
 * message; a multipart body that splits rebuilds into parts that split the
 * same way.  abort() marks a broken property.
 */
#include "lhttp/codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 32
#define MAX_PARTS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same_str(lhttp_str a, lhttp_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static int same_headers(const lhttp_header *a, const lhttp_header *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (!same_str(a[i].name, b[i].name) || !same_str(a[i].value, b[i].value))
            return 0;
    }
    return 1;
}

static void check_multipart(const lhttp_message *msg)
{
    lhttp_part parts[MAX_PARTS];
    lhttp_header part_headers[MAX_HEADERS];
    lhttp_part again[MAX_PARTS];
    lhttp_header again_headers[MAX_HEADERS];
    lhttp_header header;
    lhttp_message rebuilt;
    size_t offsets[MAX_PARTS];
    size_t count = 0;
    size_t offsets_count = 0;
    size_t body_len = 0;
    size_t offsets_len = 0;
    size_t i;
    char *body;
    char *offset_text;
    int rc;

    rc = lhttp_parse_multipart(msg, parts, MAX_PARTS, part_headers, MAX_HEADERS, &count);
    if (rc != LHTTP_OK)
        return;
    if (lhttp_multipart_offsets(*lhttp_get_header(msg, "multipart"), msg->body.len,
                                offsets, MAX_PARTS, &offsets_count) != LHTTP_OK ||
        offsets_count != count || count == 0)
        abort();

    rc = lhttp_serialize_multipart(parts, count, NULL, 0, &body_len, NULL, 0, &offsets_len);
    if (rc != LHTTP_E_NO_SPACE || body_len > msg->body.len)
        abort();
    body = (char *)malloc(body_len);
    offset_text = (char *)malloc(offsets_len);
    if (body == NULL || offset_text == NULL)
        abort();
    if (lhttp_serialize_multipart(parts, count, body, body_len, &body_len,
                                  offset_text, offsets_len, &offsets_len) != LHTTP_OK)
        abort();

    header.name = lhttp_cstr("multipart");
    header.value.ptr = offset_text;
    header.value.len = offsets_len;
    rebuilt.command = msg->command;
    rebuilt.headers = &header;
    rebuilt.header_count = 1;
    rebuilt.body.ptr = body;
    rebuilt.body.len = body_len;
    if (lhttp_parse_multipart(&rebuilt, again, MAX_PARTS, again_headers, MAX_HEADERS,
                              &offsets_count) != LHTTP_OK || offsets_count != count)
        abort();
    for (i = 0; i < count; i++) {
        if (again[i].header_count != parts[i].header_count ||
            !same_headers(again[i].headers, parts[i].headers, parts[i].header_count) ||
            !same_str(again[i].body, parts[i].body))
            abort();
    }
    free(body);
    free(offset_text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lhttp_header headers[MAX_HEADERS];
    lhttp_header again_headers[MAX_HEADERS];
    lhttp_message msg;
    lhttp_message again;
    const char *text = (const char *)data;
    size_t need = 0;
    size_t written = 0;
    char *out;

    (void)lhttp_utf8_valid(text, size);
    if (lhttp_parse(text, size, &msg, headers, MAX_HEADERS) != LHTTP_OK)
        return 0;

    /* Stripping blanks around values can only shrink the message. */
    if (lhttp_serialized_size(&msg, &need) != LHTTP_OK || need > size)
        abort();
    out = (char *)malloc(need ? need : 1);
    if (out == NULL)
        abort();
    if (lhttp_serialize(&msg, out, need, &written) != LHTTP_OK || written != need)
        abort();
    if (lhttp_parse(out, written, &again, again_headers, MAX_HEADERS) != LHTTP_OK ||
        !same_str(again.command, msg.command) ||
        again.header_count != msg.header_count ||
        !same_headers(again.headers, msg.headers, msg.header_count) ||
        !same_str(again.body, msg.body))
        abort();
    /* Canonical input (no blanks around values) round-trips byte for byte. */
    if (written == size && memcmp(out, text, size) != 0)
        abort();
    free(out);

    if (lhttp_get_header(&msg, "multipart") != NULL)
        check_multipart(&msg);
    return 0;
}
