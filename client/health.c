/*
 * Peer health table (see health.h): a flat array scanned linearly. A client
 * talks to tens or hundreds of peers; a scan of that is far cheaper than
 * the round trip it precedes, and keeps the code obvious.
 */
#include "client/health.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "proto/addr.h"

typedef struct health_entry {
    char address[SHOAL_ADDR_MAX];
    int failures;         /* consecutive, not yet forgotten */
    double banned_until;  /* ms; 0: never banned */
    double last_ban_end;  /* when the last ban ended or would have */
    double rtt;           /* ms; < 0: unknown */
} health_entry;

struct shoal_health {
    shoal_health_params p;
    health_entry *v;
    size_t n, cap;
};

shoal_health_params shoal_health_params_default(void)
{
    shoal_health_params p = {.ban_ms = 2000, .ban_max_ms = 60000, .forget_ms = 120000};
    return p;
}

int shoal_health_new(const shoal_health_params *p, shoal_health **out)
{
    *out = NULL;
    shoal_health_params def = shoal_health_params_default();
    if (!p)
        p = &def;
    if (!(p->ban_ms > 0) || !(p->ban_max_ms >= p->ban_ms) || !(p->forget_ms >= 0) ||
        !isfinite(p->ban_max_ms) || !isfinite(p->forget_ms))
        return SHOAL_ERR_ARG;
    shoal_health *h = calloc(1, sizeof *h);
    if (!h)
        return SHOAL_ERR_NOMEM;
    h->p = *p;
    *out = h;
    return 0;
}

void shoal_health_destroy(shoal_health **hp)
{
    if (!hp || !*hp)
        return;
    free((*hp)->v);
    free(*hp);
    *hp = NULL;
}

static health_entry *find(const shoal_health *h, const char *address)
{
    for (size_t i = 0; i < h->n; i++)
        if (!strcmp(h->v[i].address, address))
            return &h->v[i];
    return NULL;
}

/* The entry of address, made when missing; NULL when it cannot be. */
static health_entry *get(shoal_health *h, const char *address, double now_ms)
{
    health_entry *e = find(h, address);
    if (e)
        return e;
    if (strnlen(address, SHOAL_ADDR_MAX) >= SHOAL_ADDR_MAX)
        return NULL;
    if (h->n == h->cap && h->cap < SHOAL_HEALTH_MAX) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        if (cap > SHOAL_HEALTH_MAX)
            cap = SHOAL_HEALTH_MAX;
        health_entry *v = realloc(h->v, cap * sizeof *v);
        if (v) {
            h->v = v;
            h->cap = cap;
        }
    }
    if (h->n < h->cap) {
        e = &h->v[h->n++];
    } else {
        /* full: reuse the entry that has been quiet for longest */
        for (size_t i = 0; i < h->n; i++) {
            health_entry *c = &h->v[i];
            if (c->banned_until > now_ms)
                continue;
            if (!e || c->last_ban_end < e->last_ban_end)
                e = c;
        }
        if (!e)
            return NULL;
    }
    memset(e, 0, sizeof *e);
    memcpy(e->address, address, strlen(address) + 1);
    e->rtt = -1;
    return e;
}

/* Forget e's failures when it has behaved for forget_ms since its ban. */
static int failures_at(const shoal_health *h, const health_entry *e, double now_ms)
{
    if (e->failures && e->banned_until <= now_ms &&
        now_ms - e->last_ban_end >= h->p.forget_ms)
        return 0;
    return e->failures;
}

double shoal_health_ban(shoal_health *h, const char *address, double now_ms)
{
    health_entry *e = get(h, address, now_ms);
    if (!e)
        return 0;
    e->failures = failures_at(h, e, now_ms);
    double len = h->p.ban_ms;
    for (int i = 0; i < e->failures && len < h->p.ban_max_ms; i++)
        len *= 2;
    if (len > h->p.ban_max_ms)
        len = h->p.ban_max_ms;
    if (e->failures < 1000)
        e->failures++;
    double until = now_ms + len;
    if (until > e->banned_until)
        e->banned_until = until;
    e->last_ban_end = e->banned_until;
    return len;
}

double shoal_health_banned_for(const shoal_health *h, const char *address, double now_ms)
{
    const health_entry *e = find(h, address);
    return e && e->banned_until > now_ms ? e->banned_until - now_ms : 0;
}

void shoal_health_lift(shoal_health *h, const char *address)
{
    health_entry *e = find(h, address);
    if (e && e->banned_until > 0) {
        /* the ban ends "now" as far as forgetting goes: keep the moment the
         * ban would have ended, so the count is not forgotten sooner */
        e->banned_until = 0;
    }
}

int shoal_health_failures(const shoal_health *h, const char *address, double now_ms)
{
    const health_entry *e = find(h, address);
    return e ? failures_at(h, e, now_ms) : 0;
}

void shoal_health_rtt_add(shoal_health *h, const char *address, double rtt_ms)
{
    if (!(rtt_ms >= 0) || !isfinite(rtt_ms))
        return;
    health_entry *e = find(h, address);
    if (!e && !(e = get(h, address, 0)))
        return;
    e->rtt = e->rtt < 0 ? rtt_ms : e->rtt + (rtt_ms - e->rtt) / 4;
}

double shoal_health_rtt(const shoal_health *h, const char *address)
{
    const health_entry *e = find(h, address);
    return e ? e->rtt : -1;
}
