/*
 * The client against an in-process libwebsockets echo server on a loopback
 * port: queueing before open, order, sequence numbers, text and binary
 * frames, large (fragmented) messages, unparseable input, closing from
 * another thread, and the incoming size limit.
 */
#include "lhttp/client.h"
#include "check.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdlib.h>

/* --- the echo server ------------------------------------------------------ */

struct echo_session {
    unsigned char *buf; /* LWS_PRE headroom, then the message */
    size_t len;
    size_t cap;
    int binary;
    int pending;
};

#define MAX_FRAMES 16
static int server_frame_binary[MAX_FRAMES];
static int server_frames = 0;
static volatile int server_stop = 0;

static int echo_callback(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len)
{
    struct echo_session *s = (struct echo_session *)user;

    switch (reason) {
    case LWS_CALLBACK_RECEIVE:
        if (lws_is_first_fragment(wsi)) {
            s->len = 0;
            s->binary = lws_frame_is_binary(wsi);
        }
        if (LWS_PRE + s->len + len > s->cap) {
            size_t cap = (LWS_PRE + s->len + len) * 2;
            unsigned char *grown = (unsigned char *)realloc(s->buf, cap);
            if (grown == NULL)
                return -1;
            s->buf = grown;
            s->cap = cap;
        }
        memcpy(s->buf + LWS_PRE + s->len, in, len);
        s->len += len;
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
            if (server_frames < MAX_FRAMES)
                server_frame_binary[server_frames] = s->binary;
            server_frames++;
            s->pending = 1;
            lws_rx_flow_control(wsi, 0); /* one message at a time */
            lws_callback_on_writable(wsi);
        }
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (s->pending) {
            s->pending = 0;
            if (lws_write(wsi, s->buf + LWS_PRE, s->len,
                          s->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < 0)
                return -1;
            lws_rx_flow_control(wsi, 1);
        }
        break;
    case LWS_CALLBACK_CLOSED:
        free(s->buf);
        s->buf = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static struct lws_protocols echo_protocols[] = {
    {"echo", echo_callback, sizeof(struct echo_session), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

static void *serve(void *arg)
{
    struct lws_context *context = (struct lws_context *)arg;
    while (!server_stop)
        lws_service(context, 0);
    return NULL;
}

/* Start the server; returns its port. */
static int start_server(struct lws_context **out, pthread_t *thread)
{
    struct lws_context_creation_info info;
    struct lws_vhost *vhost;
    struct lws_context *context;

    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.port = 0;
    info.iface = "127.0.0.1";
    info.protocols = echo_protocols;
    info.gid = -1;
    info.uid = -1;
    info.fd_limit_per_thread = 32;
    context = lws_create_context(&info);
    if (context == NULL)
        return -1;
    vhost = lws_create_vhost(context, &info);
    if (vhost == NULL || pthread_create(thread, NULL, serve, context) != 0) {
        lws_context_destroy(context);
        return -1;
    }
    *out = context;
    return lws_get_vhost_listen_port(vhost);
}

static void stop_server(struct lws_context *context, pthread_t thread)
{
    server_stop = 1;
    lws_cancel_service(context);
    pthread_join(thread, NULL);
    lws_context_destroy(context);
}

/* --- what the client saw ---------------------------------------------------- */

#define MAX_SEEN 16

struct seen {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int opens;
    int closes;
    int close_code;
    long sent[MAX_SEEN];
    int sent_count;
    char *raw[MAX_SEEN];
    size_t raw_len[MAX_SEEN];
    int status[MAX_SEEN];
    int had_msg[MAX_SEEN];
    char nick[MAX_SEEN][16];
    int messages;
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
}

static void seen_free(struct seen *s)
{
    int i;
    for (i = 0; i < MAX_SEEN; i++)
        free(s->raw[i]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
}

static void on_open(lhttp_client *c, void *user)
{
    struct seen *s = (struct seen *)user;
    (void)c;
    s->opens++;
}

static void on_message(lhttp_client *c, const lhttp_message *msg,
                       const char *raw, size_t len, int status, void *user)
{
    struct seen *s = (struct seen *)user;
    int i;
    (void)c;
    pthread_mutex_lock(&s->lock);
    i = s->messages;
    if (i < MAX_SEEN) {
        s->raw[i] = (char *)malloc(len ? len : 1);
        if (len)
            memcpy(s->raw[i], raw, len);
        s->raw_len[i] = len;
        s->status[i] = status;
        s->had_msg[i] = msg != NULL;
        if (msg != NULL) {
            const lhttp_str *nick = lhttp_get_header(msg, "nick");
            if (nick != NULL && nick->len < sizeof s->nick[i]) {
                memcpy(s->nick[i], nick->ptr, nick->len);
                s->nick[i][nick->len] = '\0';
            }
        }
    }
    s->messages++;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

static void on_sent(lhttp_client *c, long seq, void *user)
{
    struct seen *s = (struct seen *)user;
    (void)c;
    if (s->sent_count < MAX_SEEN)
        s->sent[s->sent_count] = seq;
    s->sent_count++;
}

static void on_close(lhttp_client *c, int code, const char *reason, void *user)
{
    struct seen *s = (struct seen *)user;
    (void)c;
    (void)reason;
    s->closes++;
    s->close_code = code;
}

static void configure(lhttp_client_config *config, const char *url, struct seen *s)
{
    memset(config, 0, sizeof *config);
    config->url = url;
    config->on_open = on_open;
    config->on_message = on_message;
    config->on_sent = on_sent;
    config->on_close = on_close;
    config->user = s;
}

/* --- tests ---------------------------------------------------------------- */

struct closer {
    lhttp_client *client;
    struct seen *seen;
    int wait_for;
    long send_after_close;
};

/* Another thread: once enough echoes arrived, close; then sending fails. */
static void *close_when_echoed(void *arg)
{
    struct closer *k = (struct closer *)arg;
    pthread_mutex_lock(&k->seen->lock);
    while (k->seen->messages < k->wait_for)
        pthread_cond_wait(&k->seen->changed, &k->seen->lock);
    pthread_mutex_unlock(&k->seen->lock);
    lhttp_client_close(k->client);
    k->send_after_close = lhttp_client_send_raw(k->client, "x", 1);
    return NULL;
}

static void test_echo(const char *url)
{
    lhttp_client_config config;
    lhttp_client *client = NULL;
    struct seen s;
    struct closer k;
    pthread_t closer;
    lhttp_header nick;
    char *big;
    size_t big_len = 300000;
    size_t i;
    long seq;

    seen_init(&s);
    configure(&config, url, &s);
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_OK);
    if (client == NULL)
        return;
    CHECK(!lhttp_client_is_open(client));

    /* All queued before the connection is open. */
    nick.name = lhttp_cstr("nick");
    nick.value = lhttp_cstr("ann");
    CHECK_EQ_INT(lhttp_client_subscribe(client, "a b"), 1);
    CHECK_EQ_INT(lhttp_client_publish(client, "a", "chat", &nick, 1, "hi", 2), 2);
    CHECK_EQ_INT(lhttp_client_send_raw(client, "\xff\xfe", 2), 3);
    big = (char *)malloc(big_len);
    for (i = 0; i < big_len; i++)
        big[i] = (char)('a' + i % 26);
    CHECK_EQ_INT(lhttp_client_publish(client, "a", "big", NULL, 0, big, big_len), 4);
    CHECK_EQ_INT(lhttp_client_unsubscribe(client, "a b"), 5);
    nick.value = lhttp_cstr(" bad");
    seq = lhttp_client_publish(client, "a", "chat", &nick, 1, "", 0);
    CHECK_EQ_INT(seq, LHTTP_E_VALUE);

    k.client = client;
    k.seen = &s;
    k.wait_for = 5;
    k.send_after_close = 0;
    CHECK(pthread_create(&closer, NULL, close_when_echoed, &k) == 0);
    CHECK_EQ_INT(lhttp_client_run(client), LHTTP_OK);
    pthread_join(closer, NULL);

    CHECK_EQ_INT(s.opens, 1);
    CHECK_EQ_INT(s.closes, 1);
    CHECK_EQ_INT(s.close_code, 1000);
    CHECK_EQ_INT(k.send_after_close, LHTTP_E_CLOSED);
    CHECK_EQ_INT(s.sent_count, 5);
    for (i = 0; i < 5; i++)
        CHECK_EQ_INT(s.sent[i], (long)i + 1);

    /* Echoed in order, text frames for UTF-8, binary for the rest. */
    CHECK_EQ_INT(s.messages, 5);
    CHECK_EQ_INT(server_frames, 5);
    CHECK_EQ_INT(server_frame_binary[0] + server_frame_binary[1] +
                 server_frame_binary[3] + server_frame_binary[4], 0);
    CHECK_EQ_INT(server_frame_binary[2], 1);
    if (s.messages == 5) {
        const char *sub = "LHTTP/1.0 subscribe\r\nsubscribe:a b\r\n\r\n";
        const char *pub = "LHTTP/1.0 chat\r\npublish:a\r\nnick:ann\r\n\r\nhi";
        const char *big_head = "LHTTP/1.0 big\r\npublish:a\r\n\r\n";
        CHECK_EQ_INT(s.raw_len[0], strlen(sub));
        CHECK(memcmp(s.raw[0], sub, strlen(sub)) == 0);
        CHECK_EQ_INT(s.status[0], LHTTP_OK);
        CHECK_EQ_INT(s.raw_len[1], strlen(pub));
        CHECK(memcmp(s.raw[1], pub, strlen(pub)) == 0);
        CHECK(strcmp(s.nick[1], "ann") == 0);
        CHECK_EQ_INT(s.raw_len[2], 2);
        CHECK_EQ_INT(s.status[2], LHTTP_E_START_LINE);
        CHECK_EQ_INT(s.had_msg[2], 0);
        CHECK_EQ_INT(s.raw_len[3], strlen(big_head) + big_len);
        CHECK(memcmp(s.raw[3], big_head, strlen(big_head)) == 0);
        CHECK(memcmp(s.raw[3] + strlen(big_head), big, big_len) == 0);
        CHECK_EQ_INT(s.status[4], LHTTP_OK);
    }
    free(big);
    lhttp_client_free(client);
    seen_free(&s);
}

static void test_too_large(const char *url)
{
    lhttp_client_config config;
    lhttp_client *client = NULL;
    struct seen s;
    char body[2000];

    seen_init(&s);
    configure(&config, url, &s);
    config.max_message_size = 1000;
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_OK);
    if (client == NULL)
        return;
    memset(body, 'x', sizeof body);
    CHECK(lhttp_client_publish(client, "a", "chat", NULL, 0, body, sizeof body) > 0);
    CHECK_EQ_INT(lhttp_client_run(client), LHTTP_E_CLOSED);
    CHECK_EQ_INT(s.messages, 0);
    CHECK_EQ_INT(s.closes, 1);
    CHECK_EQ_INT(s.close_code, 1009);
    lhttp_client_free(client);
    seen_free(&s);
}

int main(void)
{
    struct lws_context *server = NULL;
    pthread_t thread;
    char url[64];
    int port;

    lws_set_log_level(LLL_ERR, NULL);
    port = start_server(&server, &thread);
    CHECK(port > 0);
    if (port <= 0)
        CHECK_DONE();
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", port);
    test_echo(url);
    test_too_large(url);
    stop_server(server, thread);
    CHECK_DONE();
}
