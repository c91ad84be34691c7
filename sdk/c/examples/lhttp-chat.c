/*
 * lhttp-chat: a terminal chat client for an LHTTP room.
 *
 *     lhttp-chat [--ca-file FILE] ws://host:8081/ room nick
 *
 * (`--ca-file`: PEM certificates to trust for wss://, instead of the system's.)
 *
 * Subscribes to `room`, publishes every line read from stdin as
 *
 *     LHTTP/1.0 chat\r\npublish:<room>\r\nnick:<nick>\r\n\r\n<line>
 *
 * and prints one line to stdout per event, flushed at once:
 *
 *     * joined <room>                      the subscribe request was written
 *     msg<TAB><nick><TAB><text>             a message published to the room
 *     * error<TAB><status><TAB><reason><TAB><body>   an LHTTP error reply
 *     * closed <code> <reason>             the connection ended
 *
 * In the tab-separated fields, backslash, tab, CR and LF are written as \\,
 * \t, \r, \n and other control bytes as \xHH; everything else (UTF-8 too)
 * as is.  `nick` is the sender's `nick` header (empty for a plain pub/sub
 * client without one) and `text` the message body.  At end of input the
 * client closes once everything typed was sent, and exits 0; it exits 1 if
 * the connection fails or the server ends it, 2 on bad arguments.
 */
#define _POSIX_C_SOURCE 200809L

#include "lhttp/lhttp.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chat {
    lhttp_client *client;
    const char *room;
    const char *nick;
    long subscribe_seq;
};

static volatile sig_atomic_t stop_signal = 0;

/* Global, so the client stays reachable when the process exits under a reader
   still blocked on stdin (nothing to free then, nothing for LeakSanitizer). */
static struct chat the_chat;
static pthread_mutex_t reader_lock = PTHREAD_MUTEX_INITIALIZER;
static int reader_done = 0;

static void on_signal(int signum)
{
    stop_signal = signum;
}

/* Write a field with tabs, line breaks and control bytes escaped. */
static void put_field(const char *p, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        switch (c) {
        case '\\': fputs("\\\\", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        default:
            if (c < 0x20 || c == 0x7f)
                printf("\\x%02x", c);
            else
                putchar(c);
        }
    }
}

static void put_header(const lhttp_message *msg, const char *name)
{
    const lhttp_str *value = lhttp_get_header(msg, name);
    if (value != NULL)
        put_field(value->ptr, value->len);
}

static void on_sent(lhttp_client *client, long seq, void *user)
{
    struct chat *chat = (struct chat *)user;
    (void)client;
    if (seq == chat->subscribe_seq) {
        printf("* joined %s\n", chat->room);
        fflush(stdout);
    }
}

static void on_message(lhttp_client *client, const lhttp_message *msg,
                       const char *raw, size_t len, int status, void *user)
{
    (void)client;
    (void)user;
    if (status != LHTTP_OK) {
        fprintf(stderr, "lhttp-chat: ignoring a message that does not parse (%s): %.*s\n",
                lhttp_strerror(status), (int)(len > 80 ? 80 : len), raw);
        return;
    }
    if (lhttp_str_ieq(msg->command, "error") && lhttp_get_header(msg, "publish") == NULL) {
        fputs("* error\t", stdout);
        put_header(msg, "status");
        putchar('\t');
        put_header(msg, "reason");
        putchar('\t');
    } else {
        fputs("msg\t", stdout);
        put_header(msg, "nick");
        putchar('\t');
    }
    put_field(msg->body.ptr, msg->body.len);
    putchar('\n');
    fflush(stdout);
}

static void on_close(lhttp_client *client, int code, const char *reason, void *user)
{
    (void)client;
    (void)user;
    printf("* closed %d %s\n", code, reason);
    fflush(stdout);
}

/* The stdin thread: one publish per line, then a graceful close. */
static void *read_lines(void *arg)
{
    struct chat *chat = (struct chat *)arg;
    lhttp_header nick;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    nick.name = lhttp_cstr("nick");
    nick.value = lhttp_cstr(chat->nick);
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        long rc;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        rc = lhttp_client_publish(chat->client, chat->room, "chat", &nick, 1,
                                  line, (size_t)n);
        if (rc < 0) {
            fprintf(stderr, "lhttp-chat: cannot send: %s\n", lhttp_strerror((int)rc));
            if (rc == LHTTP_E_CLOSED)
                break;
        }
    }
    free(line);
    lhttp_client_close(chat->client);
    pthread_mutex_lock(&reader_lock);
    reader_done = 1;
    pthread_mutex_unlock(&reader_lock);
    return NULL;
}

static int valid_word(const char *s)
{
    size_t i;
    if (s[0] == '\0')
        return 0;
    for (i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    lhttp_client_config config;
    struct sigaction sa;
    sigset_t block;
    sigset_t old;
    pthread_t reader;
    int rc;
    const char *program = argc > 0 ? argv[0] : "lhttp-chat";
    const char *ca_file = NULL;

    if (argc > 2 && strcmp(argv[1], "--ca-file") == 0) {
        ca_file = argv[2];
        argc -= 2;
        argv += 2;
    }
    if (argc != 4 || !valid_word(argv[2]) || !valid_word(argv[3])) {
        fprintf(stderr, "usage: %s [--ca-file FILE] ws://host:port/ room nick\n"
                        "  (room and nick: no spaces or control characters)\n",
                program);
        return 2;
    }
    the_chat.room = argv[2];
    the_chat.nick = argv[3];

    memset(&config, 0, sizeof config);
    config.url = argv[1];
    config.ca_file = ca_file;
    config.on_sent = on_sent;
    config.on_message = on_message;
    config.on_close = on_close;
    config.user = &the_chat;
    rc = lhttp_client_new(&config, &the_chat.client);
    if (rc != LHTTP_OK) {
        fprintf(stderr, "lhttp-chat: %s: %s\n", argv[1], lhttp_strerror(rc));
        return rc == LHTTP_E_URL ? 2 : 1;
    }
    the_chat.subscribe_seq = lhttp_client_subscribe(the_chat.client, the_chat.room);

    /* Signals go to this (the service) thread, which closes cleanly. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    if (pthread_create(&reader, NULL, read_lines, &the_chat) != 0) {
        fprintf(stderr, "lhttp-chat: cannot start the input thread\n");
        lhttp_client_free(the_chat.client);
        return 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    while (!lhttp_client_service(the_chat.client)) {
        if (stop_signal)
            lhttp_client_close(the_chat.client);
    }
    rc = lhttp_client_run(the_chat.client);
    /* A reader still blocked on stdin may yet use the client: keep it then. */
    pthread_mutex_lock(&reader_lock);
    if (reader_done) {
        pthread_mutex_unlock(&reader_lock);
        pthread_join(reader, NULL);
        lhttp_client_free(the_chat.client);
    } else {
        pthread_mutex_unlock(&reader_lock);
    }
    return rc == LHTTP_OK ? 0 : 1;
}
