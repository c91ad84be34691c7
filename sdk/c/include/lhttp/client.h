/*
 * LHTTP client over WebSocket (ws:// and wss://), built on libwebsockets.
 *
 * One lhttp_client is one connection with its own libwebsockets context.
 * Callbacks run on the thread that calls lhttp_client_run() or
 * lhttp_client_service().  The send functions and lhttp_client_close() may
 * be called from any thread: they queue the message and wake the service
 * loop.  Messages are written in the order they were queued; messages queued
 * before the connection opens are written once it does.
 *
 * Not thread-safe: lhttp_client_free() (call it once the loop has returned).
 */
#ifndef LHTTP_CLIENT_H
#define LHTTP_CLIENT_H

#include "lhttp/codec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lhttp_client lhttp_client;

/* A parsed ws:// or wss:// URL. */
typedef struct lhttp_url {
    int tls;            /* 1 for wss:// */
    char host[256];     /* without brackets for IPv6 literals */
    int port;           /* explicit, or 80 / 443 */
    char path[1024];    /* path and query, at least "/" */
} lhttp_url;

/* Parse `url` into `*out`.  Errors: LHTTP_E_URL, LHTTP_E_ARGUMENT. */
int lhttp_url_parse(const char *url, lhttp_url *out);

/*
 * The node's word about the connection's credential (docs/protocol.rst,
 * "Authentication"), given to on_auth:
 *
 *   - command "connect", status 200: the node accepted the token; `user`,
 *     and `expires` (Unix seconds, -1 when the credential has none).
 *     Messages queued meanwhile are written now.
 *   - command "connect", status 401 (refused: the node closes with 4401
 *     next) or 503 (the node cannot check tokens now: 4503 next; try again
 *     later with a new client); `reason` and `detail` say why.
 *   - command "refresh", status 200: a refresh was accepted (`expires`).
 *     Status 401 or 403 with `detail`: it was refused; the connection
 *     keeps its credential.
 *   - command "refresh", status 401 and `grace` > 0: the notice, the token
 *     expired: call lhttp_client_refresh() within `grace` seconds, or the
 *     node closes with 4419.
 */
typedef struct lhttp_auth_result {
    const char *command;        /* "connect" or "refresh" */
    int status;                 /* 200, 401, 403, 503 (0 if missing) */
    lhttp_str user;             /* on 200 */
    long long expires;          /* Unix seconds, or -1 */
    int grace;                  /* the notice's seconds, else 0 */
    lhttp_str reason;           /* the error reply's or the notice's reason */
    lhttp_str detail;           /* the error reply's body (one line) */
    const lhttp_message *reply; /* the whole reply; all valid during the call only */
} lhttp_auth_result;

typedef struct lhttp_client_config {
    const char *url;            /* ws://host[:port]/path or wss://... (required) */
    const char *origin;         /* Origin header to send, or NULL */
    const char *subprotocol;    /* Sec-WebSocket-Protocol to ask for, or NULL */
    size_t max_message_size;    /* incoming limit; 0 means 1 MiB */
    size_t max_headers;         /* headers parsed per incoming message; 0 means 64 */
    const char *ca_file;        /* PEM CA bundle for wss://, or NULL for the system's */
    int tls_insecure;           /* wss:// without certificate checks (tests only) */
    int lws_log_level;          /* libwebsockets log mask; 0 means errors only */

    /* The WebSocket handshake completed. */
    void (*on_open)(lhttp_client *client, void *user);
    /*
     * A message arrived.  `raw`/`len` is the whole WebSocket message; when
     * `status` is LHTTP_OK, `msg` is it parsed (valid during the call only),
     * otherwise `msg` is NULL and `status` says why it did not parse.
     */
    void (*on_message)(lhttp_client *client, const lhttp_message *msg,
                       const char *raw, size_t len, int status, void *user);
    /* The message numbered `seq` (as returned by a send function) was written. */
    void (*on_sent)(lhttp_client *client, long seq, void *user);
    /*
     * The connection is gone (or never came up).  `code` is the WebSocket
     * close code (1000 normal, 1006 abnormal, ...); `reason` may be empty.
     */
    void (*on_close)(lhttp_client *client, int code, const char *reason,
                     void *user);
    void *user;

    /*
     * A connection token (a JWT) for a node that authenticates, or NULL
     * (copied).  When set, the first message written once the WebSocket
     * opens is `LHTTP/1.0 connect` with `token:<token>`, and no other
     * message is written before the node accepted it (on_auth, status
     * 200).  One client is one connection: a program that connects again
     * makes a new client, and so sends the connect message first again.
     * The close codes after a refusal: 4401 (unauthorized: get a new token
     * first), 4503 (try again later), 4403 (disconnected by the server: do
     * not reconnect), 4000 (reconnect), 4419 (expired without a refresh).
     */
    const char *token;
    /*
     * The node's replies to connect and refresh, and its refresh notice
     * (see lhttp_auth_result); never given to on_message.  Without a
     * token and without on_auth they are ordinary messages, as before.
     */
    void (*on_auth)(lhttp_client *client, const lhttp_auth_result *result,
                    void *user);
} lhttp_client_config;

