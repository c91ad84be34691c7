/*
 * For the Python tests: publish with lhttp_client_publish_acked() to a real
 * node and print what the callback was told, one line:
 *
 *     status=<n> duplicate=<0|1> attempts=<n> key=<key> offset=<offset|->
 *
 *     publish_acked URL CHANNELS BODY KEY|- RETRIES [COUNT]
 *
 * publishes BODY COUNT times (default 1) one after the other, each with KEY
 * ("-": a new random key each), and prints one line per publish, and a line
 * "message <command>" for every message given to on_message.  It exits 0
 * once every publish was acknowledged, 1 otherwise.
 */
#include "lhttp/lhttp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct run {
    const char *channels;
    const char *body;
    const char *key;
    int retries;
    int count;
    int done;
    int failed;
};

static void published(lhttp_client *client, const lhttp_publish_result *result, void *user);

static void publish_next(lhttp_client *client, struct run *run)
{
    long rc = lhttp_client_publish_acked(client, run->channels, "chat", NULL, 0, run->body,
                                         strlen(run->body), run->key, run->retries,
                                         published, run);
    if (rc < 0) {
        fprintf(stderr, "publish failed: %s\n", lhttp_strerror((int)rc));
        run->failed = 1;
        lhttp_client_close(client);
    }
}

static void published(lhttp_client *client, const lhttp_publish_result *result, void *user)
{
    struct run *run = (struct run *)user;
    const lhttp_str *offset = result->reply ? lhttp_get_header(result->reply, "offset") : NULL;
    printf("status=%d duplicate=%d attempts=%d key=%s offset=%.*s\n", result->status,
           result->duplicate, result->attempts, result->key,
           offset ? (int)offset->len : 1, offset ? offset->ptr : "-");
    fflush(stdout);
    if (result->status != 200)
        run->failed = 1;
    if (++run->done < run->count)
        publish_next(client, run);
    else
        lhttp_client_close(client);
}

static void on_open(lhttp_client *client, void *user)
{
    publish_next(client, (struct run *)user);
}

static void on_message(lhttp_client *client, const lhttp_message *msg, const char *raw,
                       size_t len, int status, void *user)
{
    (void)client; (void)raw; (void)len; (void)status; (void)user;
    if (msg != NULL)
        printf("message %.*s\n", (int)msg->command.len, msg->command.ptr);
}

int main(int argc, char **argv)
{
    lhttp_client_config config;
    lhttp_client *client;
    struct run run;

    if (argc < 6) {
        fprintf(stderr, "usage: publish_acked URL CHANNELS BODY KEY|- RETRIES [COUNT]\n");
        return 2;
    }
    memset(&run, 0, sizeof run);
    run.channels = argv[2];
    run.body = argv[3];
    run.key = strcmp(argv[4], "-") == 0 ? NULL : argv[4];
    run.retries = atoi(argv[5]);
    run.count = argc > 6 ? atoi(argv[6]) : 1;
    memset(&config, 0, sizeof config);
    config.url = argv[1];
    config.on_open = on_open;
    config.on_message = on_message;
    config.user = &run;
    if (lhttp_client_new(&config, &client) != LHTTP_OK)
        return 1;
    lhttp_client_run(client);
    lhttp_client_free(client);
    return run.failed || run.done < run.count ? 1 : 0;
}
