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

/* A publish waiting for the node's ack (service thread only, once sent). */
struct pending_ack {
    struct pending_ack *next;
    lws_sorted_usec_list_t sul;     /* the timer of its next attempt */
    lhttp_client *client;
    char id[24];
    char key[65];
    int attempts;
    int retries;
    lhttp_publish_cb done;
    void *user;
    size_t len;
    char *data;                     /* the serialized message, sent again as is */
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

    struct pending_ack *acks;       /* guarded by `lock` */
    unsigned long next_ack;

    char *token;                    /* config.token, copied */
    struct out_msg *auth_msg;       /* the connect message, written first (service thread) */
    int auth_waiting;               /* connect written, the node's reply not yet in */
};

static void fail_acks(lhttp_client *c);
static int take_ack(lhttp_client *c, const lhttp_message *msg);
static int take_auth(lhttp_client *c, const lhttp_message *msg);
static struct out_msg *auth_message(const char *command, const char *token);

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
    fail_acks(c);
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
    if (status == LHTTP_OK && (take_ack(c, &msg) || take_auth(c, &msg))) {
        c->rx_len = 0;
        return 0;
    }
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

    if (c->auth_msg != NULL) {
        /* The connect message first; nothing else until the node's reply. */
        m = c->auth_msg;
        c->auth_msg = NULL;
        c->auth_waiting = 1;
        n = lws_write(wsi, m->data, m->len, LWS_WRITE_TEXT);
        free(m);
        return n < 0 ? -1 : 0;
    }
    if (c->auth_waiting && !c->close_requested)
        return 0;
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
        if (c->token != NULL) {
            c->auth_msg = auth_message("connect", c->token);
            if (c->auth_msg == NULL)
                return -1;
        }
        set_state(c, STATE_OPEN);
        if (c->config.on_open)
            c->config.on_open(c, c->config.user);
        if (c->auth_msg != NULL || has_work(c))
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
    if (config->token != NULL) {
        struct out_msg *check = auth_message("connect", config->token);
        if (check == NULL) {
            free(c);
            return LHTTP_E_ARGUMENT;
        }
        free(check);
        c->token = (char *)malloc(strlen(config->token) + 1);
        if (c->token != NULL)
            strcpy(c->token, config->token);
        if (c->token == NULL) {
            free(c);
            return LHTTP_E_NO_MEMORY;
        }
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
        free(c->token);
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

/* --- acknowledged publishes ------------------------------------------------ */

static int str_is(lhttp_str s, const char *text)
{
    size_t n = strlen(text);
    return s.len == n && memcmp(s.ptr, text, n) == 0;
}

static int str_is_nocase(lhttp_str s, const char *text)
{
    size_t i, n = strlen(text);
    if (s.len != n)
        return 0;
    for (i = 0; i < n; i++) {
        char a = s.ptr[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != text[i])
            return 0;
    }
    return 1;
}

static int valid_key(const char *key)
{
    size_t n = strlen(key), i;
    if (n == 0 || n > 64)
        return 0;
    for (i = 0; i < n; i++)
        if (key[i] < '!' || key[i] > '~')
            return 0;
    return 1;
}

/* 128 random bits as hex. */
static void new_key(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char bytes[16];
    size_t i, got = 0;
    FILE *random = fopen("/dev/urandom", "rb");
    if (random != NULL) {
        got = fread(bytes, 1, sizeof bytes, random);
        fclose(random);
    }
    for (i = got; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(rand() & 0xff);
    for (i = 0; i < sizeof bytes; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    out[32] = '\0';
}

static void tell(lhttp_client *c, struct pending_ack *p, int status, int duplicate,
                 const lhttp_message *reply)
{
    lhttp_publish_result result;
    lws_sul_cancel(&p->sul);
    if (!c->silent && p->done) {
        result.status = status;
        result.duplicate = duplicate;
        result.attempts = p->attempts;
        result.key = p->key;
        result.reply = reply;
        p->done(c, &result, p->user);
    }
    free(p->data);
    free(p);
}

/* The connection is gone: every publish still waiting is told so. */
static void fail_acks(lhttp_client *c)
{
    struct pending_ack *p;
    pthread_mutex_lock(&c->lock);
    p = c->acks;
    c->acks = NULL;
    pthread_mutex_unlock(&c->lock);
    while (p != NULL) {
        struct pending_ack *next = p->next;
        tell(c, p, LHTTP_E_CLOSED, 0, NULL);
        p = next;
    }
}

static void send_again(lws_sorted_usec_list_t *sul)
{
    struct pending_ack *p = lws_container_of(sul, struct pending_ack, sul);
    lhttp_client *c = p->client;
    struct pending_ack **at;
    long rc = lhttp_client_send_raw(c, p->data, p->len);
    if (rc >= 0)
        return;
    pthread_mutex_lock(&c->lock);
    for (at = &c->acks; *at != NULL && *at != p; at = &(*at)->next)
        ;
    if (*at == p)
        *at = p->next;
    pthread_mutex_unlock(&c->lock);
    tell(c, p, (int)rc, 0, NULL);
}

/*
 * The node's answer to one of our acknowledged publishes: an `ack` or an
 * `error` in the node's own word (first header lhttp-node:reply; never a
 * client's look-alike) with its publish-ack id.  Returns 1 if it was one.
 */
static int take_ack(lhttp_client *c, const lhttp_message *msg)
{
    const lhttp_str *id;
    const lhttp_str *value;
    struct pending_ack **at;
    struct pending_ack *p = NULL;
    int ack, status = 0;
    size_t i;

    ack = str_is(msg->command, "ack");
    if (!ack && !str_is(msg->command, "error"))
        return 0;
    if (msg->header_count == 0 || !str_is_nocase(msg->headers[0].name, "lhttp-node") ||
        !str_is(msg->headers[0].value, "reply"))
        return 0;
    id = lhttp_get_header(msg, "publish-ack");
    if (id == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    for (at = &c->acks; *at != NULL; at = &(*at)->next) {
        if (str_is(*id, (*at)->id)) {
            p = *at;
            *at = p->next;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (p == NULL)
        return 0;
    if (ack) {
        value = lhttp_get_header(msg, "duplicate");
        tell(c, p, 200, value != NULL && str_is(*value, "true"), msg);
        return 1;
    }
    value = lhttp_get_header(msg, "status");
    for (i = 0; value != NULL && i < value->len && i < 4; i++) {
        if (value->ptr[i] < '0' || value->ptr[i] > '9')
            break;
        status = status * 10 + (value->ptr[i] - '0');
    }
    if ((status == 503 || status == 429) && p->attempts <= p->retries) {
        lws_usec_t delay = 250000;
        for (i = 1; (int)i < p->attempts && delay < 4000000; i++)
            delay *= 2;
        if (delay > 4000000)
            delay = 4000000;
        p->attempts++;
        pthread_mutex_lock(&c->lock);
        p->next = c->acks;
        c->acks = p;
        pthread_mutex_unlock(&c->lock);
        lws_sul_schedule(c->context, 0, &p->sul, send_again, delay);
        return 1;
    }
    tell(c, p, status, 0, msg);
    return 1;
}

long lhttp_client_publish_acked(lhttp_client *client, const char *channels,
                                const char *command, const lhttp_header *headers,
                                size_t header_count, const char *body,
                                size_t body_len, const char *key, int retries,
                                lhttp_publish_cb done, void *user)
{
    struct pending_ack *p;
    lhttp_header *all;
    lhttp_message msg;
    size_t len = 0, written = 0;
    long rc;

    if (client == NULL || channels == NULL || command == NULL || done == NULL ||
        (headers == NULL && header_count > 0) || (body == NULL && body_len > 0) ||
        retries < 0 || (key != NULL && !valid_key(key)))
        return LHTTP_E_ARGUMENT;
    p = (struct pending_ack *)calloc(1, sizeof *p);
    all = (lhttp_header *)malloc((header_count + 3) * sizeof *all);
    if (p == NULL || all == NULL) {
        free(p);
        free(all);
        return LHTTP_E_NO_MEMORY;
    }
    p->client = client;
    p->attempts = 1;
    p->retries = retries;
    p->done = done;
    p->user = user;
    if (key != NULL)
        strcpy(p->key, key);
    else
        new_key(p->key);
    pthread_mutex_lock(&client->lock);
    snprintf(p->id, sizeof p->id, "c%lu", ++client->next_ack);
    pthread_mutex_unlock(&client->lock);

    all[0].name = lhttp_cstr("publish");
    all[0].value = lhttp_cstr(channels);
    all[1].name = lhttp_cstr("publish-ack");
    all[1].value = lhttp_cstr(p->id);
    all[2].name = lhttp_cstr("idempotency-key");
    all[2].value = lhttp_cstr(p->key);
    if (header_count > 0)
        memcpy(all + 3, headers, header_count * sizeof *all);
    msg.command = lhttp_cstr(command);
    msg.headers = all;
    msg.header_count = header_count + 3;
    msg.body.ptr = body;
    msg.body.len = body_len;
    rc = lhttp_serialized_size(&msg, &len);
    if (rc == LHTTP_OK) {
        p->data = (char *)malloc(len ? len : 1);
        rc = p->data == NULL ? LHTTP_E_NO_MEMORY
                             : lhttp_serialize(&msg, p->data, len, &written);
    }
    free(all);
    if (rc != LHTTP_OK) {
        free(p->data);
        free(p);
        return rc;
    }
    p->len = len;
    /* Listed before it is sent: the answer may come at once. */
    pthread_mutex_lock(&client->lock);
    p->next = client->acks;
    client->acks = p;
    pthread_mutex_unlock(&client->lock);
    rc = lhttp_client_send_raw(client, p->data, p->len);
    if (rc < 0) {
        struct pending_ack **at;
        int found = 0;
        pthread_mutex_lock(&client->lock);
        for (at = &client->acks; *at != NULL; at = &(*at)->next) {
            if (*at == p) {
                *at = p->next;
                found = 1;
                break;
            }
        }
        pthread_mutex_unlock(&client->lock);
        /* Not found: the connection ended meanwhile and `done` was told. */
        if (found) {
            free(p->data);
            free(p);
        }
    }
    return rc;
}

/* --- authentication --------------------------------------------------------- */

/* A token is sent as a header value: printable ASCII, no blanks. */
static int valid_token(const char *token)
{
    size_t i;
    if (token == NULL || token[0] == '\0')
        return 0;
    for (i = 0; token[i] != '\0'; i++)
        if (token[i] < '!' || token[i] > '~')
            return 0;
    return 1;
}

/* `LHTTP/1.0 <command>\r\ntoken:<token>\r\n\r\n`, ready to write; NULL if not a token. */
static struct out_msg *auth_message(const char *command, const char *token)
{
    struct out_msg *m;
    size_t len;

    if (!valid_token(token))
        return NULL;
    len = strlen(LHTTP_VERSION_STRING " ") + strlen(command) + strlen("\r\ntoken:") +
          strlen(token) + strlen("\r\n\r\n");
    m = (struct out_msg *)malloc(sizeof *m + LWS_PRE + len + 1);
    if (m == NULL)
        return NULL;
    m->next = NULL;
    m->seq = 0;
    m->binary = 0;
    m->len = len;
    m->data = (unsigned char *)(m + 1) + LWS_PRE;
    snprintf((char *)m->data, len + 1, LHTTP_VERSION_STRING " %s\r\ntoken:%s\r\n\r\n",
             command, token);
    return m;
}

long lhttp_client_refresh(lhttp_client *client, const char *token)
{
    struct out_msg *m;
    long rc;

    if (client == NULL)
        return LHTTP_E_ARGUMENT;
    m = auth_message("refresh", token);
    if (m == NULL)
        return valid_token(token) ? LHTTP_E_NO_MEMORY : LHTTP_E_ARGUMENT;
    rc = lhttp_client_send_raw(client, (const char *)m->data, m->len);
    free(m);
    return rc;
}

static int header_number(const lhttp_message *msg, const char *name, long long *out)
{
    const lhttp_str *value = lhttp_get_header(msg, name);
    unsigned long long n;
    if (value == NULL || lhttp_parse_u64(*value, &n) != LHTTP_OK || n > 0x7fffffffffffffffULL)
        return 0;
    *out = (long long)n;
    return 1;
}

static lhttp_str header_or_empty(const lhttp_message *msg, const char *name)
{
    const lhttp_str *value = lhttp_get_header(msg, name);
    return value != NULL ? *value : lhttp_cstr(NULL);
}

/*
 * The node's word about the credential: its reply to connect or refresh,
 * an error reply to either, its refresh notice.  Given to on_auth, not to
 * on_message (unless neither a token nor on_auth was configured).  A
 * connect accepted lets the queued messages go.  Returns 1 if it was one.
 */
static int take_auth(lhttp_client *c, const lhttp_message *msg)
{
    lhttp_auth_result result;
    const lhttp_str *about;
    long long number;
    int error;

    if (c->token == NULL && c->config.on_auth == NULL)
        return 0;
    if (msg->header_count == 0 || !str_is_nocase(msg->headers[0].name, "lhttp-node") ||
        !str_is(msg->headers[0].value, "reply"))
        return 0;
    memset(&result, 0, sizeof result);
    error = str_is(msg->command, "error");
    about = error ? lhttp_get_header(msg, "command") : &msg->command;
    if (about == NULL)
        return 0;
    if (str_is(*about, "connect"))
        result.command = "connect";
    else if (str_is(*about, "refresh"))
        result.command = "refresh";
    else
        return 0;
    result.status = header_number(msg, "status", &number) && number < 1000 ? (int)number : 0;
    result.expires = header_number(msg, "expires", &number) ? number : -1;
    result.grace = !error && header_number(msg, "grace", &number) && number < 0x7fffffff
                       ? (int)number : 0;
    result.user = header_or_empty(msg, "user");
    result.reason = header_or_empty(msg, "reason");
    result.detail = error ? msg->body : lhttp_cstr(NULL);
    result.reply = msg;
    if (!error && result.status == 200 && c->auth_waiting && result.command[0] == 'c') {
        c->auth_waiting = 0;
        if (c->wsi != NULL && has_work(c))
            lws_callback_on_writable(c->wsi);
    }
    if (c->config.on_auth)
        c->config.on_auth(c, &result, c->config.user);
    return 1;
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
    /* Before the context goes: their timers are on its scheduler. */
    fail_acks(client);
    if (client->context != NULL) {
        /* Destroying the context may run callbacks; they must find a live client. */
        lws_context_destroy(client->context);
        client->context = NULL;
    }
    free_queue(client);
    free(client->auth_msg);
    free(client->token);
    free(client->rx);
    free(client->headers);
    pthread_mutex_destroy(&client->lock);
    free(client);
}
