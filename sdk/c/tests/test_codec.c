/*
 * Unit tests for the codec: the SPEC section 1 vectors, round trips, every
 * error code, multipart.  Inputs are copied into exact-size heap buffers so
 * AddressSanitizer reports any read past the end.
 */
#include "lhttp/codec.h"
#include "check.h"

#include <stdlib.h>

#define VECTOR1 "LHTTP/1.0 chat\r\ncontent-type:json\r\npublish:channel_jack\r\n\r\n{\"to\":\"jack\"}"
#define VECTOR2 "LHTTP/1.0 subpub\r\nsubscribe:channelID1 channelID2 channelID3\r\n\r\n"
#define VECTOR3 "LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2"

static char *exact_copy(const char *s, size_t len)
{
    char *p = (char *)malloc(len ? len : 1);
    if (p == NULL)
        abort();
    if (len)
        memcpy(p, s, len);
    return p;
}

/* Parse `len` bytes of `s` from an exact-size heap copy. */
static int parse_exact(const char *s, size_t len, lhttp_message *msg,
                       lhttp_header *headers, size_t max, char **owned)
{
    *owned = exact_copy(s, len);
    return lhttp_parse(*owned, len, msg, headers, max);
}

static int parse_error(const char *s)
{
    lhttp_header headers[8];
    lhttp_message msg;
    char *owned;
    int rc = parse_exact(s, strlen(s), &msg, headers, 8, &owned);
    free(owned);
    return rc;
}

/* serialize(parse(s)) == s */
static void check_round_trip(const char *s)
{
    lhttp_header headers[8];
    lhttp_message msg;
    char out[256];
    size_t written = 0;
    char *owned;

    CHECK_EQ_INT(parse_exact(s, strlen(s), &msg, headers, 8, &owned), LHTTP_OK);
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_OK);
    CHECK_EQ_INT(written, strlen(s));
    CHECK(memcmp(out, s, strlen(s)) == 0);
    free(owned);
}

static void test_vector1(void)
{
    lhttp_header headers[4];
    lhttp_message msg;
    char *owned;

    CHECK_EQ_INT(parse_exact(VECTOR1, strlen(VECTOR1), &msg, headers, 4, &owned), LHTTP_OK);
    CHECK_STR(msg.command, "chat");
    CHECK_EQ_INT(msg.header_count, 2);
    CHECK(msg.headers == headers);
    CHECK_STR(headers[0].name, "content-type");
    CHECK_STR(headers[0].value, "json");
    CHECK_STR(headers[1].name, "publish");
    CHECK_STR(headers[1].value, "channel_jack");
    CHECK_STR(msg.body, "{\"to\":\"jack\"}");
    CHECK(lhttp_get_header(&msg, "Content-Type") == &headers[0].value);
    CHECK(lhttp_get_header(&msg, "PUBLISH") == &headers[1].value);
    CHECK(lhttp_get_header(&msg, "subscribe") == NULL);
    CHECK(lhttp_get_header(&msg, "publis") == NULL);
    free(owned);
    check_round_trip(VECTOR1);
}

static void test_vector2(void)
{
    lhttp_header headers[4];
    lhttp_message msg;
    lhttp_str rest;
    lhttp_str token;
    const char *expected[] = {"channelID1", "channelID2", "channelID3"};
    int n = 0;
    char *owned;

    CHECK_EQ_INT(parse_exact(VECTOR2, strlen(VECTOR2), &msg, headers, 4, &owned), LHTTP_OK);
    CHECK_STR(msg.command, "subpub");
    CHECK_EQ_INT(msg.header_count, 1);
    CHECK_STR(headers[0].name, "subscribe");
    CHECK_EQ_INT(msg.body.len, 0);
    rest = *lhttp_get_header(&msg, "subscribe");
    while (lhttp_next_token(&rest, &token)) {
        CHECK(n < 3);
        if (n < 3)
            CHECK_STR(token, expected[n]);
        n++;
    }
    CHECK_EQ_INT(n, 3);
    free(owned);
    check_round_trip(VECTOR2);
}

