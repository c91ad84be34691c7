/*
 * LHTTP/1.0 codec: parse and serialize messages and multipart bodies.
 *
 * Pure C99, no dependencies, no allocation.  Parsing is zero-copy: every
 * lhttp_str it produces points into the caller's input buffer, and header
 * arrays are supplied by the caller, so the input must outlive the result.
 *
 * Wire format (SPEC section 1):
 *
 *     LHTTP/1.0 <command>\r\n
 *     <name>:<value>\r\n       zero or more
 *     \r\n
 *     <body>                   zero or more bytes
 *
 * Every function returns LHTTP_OK (0) or a negative lhttp_status code;
 * lhttp_strerror() names it.
 */
#ifndef LHTTP_CODEC_H
#define LHTTP_CODEC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LHTTP_VERSION_STRING "LHTTP/1.0"

/* Status codes.  Negative values are errors. */
typedef enum lhttp_status {
    LHTTP_OK = 0,
    LHTTP_E_ARGUMENT = -1,        /* NULL pointer or otherwise unusable argument */
    LHTTP_E_START_LINE = -2,      /* input does not start with "LHTTP/1.0 " */
    LHTTP_E_COMMAND = -3,         /* empty command, or space/control character in it */
    LHTTP_E_HEADER = -4,          /* header line without ':', name not printable ASCII, NUL/CR/LF in value */
    LHTTP_E_TOO_MANY_HEADERS = -5,/* more header lines than the caller's array holds */
    LHTTP_E_UNTERMINATED = -6,    /* headers never end: no blank line */
    LHTTP_E_NO_SPACE = -7,        /* output buffer too small (the size needed is reported) */
    LHTTP_E_MULTIPART = -8,       /* multipart offsets not integers, not ascending or outside the body */
    LHTTP_E_TOO_MANY_PARTS = -9,  /* more parts than the caller's array holds */
    LHTTP_E_NOT_FOUND = -10,      /* no such header */
    LHTTP_E_VALUE = -11,          /* header value cannot be serialized unchanged (surrounding blanks) */

    /* Client errors (lhttp/client.h); listed here so lhttp_strerror() knows them all. */
    LHTTP_E_URL = -20,            /* not a ws:// or wss:// URL, or too long */
    LHTTP_E_NO_MEMORY = -21,      /* allocation failed */
    LHTTP_E_CONNECT = -22,        /* the WebSocket connection could not be set up */
    LHTTP_E_CLOSED = -23,         /* the connection is closed or closing */
    LHTTP_E_TOO_LARGE = -24,      /* message larger than the configured maximum */
    LHTTP_E_TLS = -25             /* wss:// asked for but the WebSocket library has no TLS */
} lhttp_status;

/* A byte slice; not NUL-terminated. */
typedef struct lhttp_str {
    const char *ptr;
    size_t len;
} lhttp_str;

typedef struct lhttp_header {
    lhttp_str name;     /* original spelling */
    lhttp_str value;    /* spaces and tabs around it stripped */
} lhttp_header;

/*
 * A parsed (or to-be-serialized) message.  `headers` points at a caller-owned
 * array holding `header_count` entries, in wire order.
 */
typedef struct lhttp_message {
    lhttp_str command;
    lhttp_header *headers;
    size_t header_count;
    lhttp_str body;
} lhttp_message;

/* One multipart part: its own headers (a slice of the caller's array) and body. */
typedef struct lhttp_part {
    lhttp_header *headers;
    size_t header_count;
    lhttp_str body;
} lhttp_part;

/* A human-readable, static description of a status code. */
const char *lhttp_strerror(int status);

/* A slice of a NUL-terminated string (NULL gives the empty slice). */
lhttp_str lhttp_cstr(const char *s);

/* Case-insensitive (ASCII) equality of a slice and a NUL-terminated string. */
int lhttp_str_ieq(lhttp_str a, const char *b);

/*
 * Parse one message of `len` bytes.  Header entries are written to
 * `headers[0 .. max_headers-1]`; `msg->headers` is set to `headers`.
 *
 * Errors: LHTTP_E_START_LINE, LHTTP_E_COMMAND, LHTTP_E_HEADER,
 * LHTTP_E_TOO_MANY_HEADERS, LHTTP_E_UNTERMINATED, LHTTP_E_ARGUMENT.
 * On error `*msg` is unspecified.
 */
