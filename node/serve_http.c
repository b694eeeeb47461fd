/* The node's status port (see serve_http.h). */
#include "node/serve_http.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/state.h"
#include "client/statusd.h"
#include "kernels/err.h"
#include "proto/addr.h"

struct serve_http {
    shoal_state *state;
    shoal_statusd *sd;
    pthread_mutex_t mu; /* below */
    char address[SHOAL_ADDR_MAX];
    int begin, end;
    char what[16];
    bool ready;
    int sessions;
    double throughput;
};

static int on_health(void *ctx, json_t **body)
{
    serve_http *h = ctx;
    pthread_mutex_lock(&h->mu);
    int status = h->ready ? 200 : 503;
    *body = json_pack("{s:s,s:s,s:s,s:[i,i],s:i}", "status", h->ready ? "ok" : "unavailable",
                      "state", h->what, "address", h->address, "blocks", h->begin, h->end,
                      "sessions", h->sessions);
    pthread_mutex_unlock(&h->mu);
    return status;
}

static json_t *on_self(void *ctx)
{
    serve_http *h = ctx;
    pthread_mutex_lock(&h->mu);
    json_t *j = json_pack("{s:s,s:s,s:[i,i],s:s,s:b,s:i,s:f}", "role", "node", "address",
                          h->address, "blocks", h->begin, h->end, "state", h->what, "ready",
                          h->ready, "sessions", h->sessions, "throughput", h->throughput);
    pthread_mutex_unlock(&h->mu);
    return j;
}

int serve_http_start(const serve_http_params *p, serve_http **out, char *err, size_t errlen)
{
    *out = NULL;
    serve_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    pthread_mutex_init(&h->mu, NULL);
    snprintf(h->what, sizeof h->what, "starting");
    int rc = 0;
    if (p->n_initial) {
        shoal_state_params sp = shoal_state_params_default();
        sp.initial = p->initial;
        sp.n_initial = p->n_initial;
        sp.id = p->id;
        sp.nblocks = p->nblocks;
        sp.model_path = p->model_path;
        rc = shoal_state_start(&sp, &h->state, err, errlen);
    }
    shoal_statusd_params dp = {.host = p->host,
                               .port = p->port,
                               .metrics = p->metrics,
                               .state = h->state,
                               .health = on_health,
                               .self = on_self,
                               .ctx = h};
    if (!rc)
        rc = shoal_statusd_start(&dp, &h->sd, err, errlen);
    if (rc) {
        serve_http_stop(&h);
        return rc;
    }
    *out = h;
    return 0;
}

int serve_http_port(const serve_http *h) { return shoal_statusd_port(h->sd); }

void serve_http_update(serve_http *h, const char *address, int begin, int end,
                       const char *state, bool ready, int sessions, double throughput)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    snprintf(h->address, sizeof h->address, "%s", address ? address : "");
    h->begin = begin;
    h->end = end;
    snprintf(h->what, sizeof h->what, "%s", state);
    h->ready = ready;
    h->sessions = sessions;
    h->throughput = throughput;
    pthread_mutex_unlock(&h->mu);
}

void serve_http_stop(serve_http **p)
{
    serve_http *h = p ? *p : NULL;
    if (!h)
        return;
    *p = NULL;
    shoal_statusd_stop(&h->sd); /* no HTTP thread runs after this */
    shoal_state_stop(&h->state);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