static void test_vector3(void)
{
    lhttp_header headers[4];
    lhttp_header part_headers[4];
    lhttp_part parts[4];
    lhttp_message msg;
    size_t offsets[4];
    size_t count = 0;
    char *owned;

    CHECK_EQ_INT(parse_exact(VECTOR3, strlen(VECTOR3), &msg, headers, 4, &owned), LHTTP_OK);
    CHECK_STR(msg.command, "upload");
    CHECK_EQ_INT(msg.header_count, 1);
    CHECK_STR(headers[0].name, "multipart");
    CHECK_STR(headers[0].value, "0 14");

    CHECK_EQ_INT(lhttp_multipart_offsets(headers[0].value, msg.body.len, offsets, 4, &count), LHTTP_OK);
    CHECK_EQ_INT(count, 2);
    CHECK_EQ_INT(offsets[0], 0);
    CHECK_EQ_INT(offsets[1], 14);

    CHECK_EQ_INT(lhttp_parse_multipart(&msg, parts, 4, part_headers, 4, &count), LHTTP_OK);
    CHECK_EQ_INT(count, 2);
    CHECK_EQ_INT(parts[0].header_count, 1);
    CHECK_STR(parts[0].headers[0].name, "k1");
    CHECK_STR(parts[0].headers[0].value, "v1");
    CHECK_STR(parts[0].body, "body1");
    CHECK_EQ_INT(parts[1].header_count, 1);
    CHECK_STR(parts[1].headers[0].name, "k2");
    CHECK_STR(parts[1].headers[0].value, "v2");
    CHECK_STR(parts[1].body, "body2");
    free(owned);
    check_round_trip(VECTOR3);
}

static void test_header_syntax(void)
{
    lhttp_header headers[8];
    lhttp_message msg;
    const char *s = "LHTTP/1.0 x\r\nPublish: \t a b \t\r\nupstream:GET http://h:80/p\r\nempty:\r\n\r\nline1\r\n\r\nline2";
    char *owned;

    CHECK_EQ_INT(parse_exact(s, strlen(s), &msg, headers, 8, &owned), LHTTP_OK);
    CHECK_EQ_INT(msg.header_count, 3);
    CHECK_STR(headers[0].name, "Publish");
    CHECK_STR(headers[0].value, "a b");
    CHECK_STR(*lhttp_get_header(&msg, "publish"), "a b");
    CHECK_STR(headers[1].value, "GET http://h:80/p");
    CHECK_STR(headers[2].name, "empty");
    CHECK_STR(headers[2].value, "");
    CHECK_STR(msg.body, "line1\r\n\r\nline2");
    free(owned);

    /* The first header wins for duplicates; order is kept. */
    s = "LHTTP/1.0 x\r\na:1\r\nA:2\r\n\r\n";
    CHECK_EQ_INT(parse_exact(s, strlen(s), &msg, headers, 8, &owned), LHTTP_OK);
    CHECK_STR(*lhttp_get_header(&msg, "a"), "1");
    CHECK_STR(headers[1].value, "2");
    free(owned);

    /* Commands may carry UTF-8. */
    s = "LHTTP/1.0 \xe8\x81\x8a\xe5\xa4\xa9\r\n\r\n";
    CHECK_EQ_INT(parse_exact(s, strlen(s), &msg, headers, 8, &owned), LHTTP_OK);
    CHECK_STR(msg.command, "\xe8\x81\x8a\xe5\xa4\xa9");
    free(owned);

    /* No headers array at all is fine for a message without headers. */
    s = "LHTTP/1.0 ping\r\n\r\n";
    CHECK_EQ_INT(lhttp_parse(s, strlen(s), &msg, NULL, 0), LHTTP_OK);
    CHECK_EQ_INT(msg.header_count, 0);
    CHECK_EQ_INT(msg.body.len, 0);
}