int lhttp_parse(const char *data, size_t len, lhttp_message *msg,
                lhttp_header *headers, size_t max_headers);

/*
 * The value of the first header called `name` (case-insensitive) in `msg`,
 * or NULL when there is none.
 */
const lhttp_str *lhttp_get_header(const lhttp_message *msg, const char *name);

/*
 * The node's word (docs/protocol.rst): a message the node wrote itself has
 * `lhttp-node` as its first header, which no client can send.
 */
typedef enum lhttp_node_kind {
    LHTTP_FROM_CLIENT = 0,    /* a client's message: its headers mean nothing to the SDK */
    LHTTP_NODE_REPLY = 1,     /* the node's answer to this connection (error, recovery, history, ack...) */
    LHTTP_NODE_EVENT = 2,     /* the node's event on a channel (join, leave) */
    LHTTP_NODE_POSITION = 3   /* a client's message whose channel/offset/epoch headers the node added */
} lhttp_node_kind;

/* Who wrote `msg`: check it before acting on an error, recovery or position. */
lhttp_node_kind lhttp_node_kind_of(const lhttp_message *msg);

/*
 * Read a non-negative integer header value (an offset, a count, a status):
 * ASCII digits only, 1 to 19 of them.  Anything else (a Unicode digit, a
 * sign, a value too long) is LHTTP_E_VALUE and `*value` is untouched.
 */
int lhttp_parse_u64(lhttp_str text, unsigned long long *value);

/*
 * Split space-separated tokens (channel lists, multipart offsets): set `*token`
 * to the next token of `*rest` and advance `*rest` past it.  Returns 1 when a
 * token was found, 0 at the end.
 */
int lhttp_next_token(lhttp_str *rest, lhttp_str *token);

/*
 * Set `*size` to the number of bytes lhttp_serialize() writes for `msg`.
 * Errors: LHTTP_E_COMMAND, LHTTP_E_HEADER, LHTTP_E_VALUE, LHTTP_E_ARGUMENT.
 */
int lhttp_serialized_size(const lhttp_message *msg, size_t *size);

/*
 * Serialize `msg` into `out` (capacity `cap`).  `*written` gets the number of
 * bytes written, or on LHTTP_E_NO_SPACE the number of bytes needed.  Output
 * is not NUL-terminated.  The command and header names and values are
 * checked so the output always parses back to `msg`: values with leading or
 * trailing blanks give LHTTP_E_VALUE.
 */
int lhttp_serialize(const lhttp_message *msg, char *out, size_t cap,
                    size_t *written);

/*
 * Parse the multipart offsets of `value` (e.g. "0 14") for a body of
 * `body_len` bytes into `offsets[0 .. max_offsets-1]`; `*count` gets how many.
 * Offsets must be decimal integers, strictly ascending and less than
 * `body_len`.  Errors: LHTTP_E_MULTIPART, LHTTP_E_TOO_MANY_PARTS.
 */
int lhttp_multipart_offsets(lhttp_str value, size_t body_len, size_t *offsets,
                            size_t max_offsets, size_t *count);

/*
 * Split the body of `msg` by its `multipart` header into `parts`.  Each part's
 * headers are stored consecutively in `headers` (capacity `max_headers`).
 * `*part_count` gets the number of parts.  Errors: LHTTP_E_NOT_FOUND (no
 * multipart header), LHTTP_E_MULTIPART, LHTTP_E_TOO_MANY_PARTS, and the
 * header errors of lhttp_parse() for a malformed part.
 */
int lhttp_parse_multipart(const lhttp_message *msg, lhttp_part *parts,
                          size_t max_parts, lhttp_header *headers,
                          size_t max_headers, size_t *part_count);

/*
 * Serialize `count` parts into a multipart body in `body` (capacity
 * `body_cap`) and the matching `multipart` header value (e.g. "0 14") into
 * `offsets` (capacity `offsets_cap`).  `*body_len` and `*offsets_len` get the
 * bytes written, or the bytes needed when LHTTP_E_NO_SPACE is returned.
 */
int lhttp_serialize_multipart(const lhttp_part *parts, size_t count,
                              char *body, size_t body_cap, size_t *body_len,
                              char *offsets, size_t offsets_cap,
                              size_t *offsets_len);

/* 1 when `data` is valid UTF-8 (may be sent as a WebSocket text frame). */
int lhttp_utf8_valid(const char *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* LHTTP_CODEC_H */
