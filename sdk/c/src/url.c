/*
 * ws:// and wss:// URL parsing for the client: no dependencies, so the unit
 * tests cover it without a network.
 */
#include "lhttp/client.h"

#include <string.h>

static int prefix_ieq(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    size_t i;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + ('a' - 'A'));
        if (c != prefix[i])
            return 0;
    }
    return 1;
}

static int bad_char(unsigned char c)
{
    return c <= 0x20 || c == 0x7f;
}

int lhttp_url_parse(const char *url, lhttp_url *out)
{
    const char *p;
    const char *auth_end;
    const char *host;
    const char *host_end;
    const char *port_at = NULL;
    const char *path_end;
    size_t host_len;
    size_t path_len;
    long port = 0;

    if (url == NULL || out == NULL)
        return LHTTP_E_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (prefix_ieq(url, "ws://")) {
        p = url + 5;
        out->tls = 0;
    } else if (prefix_ieq(url, "wss://")) {
        p = url + 6;
        out->tls = 1;
    } else {
        return LHTTP_E_URL;
    }

    auth_end = p + strcspn(p, "/?#");
    host = p;
    if (*p == '[') {
        host = p + 1;
        host_end = (const char *)memchr(host, ']', (size_t)(auth_end - host));
        if (host_end == NULL)
            return LHTTP_E_URL;
        if (host_end + 1 < auth_end) {
            if (host_end[1] != ':')
                return LHTTP_E_URL;
            port_at = host_end + 2;
        }
    } else {
        host_end = (const char *)memchr(p, ':', (size_t)(auth_end - p));
        if (host_end == NULL)
            host_end = auth_end;
        else
            port_at = host_end + 1;
    }
    host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len >= sizeof out->host)
        return LHTTP_E_URL;
    for (p = host; p < host_end; p++) {
        if (bad_char((unsigned char)*p) || *p == '@' || *p == '[' || *p == ']')
            return LHTTP_E_URL;
    }
    memcpy(out->host, host, host_len);

    if (port_at != NULL) {
        if (port_at == auth_end)
            return LHTTP_E_URL;
        for (p = port_at; p < auth_end; p++) {
            if (*p < '0' || *p > '9')
                return LHTTP_E_URL;
            port = port * 10 + (*p - '0');
            if (port > 65535)
                return LHTTP_E_URL;
        }
        if (port == 0)
            return LHTTP_E_URL;
        out->port = (int)port;
    } else {
        out->port = out->tls ? 443 : 80;
    }

    path_end = auth_end + strcspn(auth_end, "#");
    path_len = (size_t)(path_end - auth_end);
    for (p = auth_end; p < path_end; p++) {
        if (bad_char((unsigned char)*p))
            return LHTTP_E_URL;
    }
    if (path_len == 0 || *auth_end != '/') {
        if (path_len + 1 >= sizeof out->path)
            return LHTTP_E_URL;
        out->path[0] = '/';
        memcpy(out->path + 1, auth_end, path_len);
    } else {
        if (path_len >= sizeof out->path)
            return LHTTP_E_URL;
        memcpy(out->path, auth_end, path_len);
    }
    return LHTTP_OK;
}
