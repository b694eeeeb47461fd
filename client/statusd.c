/* A node's status port (see statusd.h). */
#include "client/statusd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/http.h"
#include "client/state.h"
#include "kernels/err.h"
#include "swarm/metrics.h"

struct shoal_statusd {
    shoal_statusd_params p;
    char *host;
    struct MHD_Daemon *mhd;
    int port;
};

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return MHD_NO;
    return shoal_http_send(c, status, "application/json", text, strlen(text), "GET, HEAD");
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *msg)
{
    return send_json(c, status, json_pack("{s:{s:s,s:i}}", "error", "message", msg, "code",
                                          status));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)upload;
    shoal_statusd *s = cls;
    if (!*con_cls) { /* headers only so far: answer once the request is whole */
        *con_cls = s;
        return MHD_YES;
    }
    if (*upload_size) { /* a body: ignored */
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return send_error(c, 405, "only GET and HEAD are served here");
    if (!strcmp(url, "/health")) {
        json_t *body = NULL;
        int status = s->p.health ? s->p.health(s->p.ctx, &body) : 200;
        if (!body)
            body = json_pack("{s:s}", "status", status == 200 ? "ok" : "unavailable");
        return send_json(c, status, body);
    }
    if (!strcmp(url, "/metrics")) {
        if (!s->p.metrics)
            return send_error(c, 404, "no metrics here");
        if (s->p.collect)
            s->p.collect(s->p.ctx);
        char *text = NULL;
        size_t len = 0;
        if (shoal_metrics_render(s->p.metrics, &text, &len))
            return send_error(c, 500, "out of memory");
        return shoal_http_send(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len,
                               NULL);
    }
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        if (!s->p.state)
            return send_error(c, 404, "no dashboard: this node runs no DHT (--initial-peers)");
        char *page = strdup(shoal_dashboard_html);
        if (!page)
            return send_error(c, 500, "out of memory");
        return shoal_http_send(c, 200, "text/html; charset=utf-8", page, strlen(page), NULL);
    }
    if (!strcmp(url, "/api/v1/state")) {
        if (!s->p.state)
            return send_error(c, 404, "no swarm state: this node runs no DHT (--initial-peers)");
        char *text = shoal_state_json(s->p.state, s->p.self ? s->p.self(s->p.ctx) : NULL);
        if (!text)
            return send_error(c, 500, "out of memory");
        return shoal_http_send(c, 200, "application/json", text, strlen(text), NULL);
    }
    return send_error(c, 404, "unknown URL (try /, /api/v1/state, /metrics, /health)");
}

int shoal_statusd_start(const shoal_statusd_params *p, shoal_statusd **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (!p->host || p->port < 0 || p->port > 65535) {
        snprintf(err, errlen, "bad status port parameters");
        return SHOAL_ERR_ARG;
    }
    shoal_statusd *s = calloc(1, sizeof *s);
    if (!s || !(s->host = strdup(p->host))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    s->p = *p;
    s->p.host = s->host;
    s->mhd = shoal_http_listen(s->host, p->port, 64, 30, on_request, s, NULL, NULL, &s->port,
                               err, errlen);
    if (!s->mhd) {
        free(s->host);
        free(s);
        return SHOAL_ERR_IO;
    }
    *out = s;
    return 0;
}

int shoal_statusd_port(const shoal_statusd *s) { return s->port; }

void shoal_statusd_stop(shoal_statusd **p)
{
    shoal_statusd *s = p ? *p : NULL;
    if (!s)
        return;
    *p = NULL;
    MHD_stop_daemon(s->mhd);
    free(s->host);
    free(s);
}
