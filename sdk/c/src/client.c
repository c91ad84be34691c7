/*
 * LHTTP client on libwebsockets.  See include/lhttp/client.h for the contract.
 *
 * libwebsockets is single-threaded: only the service thread touches the
 * connection.  Other threads append to a mutex-guarded queue and wake the
 * loop with lws_cancel_service(); the loop then asks for a writeable
 * callback and writes one queued message per callback, as lws requires.
 */
#include "lhttp/client.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_MESSAGE (1024u * 1024u)
#define DEFAULT_MAX_HEADERS 64u

enum client_state { STATE_CONNECTING, STATE_OPEN, STATE_CLOSED };

struct out_msg {
    struct out_msg *next;
    long seq;
    int binary;
    size_t len;
    unsigned char *data; /* points LWS_PRE bytes into the allocation */
};

struct lhttp_client {
    lhttp_client_config config;
    lhttp_url url;
    char host_header[300];
    struct lws_context *context;
    struct lws_protocols protocols[2];
    struct lws *wsi;                /* service thread only */

    pthread_mutex_t lock;           /* guards the fields down to `state` */
    struct out_msg *head;
    struct out_msg *tail;
    long next_seq;
    int close_requested;
    enum client_state state;

    int silent;                     /* no user callbacks (creating, freeing) */
    int result;                     /* what lhttp_client_run() returns */
    int close_code;
    char close_reason[124];

    char *rx;                       /* the incoming message being assembled */
    size_t rx_len;
    size_t rx_cap;
    size_t max_message;
    lhttp_header *headers;
    size_t max_headers;
};

static void set_state(lhttp_client *c, enum client_state state)
{
    pthread_mutex_lock(&c->lock);
    c->state = state;
    pthread_mutex_unlock(&c->lock);
}

static int has_work(lhttp_client *c)
{
    int work;
    pthread_mutex_lock(&c->lock);
    work = c->head != NULL || c->close_requested;
    pthread_mutex_unlock(&c->lock);
    return work;
}

/* The connection is gone: record why and tell the user, once. */
static void finish(lhttp_client *c, int code, const char *reason, int result)
{
    int requested;

    pthread_mutex_lock(&c->lock);
    if (c->state == STATE_CLOSED) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->state = STATE_CLOSED;
    requested = c->close_requested;
    pthread_mutex_unlock(&c->lock);

    c->wsi = NULL;
    if (c->close_code == 0)
        c->close_code = code;
    if (c->close_reason[0] == '\0' && reason != NULL) {
        strncpy(c->close_reason, reason, sizeof c->close_reason - 1);
        c->close_reason[sizeof c->close_reason - 1] = '\0';
    }
    c->result = (requested && result == LHTTP_E_CLOSED) ? LHTTP_OK : result;
    if (!c->silent && c->config.on_close)
        c->config.on_close(c, c->close_code, c->close_reason, c->config.user);
}

static int on_receive(lhttp_client *c, struct lws *wsi, const char *in, size_t len)
{
    lhttp_message msg;
    int status;

    if (lws_is_first_fragment(wsi))
        c->rx_len = 0;
    if (len > c->max_message - c->rx_len) {
        static const char reason[] = "message too large";
        c->close_code = LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
        strcpy(c->close_reason, reason);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)reason, sizeof reason - 1);
        return -1;
    }
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        char *grown;
        while (cap < c->rx_len + len)
            cap *= 2;
        if (cap > c->max_message)
            cap = c->max_message;
        grown = (char *)realloc(c->rx, cap);
        if (grown == NULL)
            return -1;
        c->rx = grown;
        c->rx_cap = cap;
    }
    if (len > 0)
        memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) != 0)
        return 0;

    status = lhttp_parse(c->rx, c->rx_len, &msg, c->headers, c->max_headers);
    if (c->config.on_message)
        c->config.on_message(c, status == LHTTP_OK ? &msg : NULL, c->rx,
                             c->rx_len, status, c->config.user);
    c->rx_len = 0;
    return 0;
}

