/*
 * The node's session table, its KV-cache budget and its span objects (see
 * node_impl.h). Every function runs under node->mu.
 *
 * Budget: a session reserves its max_length tokens when it is opened (the
 * client says how long it may grow), and gives them back when it is closed
 * or expires. The table is a flat array scanned linearly: a node holds a
 * few hundred sessions at most, and a scan of that is cheaper than the
 * step it precedes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/err.h"
#include "node/node_impl.h"
#include "swarm/log.h"

double node_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

node_session *node_session_find(shoal_node *n, uint64_t id)
{
    for (int i = 0; i < n->nsessions; i++)
        if (n->sessions[i]->id == id)
            return n->sessions[i];
    return NULL;
}

int node_session_reserve(shoal_node *n, uint64_t id, const char *owner, const node_span *span,
                         uint32_t max_length, node_session **out)
{
    *out = NULL;
    if (node_session_find(n, id))
        return SHOAL_ERR_ARG;
    if (n->nsessions >= n->p.max_sessions || max_length > n->p.cache_tokens - n->reserved)
        return SHOAL_ERR_BUSY;
    node_session *s = calloc(1, sizeof *s);
    if (!s)
        return SHOAL_ERR_NOMEM;
    s->id = id;
    snprintf(s->owner, sizeof s->owner, "%s", owner ? owner : "");
    s->span = span;
    s->max_length = max_length;
    s->busy = 1;
    s->last_used = node_now();
    n->sessions[n->nsessions++] = s;
    n->reserved += max_length;
    *out = s;
    return 0;
}

void node_session_remove(shoal_node *n, node_session *s)
{
    for (int i = 0; i < n->nsessions; i++) {
        if (n->sessions[i] == s) {
            n->sessions[i] = n->sessions[--n->nsessions];
            break;
        }
    }
    n->reserved -= s->max_length;
    shoal_kv_destroy(&s->kv);
    free(s->last_out);
    free(s);
}

int node_session_expire(shoal_node *n, double now)
{
    int closed = 0;
    for (int i = 0; i < n->nsessions;) {
        node_session *s = n->sessions[i];
        if (!s->busy && now - s->last_used > n->p.session_timeout_s) {
            SHOAL_LOG_I("session %016llx idle for %.0f s: closed", (unsigned long long)s->id,
                        now - s->last_used);
            node_session_remove(n, s); /* moves the last entry into slot i */
            closed++;
        } else {
            i++;
        }
    }
    return closed;
}

const node_span *node_span_get(shoal_node *n, int a, int b)
{
    for (int i = 0; i < n->nspans; i++)
        if (n->spans[i].a == a && n->spans[i].b == b)
            return &n->spans[i];
    if (n->nspans >= NODE_MAX_SPANS)
        return NULL;
    char err[256];
    shoal_model *m = NULL;
    if (shoal_model_open(n->g, a, b, 0, &m, err, sizeof err)) {
        SHOAL_LOG_W("cannot open blocks %d:%d: %s", a, b, err);
        return NULL;
    }
    node_span *sp = &n->spans[n->nspans++];
    sp->a = a;
    sp->b = b;
    sp->m = m;
    return sp;
}