static void test_parse_errors(void)
{
    lhttp_header headers[2];
    lhttp_message msg;
    const char *s;
    char *owned;
    size_t i;

    CHECK_EQ_INT(parse_error(""), LHTTP_E_START_LINE);
    CHECK_EQ_INT(parse_error("LHTTP/1.0"), LHTTP_E_START_LINE);
    CHECK_EQ_INT(parse_error("LHTTP/1.1 chat\r\n\r\n"), LHTTP_E_START_LINE);
    CHECK_EQ_INT(parse_error("lhttp/1.0 chat\r\n\r\n"), LHTTP_E_START_LINE);
    CHECK_EQ_INT(parse_error("GET / HTTP/1.1\r\n\r\n"), LHTTP_E_START_LINE);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 \r\n\r\n"), LHTTP_E_COMMAND);
    CHECK_EQ_INT(parse_error("LHTTP/1.0  chat\r\n\r\n"), LHTTP_E_COMMAND);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 a b\r\n\r\n"), LHTTP_E_COMMAND);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 a\tb\r\n\r\n"), LHTTP_E_COMMAND);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\n\r\n"), LHTTP_E_COMMAND);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat"), LHTTP_E_UNTERMINATED);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\n"), LHTTP_E_UNTERMINATED);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\na:b\r\n"), LHTTP_E_UNTERMINATED);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\na:b\r\n\r"), LHTTP_E_UNTERMINATED);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\nnocolon\r\n\r\n"), LHTTP_E_HEADER);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\n:value\r\n\r\n"), LHTTP_E_HEADER);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\na:b\n\r\n"), LHTTP_E_HEADER);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\na:b\rc\r\n\r\n"), LHTTP_E_HEADER);
    {
        static const char nul[] = "LHTTP/1.0 chat\r\na:b\0c\r\n\r\n";
        lhttp_header h[2];
        CHECK_EQ_INT(lhttp_parse(nul, sizeof nul - 1, &msg, h, 2), LHTTP_E_HEADER);
    }
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\na\x01:b\r\n\r\n"), LHTTP_E_HEADER);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\na b:c\r\n\r\n"), LHTTP_E_HEADER);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\nname :c\r\n\r\n"), LHTTP_E_HEADER);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\n\xc3\xa9:c\r\n\r\n"), LHTTP_E_HEADER);
    /* Values may hold other control bytes and any other bytes, as the server allows. */
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\na:b\x01\x7f\xc3\xa9\r\n\r\n"), LHTTP_OK);
    CHECK_EQ_INT(parse_error("LHTTP/1.0 chat\r\n\n"), LHTTP_E_HEADER);

    s = "LHTTP/1.0 chat\r\na:1\r\nb:2\r\nc:3\r\n\r\n";
    CHECK_EQ_INT(parse_exact(s, strlen(s), &msg, headers, 2, &owned), LHTTP_E_TOO_MANY_HEADERS);
    free(owned);
    CHECK_EQ_INT(lhttp_parse(s, strlen(s), NULL, headers, 2), LHTTP_E_ARGUMENT);
    CHECK_EQ_INT(lhttp_parse(NULL, 3, &msg, headers, 2), LHTTP_E_ARGUMENT);
    CHECK_EQ_INT(lhttp_parse(s, strlen(s), &msg, NULL, 2), LHTTP_E_ARGUMENT);

    /* Every strict prefix of a vector ending inside the headers is an error. */
    for (i = 0; i < strlen(VECTOR1) - strlen("{\"to\":\"jack\"}") - 1; i++) {
        lhttp_header h[4];
        CHECK(parse_exact(VECTOR1, i, &msg, h, 4, &owned) < 0);
        free(owned);
    }
}