/*
 * Create a client and start connecting.  `*out` gets the client.
 * Errors: LHTTP_E_URL, LHTTP_E_TLS, LHTTP_E_CONNECT, LHTTP_E_NO_MEMORY,
 * LHTTP_E_ARGUMENT.
 */
int lhttp_client_new(const lhttp_client_config *config, lhttp_client **out);

/*
 * Run the event loop until the connection is closed.  Returns LHTTP_OK
 * after a close asked for with lhttp_client_close(), LHTTP_E_CLOSED when the
 * server or the network ended it, LHTTP_E_CONNECT when it never opened.
 */
int lhttp_client_run(lhttp_client *client);

/*
 * One pass of the event loop (waits for the next event).  Returns 0 while
 * the connection is connecting or open, 1 once it is closed.
 */
int lhttp_client_service(lhttp_client *client);

/* 1 while the WebSocket is open. */
int lhttp_client_is_open(const lhttp_client *client);

/*
 * Queue a message.  Returns its sequence number (> 0, increasing; see
 * on_sent) or a negative status: a serialization error, LHTTP_E_CLOSED,
 * LHTTP_E_NO_MEMORY.  Sent as a text frame when valid UTF-8, else binary.
 */
long lhttp_client_send(lhttp_client *client, const lhttp_message *msg);

/* Queue already-serialized bytes (not checked). */
long lhttp_client_send_raw(lhttp_client *client, const char *data, size_t len);

/* Send "LHTTP/1.0 subscribe" with `subscribe:<channels>` (space-separated). */
long lhttp_client_subscribe(lhttp_client *client, const char *channels);

/* Send "LHTTP/1.0 unsubscribe" with `unsubscribe:<channels>`. */
long lhttp_client_unsubscribe(lhttp_client *client, const char *channels);

/*
 * Send `LHTTP/1.0 <command>` with `publish:<channels>`, then `headers`
 * (may be NULL when `header_count` is 0), then `body`.
 */
long lhttp_client_publish(lhttp_client *client, const char *channels,
                          const char *command, const lhttp_header *headers,
                          size_t header_count, const char *body,
                          size_t body_len);

/*
 * What became of a publish sent with lhttp_client_publish_acked().
 */
typedef struct lhttp_publish_result {
    /*
     * 200: the node acknowledged it (stored and on its way to every
     * subscriber, once however often it was sent).  Otherwise the status of
     * the node's error reply (503 after the retries: not known to be
     * stored), or LHTTP_E_CLOSED: the connection ended before an answer
     * (not known to be stored either).  In both of those cases publish it
     * again, on this or a new client, with the same `key`: it is stored and
     * delivered at most once within the node's window (120 s).
     */
    int status;
    int duplicate;              /* 1: the node had it already (a retry) */
    int attempts;               /* times it was sent */
    const char *key;            /* its idempotency key */
    /*
     * The node's reply (`LHTTP/1.0 ack` with a channel/offset/epoch triple
     * per history channel, or the error), or NULL; valid during the call.
     */
    const lhttp_message *reply;
} lhttp_publish_result;

typedef void (*lhttp_publish_cb)(lhttp_client *client,
                                 const lhttp_publish_result *result, void *user);

/*
 * lhttp_client_publish() asking the node for an acknowledgement
 * (`publish-ack`) with an idempotency key (`key`, 1 to 64 printable ASCII
 * characters without spaces; NULL: a new random one).  `done` is called
 * once, on the service thread, with the outcome; after a 503 or 429 error
 * reply the message is sent again with the same key, after 0.25 s, 0.5 s,
 * ... (at most 4 s), up to `retries` more times.  The node's ack and error
 * replies to it are not given to on_message.  Returns the first send's
 * sequence number, or a negative status (then `done` is not called).
 */
long lhttp_client_publish_acked(lhttp_client *client, const char *channels,
                                const char *command, const lhttp_header *headers,
                                size_t header_count, const char *body,
                                size_t body_len, const char *key, int retries,
                                lhttp_publish_cb done, void *user);

/*
 * Send `LHTTP/1.0 refresh` with `token:<token>`: a fresh token, before the
 * last one's `expires` or after the node's notice.  The answer comes to
 * on_auth (command "refresh").  Returns its sequence number or a negative
 * status (LHTTP_E_ARGUMENT: no token, or blanks or controls in it).
 */
long lhttp_client_refresh(lhttp_client *client, const char *token);

/*
 * Close after every message queued so far has been written (WebSocket close
 * code 1000).  Any thread; later sends fail with LHTTP_E_CLOSED.
 */
void lhttp_client_close(lhttp_client *client);

/* Release everything.  Not while lhttp_client_run() is running. */
void lhttp_client_free(lhttp_client *client);

#ifdef __cplusplus
}
#endif

#endif /* LHTTP_CLIENT_H */