static int on_writeable(lhttp_client *c, struct lws *wsi)
{
    struct out_msg *m;
    int more;
    int closing;
    int n;
    long seq;

    pthread_mutex_lock(&c->lock);
    m = c->head;
    if (m != NULL) {
        c->head = m->next;
        if (c->head == NULL)
            c->tail = NULL;
    }
    more = c->head != NULL;
    closing = c->close_requested;
    pthread_mutex_unlock(&c->lock);

    if (m == NULL) {
        if (closing) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
            c->close_code = LWS_CLOSE_STATUS_NORMAL;
            return -1;
        }
        return 0;
    }
    n = lws_write(wsi, m->data, m->len,
                  m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    seq = m->seq;
    free(m);
    if (n < 0)
        return -1;
    if (c->config.on_sent)
        c->config.on_sent(c, seq, c->config.user);
    if (more || closing)
        lws_callback_on_writable(wsi);
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    lhttp_client *c = (lhttp_client *)lws_context_user(lws_get_context(wsi));
    (void)user;

    if (c == NULL)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        c->wsi = wsi;
        set_state(c, STATE_OPEN);
        if (c->config.on_open)
            c->config.on_open(c, c->config.user);
        if (has_work(c))
            lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return on_receive(c, wsi, (const char *)in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writeable(c, wsi);
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (c->wsi != NULL && lhttp_client_is_open(c) && has_work(c))
            lws_callback_on_writable(c->wsi);
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2 && in != NULL) {
            const unsigned char *p = (const unsigned char *)in;
            size_t reason_len = len - 2;
            c->close_code = (p[0] << 8) | p[1];
            if (reason_len >= sizeof c->close_reason)
                reason_len = sizeof c->close_reason - 1;
            memcpy(c->close_reason, p + 2, reason_len);
            c->close_reason[reason_len] = '\0';
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        finish(c, LWS_CLOSE_STATUS_ABNORMAL_CLOSE,
                   in ? (const char *)in : "connection failed", LHTTP_E_CONNECT);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        finish(c, LWS_CLOSE_STATUS_ABNORMAL_CLOSE, "", LHTTP_E_CLOSED);
        break;
    case LWS_CALLBACK_WSI_DESTROY:
        if (wsi == c->wsi)
            c->wsi = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static void free_queue(lhttp_client *c)
{
    struct out_msg *m = c->head;
    while (m != NULL) {
        struct out_msg *next = m->next;
        free(m);
        m = next;
    }
    c->head = c->tail = NULL;
}

int lhttp_client_new(const lhttp_client_config *config, lhttp_client **out)
{
    struct lws_context_creation_info info;
    struct lws_client_connect_info ci;
    lhttp_client *c;
    int rc;

    if (config == NULL || out == NULL || config->url == NULL)
        return LHTTP_E_ARGUMENT;
    *out = NULL;
    c = (lhttp_client *)calloc(1, sizeof *c);
    if (c == NULL)
        return LHTTP_E_NO_MEMORY;
    c->config = *config;
    rc = lhttp_url_parse(config->url, &c->url);
    if (rc != LHTTP_OK) {
        free(c);
        return rc;
    }
#if !defined(LWS_WITH_TLS)
    if (c->url.tls) {
        free(c);
        return LHTTP_E_TLS;
    }
#endif
    c->max_message = config->max_message_size ? config->max_message_size
                                              : DEFAULT_MAX_MESSAGE;
    c->max_headers = config->max_headers ? config->max_headers : DEFAULT_MAX_HEADERS;
    c->headers = (lhttp_header *)calloc(c->max_headers, sizeof *c->headers);
    if (c->headers == NULL || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->headers);
        free(c);
        return LHTTP_E_NO_MEMORY;
    }
    c->state = STATE_CONNECTING;
    c->result = LHTTP_E_CLOSED;
    if (strchr(c->url.host, ':') != NULL)
        snprintf(c->host_header, sizeof c->host_header, "[%s]:%d", c->url.host, c->url.port);
    else
        snprintf(c->host_header, sizeof c->host_header, "%s:%d", c->url.host, c->url.port);

    lws_set_log_level(config->lws_log_level ? config->lws_log_level : LLL_ERR, NULL);

    c->protocols[0].name = "lhttp";
    c->protocols[0].callback = callback;
    c->protocols[0].rx_buffer_size = 0;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = c->protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = c;
    info.fd_limit_per_thread = 16;
    if (c->url.tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.client_ssl_ca_filepath = config->ca_file;
    }
    c->silent = 1;
    c->context = lws_create_context(&info);
    if (c->context == NULL) {
        lhttp_client_free(c);
        return LHTTP_E_CONNECT;
    }

    memset(&ci, 0, sizeof ci);
    ci.context = c->context;
    ci.address = c->url.host;
    ci.port = c->url.port;
    ci.path = c->url.path;
    ci.host = c->host_header;
    ci.origin = config->origin;
    ci.protocol = config->subprotocol;
    ci.local_protocol_name = c->protocols[0].name;
    ci.ietf_version_or_minus_one = -1;
    if (c->url.tls) {
        ci.ssl_connection = LCCSCF_USE_SSL;
        if (config->tls_insecure)
            ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_ALLOW_EXPIRED |
                                 LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK;
    }
    ci.pwsi = &c->wsi;
    if (lws_client_connect_via_info(&ci) == NULL) {
        lhttp_client_free(c);
        return LHTTP_E_CONNECT;
    }
    c->silent = 0;
    /* A failure reported while connect_via_info ran is told now. */
    if (c->state == STATE_CLOSED && c->config.on_close)
        c->config.on_close(c, c->close_code, c->close_reason, c->config.user);
    *out = c;
    return LHTTP_OK;
}

int lhttp_client_is_open(const lhttp_client *client)
{
    lhttp_client *c = (lhttp_client *)client;
    int open;
    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    open = c->state == STATE_OPEN;
    pthread_mutex_unlock(&c->lock);
    return open;
}

static int is_closed(lhttp_client *c)
{
    int closed;
    pthread_mutex_lock(&c->lock);
    closed = c->state == STATE_CLOSED;
    pthread_mutex_unlock(&c->lock);
    return closed;
}

int lhttp_client_service(lhttp_client *client)
{
    if (client == NULL || is_closed(client))
        return 1;
    lws_service(client->context, 0);
    return is_closed(client);
}

int lhttp_client_run(lhttp_client *client)
{
    if (client == NULL)
        return LHTTP_E_ARGUMENT;
    while (!lhttp_client_service(client))
        ;
    return client->result;
}

/* Append a message of `len` bytes, filled by `fill`, to the queue. */
static long enqueue(lhttp_client *c, size_t len,
                    int (*fill)(const void *src, unsigned char *dst, size_t len),
                    const void *src)
{
    struct out_msg *m;
    long seq;
    int rc;

    if (c == NULL)
        return LHTTP_E_ARGUMENT;
    m = (struct out_msg *)malloc(sizeof *m + LWS_PRE + len);
    if (m == NULL)
        return LHTTP_E_NO_MEMORY;
    m->next = NULL;
    m->len = len;
    m->data = (unsigned char *)(m + 1) + LWS_PRE;
    rc = fill(src, m->data, len);
    if (rc != LHTTP_OK) {
        free(m);
        return rc;
    }
    m->binary = !lhttp_utf8_valid((const char *)m->data, len);

    pthread_mutex_lock(&c->lock);
    if (c->close_requested || c->state == STATE_CLOSED) {
        pthread_mutex_unlock(&c->lock);
        free(m);
        return LHTTP_E_CLOSED;
    }
    seq = m->seq = ++c->next_seq;
    if (c->tail != NULL)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    pthread_mutex_unlock(&c->lock);
    lws_cancel_service(c->context);
    return seq;
}

static int fill_message(const void *src, unsigned char *dst, size_t len)
{
    size_t written = 0;
    return lhttp_serialize((const lhttp_message *)src, (char *)dst, len, &written);
}

static int fill_raw(const void *src, unsigned char *dst, size_t len)
{
    if (len > 0)
        memcpy(dst, src, len);
    return LHTTP_OK;
}

long lhttp_client_send(lhttp_client *client, const lhttp_message *msg)
{
    size_t len = 0;
    int rc = lhttp_serialized_size(msg, &len);
    if (rc != LHTTP_OK)
        return rc;
    return enqueue(client, len, fill_message, msg);
}

long lhttp_client_send_raw(lhttp_client *client, const char *data, size_t len)
{
    if (data == NULL && len > 0)
        return LHTTP_E_ARGUMENT;
    return enqueue(client, len, fill_raw, data);
}

static long send_channels(lhttp_client *client, const char *command,
                          const char *channels)
{
    lhttp_header header;
    lhttp_message msg;

    if (channels == NULL)
        return LHTTP_E_ARGUMENT;
    header.name = lhttp_cstr(command);
    header.value = lhttp_cstr(channels);
    msg.command = lhttp_cstr(command);
    msg.headers = &header;
    msg.header_count = 1;
    msg.body = lhttp_cstr(NULL);
    return lhttp_client_send(client, &msg);
}

long lhttp_client_subscribe(lhttp_client *client, const char *channels)
{
    return send_channels(client, "subscribe", channels);
}

long lhttp_client_unsubscribe(lhttp_client *client, const char *channels)
{
    return send_channels(client, "unsubscribe", channels);
}

long lhttp_client_publish(lhttp_client *client, const char *channels,
                          const char *command, const lhttp_header *headers,
                          size_t header_count, const char *body,
                          size_t body_len)
{
    lhttp_header *all;
    lhttp_message msg;
    long rc;

    if (channels == NULL || command == NULL ||
        (headers == NULL && header_count > 0) || (body == NULL && body_len > 0))
        return LHTTP_E_ARGUMENT;
    all = (lhttp_header *)malloc((header_count + 1) * sizeof *all);
    if (all == NULL)
        return LHTTP_E_NO_MEMORY;
    all[0].name = lhttp_cstr("publish");
    all[0].value = lhttp_cstr(channels);
    if (header_count > 0)
        memcpy(all + 1, headers, header_count * sizeof *all);
    msg.command = lhttp_cstr(command);
    msg.headers = all;
    msg.header_count = header_count + 1;
    msg.body.ptr = body;
    msg.body.len = body_len;
    rc = lhttp_client_send(client, &msg);
    free(all);
    return rc;
}

void lhttp_client_close(lhttp_client *client)
{
    if (client == NULL)
        return;
    pthread_mutex_lock(&client->lock);
    client->close_requested = 1;
    pthread_mutex_unlock(&client->lock);
    lws_cancel_service(client->context);
}

void lhttp_client_free(lhttp_client *client)
{
    if (client == NULL)
        return;
    client->silent = 1;
    if (client->context != NULL) {
        /* Destroying the context may run callbacks; they must find a live client. */
        lws_context_destroy(client->context);
        client->context = NULL;
    }
    free_queue(client);
    free(client->rx);
    free(client->headers);
    pthread_mutex_destroy(&client->lock);
    free(client);
}