static void test_serialize(void)
{
    lhttp_header headers[2];
    lhttp_message msg;
    char out[128];
    size_t written = 0;
    const char *expected = "LHTTP/1.0 chat\r\npublish:room\r\nnick:ann\r\n\r\nhi\r\nthere";

    headers[0].name = lhttp_cstr("publish");
    headers[0].value = lhttp_cstr("room");
    headers[1].name = lhttp_cstr("nick");
    headers[1].value = lhttp_cstr("ann");
    msg.command = lhttp_cstr("chat");
    msg.headers = headers;
    msg.header_count = 2;
    msg.body = lhttp_cstr("hi\r\nthere");

    CHECK_EQ_INT(lhttp_serialized_size(&msg, &written), LHTTP_OK);
    CHECK_EQ_INT(written, strlen(expected));
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_OK);
    CHECK_EQ_INT(written, strlen(expected));
    CHECK(memcmp(out, expected, written) == 0);

    /* Too small: nothing promised about `out`, but the size needed is told. */
    written = 0;
    CHECK_EQ_INT(lhttp_serialize(&msg, out, 10, &written), LHTTP_E_NO_SPACE);
    CHECK_EQ_INT(written, strlen(expected));
    CHECK_EQ_INT(lhttp_serialize(&msg, NULL, 0, &written), LHTTP_E_NO_SPACE);

    headers[1].value = lhttp_cstr(" ann");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_VALUE);
    headers[1].value = lhttp_cstr("ann\t");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_VALUE);
    headers[1].value = lhttp_cstr("a\r\nb:c");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_HEADER);
    headers[1].value = lhttp_cstr("a\tb");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_OK);
    headers[1].name = lhttp_cstr("ni:ck");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_HEADER);
    headers[1].name = lhttp_cstr("");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_HEADER);
    headers[1].name = lhttp_cstr("nick");

    msg.command = lhttp_cstr("");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_COMMAND);
    msg.command = lhttp_cstr("two words");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_COMMAND);
    msg.command = lhttp_cstr("line\n");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_COMMAND);
    msg.command = lhttp_cstr("chat");
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, NULL), LHTTP_E_ARGUMENT);
    CHECK_EQ_INT(lhttp_serialize(NULL, out, sizeof out, &written), LHTTP_E_ARGUMENT);
    msg.headers = NULL;
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_E_ARGUMENT);
    msg.header_count = 0;
    msg.body = lhttp_cstr(NULL);
    CHECK_EQ_INT(lhttp_serialize(&msg, out, sizeof out, &written), LHTTP_OK);
    CHECK_EQ_INT(written, strlen("LHTTP/1.0 chat\r\n\r\n"));
    CHECK(memcmp(out, "LHTTP/1.0 chat\r\n\r\n", written) == 0);
}

static int multipart_error(const char *value, const char *body)
{
    lhttp_header headers[1];
    lhttp_header part_headers[4];
    lhttp_part parts[4];
    lhttp_message msg;
    size_t count = 99;
    char *owned = exact_copy(body, strlen(body));
    int rc;

    headers[0].name = lhttp_cstr("multipart");
    headers[0].value = lhttp_cstr(value);
    msg.command = lhttp_cstr("upload");
    msg.headers = headers;
    msg.header_count = 1;
    msg.body.ptr = owned;
    msg.body.len = strlen(body);
    rc = lhttp_parse_multipart(&msg, parts, 4, part_headers, 4, &count);
    if (rc != LHTTP_OK)
        CHECK_EQ_INT(count, 0);
    free(owned);
    return rc;
}

