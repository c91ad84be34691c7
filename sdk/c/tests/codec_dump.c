/*
 * Reads length-prefixed messages (4-byte big-endian length, then the bytes)
 * from stdin and prints one line per message: "ok <command> <body> <name>
 * <value> ..." with every field in hex, or "err <status>".  The Python tests
 * compare it with the server's codec on the same inputs.
 */
#include "lhttp/codec.h"

#include <stdio.h>
#include <stdlib.h>

static void put_hex(lhttp_str s)
{
    size_t i;
    putchar(' ');
    putchar('=');
    for (i = 0; i < s.len; i++)
        printf("%02x", (unsigned char)s.ptr[i]);
}

int main(void)
{
    lhttp_header headers[256];
    unsigned char prefix[4];

    while (fread(prefix, 1, 4, stdin) == 4) {
        size_t len = ((size_t)prefix[0] << 24) | ((size_t)prefix[1] << 16) |
                     ((size_t)prefix[2] << 8) | (size_t)prefix[3];
        char *data = (char *)malloc(len ? len : 1);
        lhttp_message msg;
        size_t i;
        int rc;

        if (data == NULL || fread(data, 1, len, stdin) != len) {
            free(data);
            return 1;
        }
        rc = lhttp_parse(data, len, &msg, headers, 256);
        if (rc != LHTTP_OK) {
            printf("err %d\n", rc);
        } else {
            fputs("ok", stdout);
            put_hex(msg.command);
            put_hex(msg.body);
            for (i = 0; i < msg.header_count; i++) {
                put_hex(headers[i].name);
                put_hex(headers[i].value);
            }
            putchar('\n');
        }
        free(data);
    }
    return 0;
}
