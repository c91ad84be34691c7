/* Subscribe to a channel, publish to it, print what comes back, quit. */
#include <lhttp/lhttp.h>
#include <stdio.h>

static void on_message(lhttp_client *c, const lhttp_message *msg,
                       const char *raw, size_t len, int status, void *user)
{
    (void)raw; (void)len; (void)user;
    if (status == LHTTP_OK) {
        printf("%.*s: %.*s\n", (int)msg->command.len, msg->command.ptr,
               (int)msg->body.len, msg->body.ptr);
        lhttp_client_close(c);
    }
}

int main(int argc, char **argv)
{
    lhttp_client_config config = {0};
    lhttp_client *client;
    config.url = argc > 1 ? argv[1] : "ws://127.0.0.1:8081/";
    config.on_message = on_message;
    if (lhttp_client_new(&config, &client) != LHTTP_OK)
        return 1;
    lhttp_client_subscribe(client, "news");
    lhttp_client_publish(client, "news", "chat", NULL, 0, "hello", 5);
    int rc = lhttp_client_run(client);
    lhttp_client_free(client);
    return rc == LHTTP_OK ? 0 : 1;
}