static void test_multipart(void)
{
    const char *body = "k1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2";
    lhttp_header part_headers[4];
    lhttp_part parts[4];
    char out_body[64];
    char out_offsets[16];
    size_t body_len = 0;
    size_t offsets_len = 0;
    size_t offsets[1];
    size_t count = 0;
    lhttp_message msg;

    CHECK_EQ_INT(multipart_error("0 14", body), LHTTP_OK);
    CHECK_EQ_INT(multipart_error("  0 \t 14 ", body), LHTTP_OK);
    CHECK_EQ_INT(multipart_error("0", "\r\nno headers"), LHTTP_OK);
    CHECK_EQ_INT(multipart_error("", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0 x", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0 -1", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0 +14", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("14 0", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0 0", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0 28", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0 99999999999999999999999999", body), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0", ""), LHTTP_E_MULTIPART);
    CHECK_EQ_INT(multipart_error("0 3 6 9 12", "\r\nA\r\nB\r\nC\r\nD\r\nE"), LHTTP_E_TOO_MANY_PARTS);
    CHECK_EQ_INT(multipart_error("0 3 6 9", "\r\nA\r\nB\r\nC\r\nD"), LHTTP_OK);
    CHECK_EQ_INT(multipart_error("0 5", body), LHTTP_E_UNTERMINATED);
    CHECK_EQ_INT(multipart_error("0", "bad\r\n\r\n"), LHTTP_E_HEADER);

    /* Starting past 0 skips the leading bytes. */
    msg.command = lhttp_cstr("u");
    msg.headers = part_headers;
    part_headers[0].name = lhttp_cstr("multipart");
    part_headers[0].value = lhttp_cstr("3");
    msg.header_count = 1;
    msg.body = lhttp_cstr("xyz\r\nrest");
    {
        lhttp_header ph[2];
        CHECK_EQ_INT(lhttp_parse_multipart(&msg, parts, 4, ph, 2, &count), LHTTP_OK);
        CHECK_EQ_INT(count, 1);
        CHECK_EQ_INT(parts[0].header_count, 0);
        CHECK_STR(parts[0].body, "rest");
    }
    msg.header_count = 0;
    CHECK_EQ_INT(lhttp_parse_multipart(&msg, parts, 4, part_headers, 4, &count), LHTTP_E_NOT_FOUND);

    CHECK_EQ_INT(lhttp_multipart_offsets(lhttp_cstr("0 14"), 28, offsets, 1, &count), LHTTP_E_TOO_MANY_PARTS);

    /* Building the vector 3 body. */
    part_headers[0].name = lhttp_cstr("k1");
    part_headers[0].value = lhttp_cstr("v1");
    part_headers[1].name = lhttp_cstr("k2");
    part_headers[1].value = lhttp_cstr("v2");
    parts[0].headers = &part_headers[0];
    parts[0].header_count = 1;
    parts[0].body = lhttp_cstr("body1");
    parts[1].headers = &part_headers[1];
    parts[1].header_count = 1;
    parts[1].body = lhttp_cstr("body2");
    CHECK_EQ_INT(lhttp_serialize_multipart(parts, 2, out_body, sizeof out_body, &body_len,
                                           out_offsets, sizeof out_offsets, &offsets_len), LHTTP_OK);
    CHECK_EQ_INT(body_len, strlen(body));
    CHECK(memcmp(out_body, body, body_len) == 0);
    CHECK_EQ_INT(offsets_len, 4);
    CHECK(memcmp(out_offsets, "0 14", 4) == 0);
    CHECK_EQ_INT(lhttp_serialize_multipart(parts, 2, out_body, 5, &body_len,
                                           out_offsets, sizeof out_offsets, &offsets_len), LHTTP_E_NO_SPACE);
    CHECK_EQ_INT(body_len, strlen(body));
    CHECK_EQ_INT(lhttp_serialize_multipart(parts, 2, out_body, sizeof out_body, &body_len,
                                           out_offsets, 3, &offsets_len), LHTTP_E_NO_SPACE);
    CHECK_EQ_INT(offsets_len, 4);
    CHECK_EQ_INT(lhttp_serialize_multipart(parts, 0, out_body, sizeof out_body, &body_len,
                                           out_offsets, sizeof out_offsets, &offsets_len), LHTTP_E_ARGUMENT);
    part_headers[1].value = lhttp_cstr("v2 ");
    CHECK_EQ_INT(lhttp_serialize_multipart(parts, 2, out_body, sizeof out_body, &body_len,
                                           out_offsets, sizeof out_offsets, &offsets_len), LHTTP_E_VALUE);
}

static void test_next_token(void)
{
    lhttp_str rest = lhttp_cstr("  a \tbb   c  ");
    lhttp_str token;

    CHECK(lhttp_next_token(&rest, &token));
    CHECK_STR(token, "a");
    CHECK(lhttp_next_token(&rest, &token));
    CHECK_STR(token, "bb");
    CHECK(lhttp_next_token(&rest, &token));
    CHECK_STR(token, "c");
    CHECK(!lhttp_next_token(&rest, &token));
    rest = lhttp_cstr("");
    CHECK(!lhttp_next_token(&rest, &token));
    rest = lhttp_cstr("   ");
    CHECK(!lhttp_next_token(&rest, &token));
}

static void test_utf8(void)
{
    CHECK(lhttp_utf8_valid("", 0));
    CHECK(lhttp_utf8_valid(VECTOR1, strlen(VECTOR1)));
    CHECK(lhttp_utf8_valid("\xc3\xa9\xe8\x81\x8a\xf0\x9f\x98\x80", 9));
    CHECK(!lhttp_utf8_valid("\xc3", 1));
    CHECK(!lhttp_utf8_valid("\xc0\xaf", 2));          /* overlong */
    CHECK(!lhttp_utf8_valid("\xe0\x80\xaf", 3));      /* overlong */
    CHECK(!lhttp_utf8_valid("\xed\xa0\x80", 3));      /* surrogate */
    CHECK(!lhttp_utf8_valid("\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
    CHECK(!lhttp_utf8_valid("\xff", 1));
    CHECK(!lhttp_utf8_valid("a\x80", 2));
    CHECK(!lhttp_utf8_valid("\xe8\x81", 2));
}

static void test_strerror(void)
{
    int code;
    for (code = LHTTP_OK; code >= LHTTP_E_VALUE; code--)
        CHECK(strcmp(lhttp_strerror(code), "unknown status") != 0);
    for (code = LHTTP_E_URL; code >= LHTTP_E_TLS; code--)
        CHECK(strcmp(lhttp_strerror(code), "unknown status") != 0);
    CHECK(strcmp(lhttp_strerror(42), "unknown status") == 0);
    CHECK(lhttp_str_ieq(lhttp_cstr("Nick"), "nICK"));
    CHECK(!lhttp_str_ieq(lhttp_cstr("Nick"), "nic"));
    CHECK(!lhttp_str_ieq(lhttp_cstr("Nic"), "nick"));
    CHECK(!lhttp_str_ieq(lhttp_cstr("Nick"), NULL));
}

/* The node's word: only a first lhttp-node header with a known kind. */
static void test_node_kind(void)
{
    static const struct { const char *wire; lhttp_node_kind kind; } cases[] = {
        {"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:400\r\n\r\n", LHTTP_NODE_REPLY},
        {"LHTTP/1.0 join\r\nlhttp-node:event\r\nchannel:r\r\n\r\n", LHTTP_NODE_EVENT},
        {"LHTTP/1.0 chat\r\nlhttp-node:position\r\noffset:3\r\n\r\nhi", LHTTP_NODE_POSITION},
        {"LHTTP/1.0 recovery\r\nchannel:r\r\nlhttp-node:reply\r\n\r\n", LHTTP_FROM_CLIENT},
        {"LHTTP/1.0 recovery\r\nlhttp-node:root\r\n\r\n", LHTTP_FROM_CLIENT},
        {"LHTTP/1.0 error\r\nstatus:503\r\n\r\n", LHTTP_FROM_CLIENT},
        {"LHTTP/1.0 ping\r\n\r\n", LHTTP_FROM_CLIENT},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lhttp_header headers[8];
        lhttp_message msg;
        char *owned;
        CHECK_EQ_INT(parse_exact(cases[i].wire, strlen(cases[i].wire), &msg, headers, 8, &owned), LHTTP_OK);
        CHECK_EQ_INT(lhttp_node_kind_of(&msg), cases[i].kind);
        free(owned);
    }
    CHECK_EQ_INT(lhttp_node_kind_of(NULL), LHTTP_FROM_CLIENT);
}

static void test_parse_u64(void)
{
    unsigned long long value = 7;
    CHECK_EQ_INT(lhttp_parse_u64(lhttp_cstr("1187"), &value), LHTTP_OK);
    CHECK(value == 1187ULL);
    CHECK_EQ_INT(lhttp_parse_u64(lhttp_cstr("9999999999999999999"), &value), LHTTP_OK);
    value = 7;
    CHECK_EQ_INT(lhttp_parse_u64(lhttp_cstr("\xc2\xb2"), &value), LHTTP_E_VALUE);        /* U+00B2 */
    CHECK_EQ_INT(lhttp_parse_u64(lhttp_cstr("\xd9\xa3"), &value), LHTTP_E_VALUE);        /* Arabic-Indic 3 */
    CHECK_EQ_INT(lhttp_parse_u64(lhttp_cstr("-1"), &value), LHTTP_E_VALUE);
    CHECK_EQ_INT(lhttp_parse_u64(lhttp_cstr(""), &value), LHTTP_E_VALUE);
    CHECK_EQ_INT(lhttp_parse_u64(lhttp_cstr("12345678901234567890"), &value), LHTTP_E_VALUE);
    CHECK(value == 7ULL);
}

int main(void)
{
    test_node_kind();
    test_parse_u64();
    test_vector1();
    test_vector2();
    test_vector3();
    test_header_syntax();
    test_parse_errors();
    test_serialize();
    test_multipart();
    test_next_token();
    test_utf8();
    test_strerror();
    CHECK_DONE();
}
