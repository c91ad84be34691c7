/*
 * For the Python tests: a client with a connection token against a node
 * (or the scripted fake node of tests/authnode.py), printing one line per
 * event:
 *
 *     auth <command> status=<n> user=<user> expires=<n|-1> grace=<n> detail=<text>
 *     message <command> <body>
 *     close <code>
 *
 *     auth_client URL TOKEN CHANNEL [REFRESH_TOKEN...]
 *
 * subscribes to CHANNEL and publishes "hello" to it from on_open (queued:
 * written only once the node accepted the token), and once its own message
 * is back sends a refresh with each REFRESH_TOKEN in turn (the next after
 * the answer to the last), then closes.
 */
#include "lhttp/lhttp.h"

#include <stdio.h>
#include <string.h>

struct run {
    const char *channel;
    char **refresh;
    int refresh_count;
    int refreshed;
};

static void next_refresh(lhttp_client *client, struct run *run)
{
    if (run->refreshed < run->refresh_count)
        lhttp_client_refresh(client, run->refresh[run->refreshed++]);
    else
        lhttp_client_close(client);
}

static void on_open(lhttp_client *client, void *user)
{
    struct run *run = (struct run *)user;
    lhttp_client_subscribe(client, run->channel);
    lhttp_client_publish(client, run->channel, "chat", NULL, 0, "hello", 5);
}

static void on_auth(lhttp_client *client, const lhttp_auth_result *r, void *user)
{
    struct run *run = (struct run *)user;
    printf("auth %s status=%d user=%.*s expires=%lld grace=%d detail=%.*s\n", r->command,
           r->status, (int)r->user.len, r->user.ptr, r->expires, r->grace,
           (int)r->detail.len, r->detail.ptr);
    fflush(stdout);
    if (strcmp(r->command, "refresh") == 0 && r->grace == 0)
        next_refresh(client, run);
}

static void on_message(lhttp_client *client, const lhttp_message *msg, const char *raw,
                       size_t len, int status, void *user)
{
    (void)raw; (void)len; (void)status;
    if (msg == NULL)
        return;
    printf("message %.*s %.*s\n", (int)msg->command.len, msg->command.ptr,
           (int)msg->body.len, msg->body.ptr);
    fflush(stdout);
    if (lhttp_str_ieq(msg->command, "chat"))
        next_refresh(client, (struct run *)user);
}

static void on_close(lhttp_client *client, int code, const char *reason, void *user)
{
    (void)client; (void)reason; (void)user;
    printf("close %d\n", code);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    lhttp_client_config config;
    lhttp_client *client;
    struct run run;
    int rc;

    if (argc < 4) {
        fprintf(stderr, "usage: auth_client URL TOKEN CHANNEL [REFRESH_TOKEN...]\n");
        return 2;
    }
    memset(&run, 0, sizeof run);
    run.channel = argv[3];
    run.refresh = argv + 4;
    run.refresh_count = argc - 4;
    memset(&config, 0, sizeof config);
    config.url = argv[1];
    config.token = argv[2];
    config.on_open = on_open;
    config.on_auth = on_auth;
    config.on_message = on_message;
    config.on_close = on_close;
    config.user = &run;
    rc = lhttp_client_new(&config, &client);
    if (rc != LHTTP_OK) {
        fprintf(stderr, "lhttp_client_new: %s\n", lhttp_strerror(rc));
        return 1;
    }
    lhttp_client_run(client);
    lhttp_client_free(client);
    return 0;
}
