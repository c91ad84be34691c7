/*
 * Unit tests for the client parts that need no server: URL parsing, argument
 * checks, and a refused connection reported through on_close and run().
 * The exchange with a real server is tested by tests/test_c_sdk.py.
 */
#include "lhttp/client.h"
#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_url(void)
{
    lhttp_url u;

    CHECK_EQ_INT(lhttp_url_parse("ws://127.0.0.1:8081/", &u), LHTTP_OK);
    CHECK_EQ_INT(u.tls, 0);
    CHECK(strcmp(u.host, "127.0.0.1") == 0);
    CHECK_EQ_INT(u.port, 8081);
    CHECK(strcmp(u.path, "/") == 0);

    CHECK_EQ_INT(lhttp_url_parse("WSS://example.com", &u), LHTTP_OK);
    CHECK_EQ_INT(u.tls, 1);
    CHECK(strcmp(u.host, "example.com") == 0);
    CHECK_EQ_INT(u.port, 443);
    CHECK(strcmp(u.path, "/") == 0);

    CHECK_EQ_INT(lhttp_url_parse("ws://h/chat/room?token=x#frag", &u), LHTTP_OK);
    CHECK_EQ_INT(u.port, 80);
    CHECK(strcmp(u.path, "/chat/room?token=x") == 0);

    CHECK_EQ_INT(lhttp_url_parse("ws://h?x=1", &u), LHTTP_OK);
    CHECK(strcmp(u.path, "/?x=1") == 0);

    CHECK_EQ_INT(lhttp_url_parse("ws://[::1]:9000/p", &u), LHTTP_OK);
    CHECK(strcmp(u.host, "::1") == 0);
    CHECK_EQ_INT(u.port, 9000);
    CHECK(strcmp(u.path, "/p") == 0);

    CHECK_EQ_INT(lhttp_url_parse("http://h/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws:/h/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://:80/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://h:/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://h:0/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://h:65536/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://h:8x/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://user@h/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://[::1/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://[::1]x/", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse("ws://h/a b", &u), LHTTP_E_URL);
    CHECK_EQ_INT(lhttp_url_parse(NULL, &u), LHTTP_E_ARGUMENT);
}

struct refused {
    int closes;
    int code;
};

static void refused_on_close(lhttp_client *client, int code, const char *reason, void *user)
{
    struct refused *r = (struct refused *)user;
    (void)client;
    (void)reason;
    r->closes++;
    r->code = code;
}

/* A loopback port with nothing listening: bind, read the port, close. */
static int closed_port(void)
{
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len) != 0)
        return -1;
    port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

static void test_refused(void)
{
    lhttp_client_config config;
    lhttp_client *client = NULL;
    struct refused r = {0, 0};
    char url[64];
    int port = closed_port();

    CHECK(port > 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", port);
    memset(&config, 0, sizeof config);
    config.url = url;
    config.on_close = refused_on_close;
    config.user = &r;
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_OK);
    if (client == NULL)
        return;
    /* Queued before the connection fails: accepted, never written. */
    CHECK(lhttp_client_subscribe(client, "room") > 0);
    CHECK_EQ_INT(lhttp_client_run(client), LHTTP_E_CONNECT);
    CHECK_EQ_INT(r.closes, 1);
    CHECK_EQ_INT(r.code, 1006);
    CHECK(!lhttp_client_is_open(client));
    CHECK_EQ_INT(lhttp_client_subscribe(client, "room"), LHTTP_E_CLOSED);
    lhttp_client_free(client);
}

static void test_arguments(void)
{
    lhttp_client_config config;
    lhttp_client *client = (lhttp_client *)&config;

    memset(&config, 0, sizeof config);
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_E_ARGUMENT);
    config.url = "http://127.0.0.1/";
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_E_URL);
    CHECK(client == NULL);
    CHECK_EQ_INT(lhttp_client_new(NULL, &client), LHTTP_E_ARGUMENT);
    CHECK_EQ_INT(lhttp_client_send(NULL, NULL), LHTTP_E_ARGUMENT);
    CHECK_EQ_INT(lhttp_client_send_raw(NULL, "x", 1), LHTTP_E_ARGUMENT);
    CHECK_EQ_INT(lhttp_client_publish(NULL, "room", "chat", NULL, 0, "x", 1), LHTTP_E_ARGUMENT);
    CHECK_EQ_INT(lhttp_client_refresh(NULL, "t"), LHTTP_E_ARGUMENT);
    /* A token is one header value: no blanks, no line breaks. */
    config.url = "ws://127.0.0.1:9/";
    config.token = "a b";
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_E_ARGUMENT);
    config.token = "a\r\nx:y";
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_E_ARGUMENT);
    config.token = "";
    CHECK_EQ_INT(lhttp_client_new(&config, &client), LHTTP_E_ARGUMENT);
    lhttp_client_close(NULL);
    lhttp_client_free(NULL);
}

int main(void)
{
    test_url();
    test_arguments();
    test_refused();
    CHECK_DONE();
}
