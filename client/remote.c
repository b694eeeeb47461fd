/*
 * The remote sequence (see remote.h): one link per hop, all on one ZeroMQ
 * context owned by the sequence, driven from the caller's thread.
 *
 * Everything that waits goes through wait_all(): a list of expected replies
 * (an id on a link, the op and tensor shape expected, a deadline), served
 * by one zmq_poll over every link involved, with each link's monitor and
 * liveness pings (client/link.h) turning a dead or frozen node into a
 * failure of the replies expected from it. A step in pull mode expects one
 * reply; in push mode one per hop of the route, each written straight into
 * the history of the boundary it feeds; opens, replays, closes and INFO
 * requests use the same loop.
 *
 * Memory: the per-boundary history grows by doubling up to max_length
 * positions, so a short generation with a long context does not hold a
 * full (max_length, dim) buffer per boundary; a decode step allocates only
 * when the history crosses a power of two, or when a failover opens links.
 */
#include "client/remote.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "client/link.h"
#include "kernels/err.h"
#include "proto/codec.h"
#include "swarm/transport.h"

#define REMOTE_ERR_MAX 1024
#define REMOTE_CLOSE_MS 2000      /* deadline of the closes at the end */
#define REMOTE_HIST_FIRST 256     /* positions of history reserved at first */
#define REMOTE_REFRESHES 2        /* INFO rounds when no replacement is known */
#define REMOTE_REFRESH_GAP_MS 1000
#define REMOTE_REFRESH_MAX_MS 1000 /* INFO deadline during failover */
#define REMOTE_BACKOFF_MS 50      /* first pause between attempts; doubles */
#define REMOTE_BACKOFF_MAX_MS 1000
#define REMOTE_WHY_MAX 320

enum { EXP_PENDING, EXP_DONE, EXP_FAILED };

/* A reply the caller waits for. */
typedef struct expect {
    shoal_link *link;      /* the reply comes here */
    shoal_link *relay;     /* an error about this request may come here (the
                              node that pushed to it), or NULL */
    unsigned drops0;       /* link's drops when the session was made */
    uint64_t id;
    uint16_t op;           /* op of the reply */
    uint64_t sid, step;    /* checked in SESSION_STEP replies */
    float *out;            /* reply tensor (n, dim), or NULL */
    uint32_t n;
    shoal_wire_header *hdr;/* a copy of the reply header, or NULL */
    double sent, deadline;
    int after;             /* push: the expectation this one follows, or -1 */
    int refuse_fast;       /* a refused connection fails it at once */
    double stall_ms;       /* with after: give up this long after it (0: no) */
    /* outcome */
    int state, rc, soft, leaving;
    int said;              /* the node answered with an error */
    double when;
    char why[REMOTE_WHY_MAX];
} expect;

typedef struct remote_hop {
    shoal_link *link;
    size_t cand;          /* in r->cands */
    uint32_t start, end;  /* blocks [start, end) */
    uint64_t sid, ptok;   /* session id (!= 0), push token */
    unsigned drops;       /* link drops when the session was opened */
    int open;
    int leaving;          /* the node said it is leaving */
    double ewma_ms;       /* usual time of a step here (0: unknown) */
} remote_hop;

struct shoal_remote {
    void *zctx;
    shoal_remote_params p;
    shoal_route_want want;
    uint32_t dim, L;
    shoal_route_cands cands;
    char (*spares)[SHOAL_ADDR_MAX];
    size_t n_spares;
    uint8_t *skip;        /* SHOAL_ROUTE_MAX_CANDS */
    shoal_health *health;
    remote_hop *hops;
    size_t n_hops, cap_hops;
    float **hist;         /* (L + 1): per boundary (hist_cap, dim), or NULL */
    uint32_t *hist_cap;
    float *scratch;       /* (replay_batch, dim) */
    shoal_route_hop *plan;/* (L) */
    expect *exps;         /* (1 + SHOAL_WIRE_MAX_ROUTE) or (L) */
    size_t cap_exps;
    int len, broken, calls;
    uint64_t next_id, step_ctr, step;
    shoal_remote_stats st;
    char err[REMOTE_ERR_MAX];
};

shoal_remote_params shoal_remote_params_default(void)
{
    shoal_remote_params p = {
        .codec = SHOAL_CODEC_F32, .timeout_ms = 30000, .liveness_ms = 700, .max_length = 0,
        .max_retries = 4, .push = 0, .replay_batch = 512,
        .health = shoal_health_params_default(),
    };
    return p;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void event(shoal_remote *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void event(shoal_remote *r, const char *fmt, ...)
{
    if (!r->p.on_event)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->p.on_event(r->p.event_ctx, line);
}

static void sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

/* "peer ADDR[ (blocks a:b)] did not answer in 1 s" or "...: busy: cache full"
 * (what the node said follows a colon). */
static void describe(char *out, size_t outlen, const char *address, const remote_hop *h,
                     const expect *e)
{
    char blocks[48] = "";
    if (h)
        snprintf(blocks, sizeof blocks, " (blocks %u:%u)", h->start, h->end);
    set_err(out, outlen, "peer %s%s%s%s", address, blocks, e->said ? ": " : " ", e->why);
}

static double liveness(const shoal_remote_params *p)
{
    return p->liveness_ms < p->timeout_ms ? p->liveness_ms : p->timeout_ms;
}

/* ---- waiting for replies ---------------------------------------------- */

static void exp_fail(expect *e, double now, int rc, int soft, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void exp_fail(expect *e, double now, int rc, int soft, const char *fmt, ...)
{
    e->state = EXP_FAILED;
    e->rc = rc;
    e->soft = soft;
    e->when = now;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof e->why, fmt, ap);
    va_end(ap);
}

static void exp_init(expect *e, shoal_link *link, unsigned drops0, uint64_t id, uint16_t op,
                     double now, int timeout_ms)
{
    memset(e, 0, sizeof *e);
    e->link = link;
    e->drops0 = drops0;
    e->id = id;
    e->op = op;
    e->sent = now;
    e->deadline = now + timeout_ms;
    e->after = -1;
}

/* Match message (h, m) that came on link to the pending expectations. */
static void take_reply(expect *e, size_t ne, shoal_link *link, const shoal_wire_header *h,
                       shoal_transport_msg *m, uint32_t dim, double now)
{
    for (size_t i = 0; i < ne; i++) {
        expect *x = &e[i];
        if (x->state != EXP_PENDING || x->id != h->request_id)
            continue;
        int direct = x->link == link;
        if (!direct && !(x->relay == link && h->op == SHOAL_OP_ERROR))
            continue;
        if (!(h->flags & SHOAL_WIRE_FLAG_REPLY))
            return;
        if (h->op == SHOAL_OP_ERROR) {
            int code = h->error > 0 && h->error < SHOAL_ERR__COUNT ? (int)h->error
                                                                   : SHOAL_ERR_PROTOCOL;
            exp_fail(x, now, code, !direct, "%s%s%s%s", direct ? "" : "(pushed to it) ",
                     shoal_strerror(code), (h->has & SHOAL_WIRE_HAS_MESSAGE) ? ": " : "",
                     (h->has & SHOAL_WIRE_HAS_MESSAGE) ? h->message : "");
            x->said = 1;
            return;
        }
        if (h->op != x->op) {
            const char *got = shoal_wire_op_name(h->op);
            exp_fail(x, now, SHOAL_ERR_PROTOCOL, 0, "answered %s with %s",
                     shoal_wire_op_name(x->op), got ? got : "an unknown op");
            return;
        }
        if (x->op == SHOAL_OP_SESSION_STEP &&
            (h->session_id != x->sid || h->step_id != x->step)) {
            exp_fail(x, now, SHOAL_ERR_PROTOCOL, 0, "answered another session or step");
            return;
        }
        if (x->out && shoal_link_take_tensor(h, m, 1, x->out, x->n, dim)) {
            exp_fail(x, now, SHOAL_ERR_PROTOCOL, 0,
                     "sent a tensor that does not fit (shape, size or values)");
            return;
        }
        if (x->hdr)
            *x->hdr = *h;
        x->leaving = (h->flags & SHOAL_WIRE_FLAG_LEAVING) != 0;
        x->state = EXP_DONE;
        x->when = now;
        return;
    }
    /* a stale reply (to a request given up on) or a stray one: dropped */
}

/* Wait until every expectation in e[0..ne) is resolved. Links are polled
 * together; a link that drops, goes silent for live_ms, or passes the
 * deadline fails what is expected from it. */
static void wait_all(expect *e, size_t ne, double live_ms, uint32_t dim)
{
    enum { ON_STACK = 64 };
    shoal_link *stack_links[ON_STACK], **links = stack_links;
    zmq_pollitem_t stack_items[2 * ON_STACK], *items = stack_items;
    if (2 * ne > ON_STACK) {
        links = malloc(2 * ne * sizeof *links);
        items = malloc(4 * ne * sizeof *items);
        if (!links || !items) {
            free(links != stack_links ? links : NULL);
            free(items != stack_items ? items : NULL);
            for (size_t i = 0; i < ne; i++)
                if (e[i].state == EXP_PENDING)
                    exp_fail(&e[i], shoal_link_now(), SHOAL_ERR_NOMEM, 0, "out of memory");
            return;
        }
    }
    size_t nl = 0;
    for (size_t i = 0; i < ne; i++) {
        shoal_link *c[2] = {e[i].link, e[i].relay};
        for (int k = 0; k < 2; k++) {
            if (!c[k])
                continue;
            size_t j = 0;
            while (j < nl && links[j] != c[k])
                j++;
            if (j == nl)
                links[nl++] = c[k];
        }
    }
    for (;;) {
        /* first take what has arrived: a client that was itself held up
         * (a loaded machine) must not blame nodes whose answers wait here */
        double now = shoal_link_now();
        for (size_t j = 0; j < nl; j++) {
            for (;;) {
                shoal_transport_msg m;
                shoal_wire_header h;
                int rc = shoal_link_service(links[j], now, &m, &h);
                if (rc == SHOAL_ERR_TIMEOUT)
                    break;
                if (rc == SHOAL_ERR_IO) {
                    for (size_t i = 0; i < ne; i++)
                        if (e[i].state == EXP_PENDING && e[i].link == links[j])
                            exp_fail(&e[i], now, SHOAL_ERR_IO, 0, "receive failed");
                    break;
                }
                if (rc == SHOAL_ERR_PROTOCOL) {
                    for (size_t i = 0; i < ne; i++)
                        if (e[i].state == EXP_PENDING && e[i].link == links[j] &&
                            h.request_id == e[i].id)
                            exp_fail(&e[i], now, SHOAL_ERR_PROTOCOL, 0,
                                     "sent a malformed reply");
                    continue;
                }
                take_reply(e, ne, links[j], &h, &m, dim, now);
                shoal_transport_msg_close(&m);
            }
        }
        now = shoal_link_now();
        double due = now + 3600e3;
        int pending = 0;
        for (size_t i = 0; i < ne; i++) {
            expect *x = &e[i];
            if (x->state != EXP_PENDING)
                continue;
            if (x->after >= 0 && e[x->after].state == EXP_FAILED) {
                exp_fail(x, now, SHOAL_ERR_CANCELLED, 1, "was not reached");
                continue;
            }
            if (shoal_link_drops(x->link) > x->drops0) {
                exp_fail(x, now, SHOAL_ERR_IO, 0, "lost its connection");
                continue;
            }
            if (x->refuse_fast && shoal_link_refused(x->link)) {
                exp_fail(x, now, SHOAL_ERR_IO, 0, "refuses connections");
                continue;
            }
            if (shoal_link_tick(x->link, now, live_ms)) {
                exp_fail(x, now, SHOAL_ERR_TIMEOUT, 0, "did not answer in %g s", live_ms / 1000);
                continue;
            }
            if (now >= x->deadline) {
                exp_fail(x, now, SHOAL_ERR_TIMEOUT, 0, "did not answer in %g s",
                         (x->deadline - x->sent) / 1000);
                continue;
            }
            if (x->after >= 0 && x->stall_ms > 0 && e[x->after].state == EXP_DONE) {
                double t = e[x->after].when + x->stall_ms;
                if (now >= t) {
                    exp_fail(x, now, SHOAL_ERR_TIMEOUT, 1,
                             "did not get the step pushed to it within %.0f ms", x->stall_ms);
                    continue;
                }
                if (t < due)
                    due = t;
            }
            pending++;
            double d = shoal_link_next_due(x->link, live_ms);
            if (d < due)
                due = d;
            if (x->deadline < due)
                due = x->deadline;
        }
        if (!pending)
            break;
        for (size_t j = 0; j < nl; j++)
            shoal_link_poll_items(links[j], &items[2 * j]);
        double wait = due - now;
        zmq_poll(items, (int)(2 * nl), wait < 0 ? 0 : (long)wait + 1);
    }
    for (size_t j = 0; j < nl; j++)
        shoal_link_idle(links[j]);
    if (links != stack_links)
        free(links);
    if (items != stack_items)
        free(items);
}

/* ---- INFO --------------------------------------------------------------- */

/* Fill c from an INFO reply; SHOAL_ERR_PROTOCOL when it lacks what a plan
 * needs. */
static int info_from_header(const shoal_wire_header *h, shoal_route_cand *c)
{
    uint32_t state;
    int rc = shoal_peer_info_from_header(h, &c->info, &state);
    c->state = state;
    return rc;
}

typedef struct info_job {
    const char *address;
    int rc;                 /* 0: c holds the answer */
    shoal_route_cand c;
    char why[REMOTE_WHY_MAX];
} info_job;

#define INFO_CHUNK 64 /* links in flight at once */

/* Ask every job's address for INFO at once, within timeout_ms. */
static int ask_info_chunk(void *zctx, info_job *jobs, size_t n, int timeout_ms,
                          double live_ms, int refuse_fast);

/* refuse_fast: an address where nothing listens fails at once (else it
 * gets the whole timeout: a node may be starting) */
static int ask_info(void *zctx, info_job *jobs, size_t n, int timeout_ms, double live_ms,
                    int refuse_fast)
{
    for (size_t i = 0; i < n; i += INFO_CHUNK) {
        int rc = ask_info_chunk(zctx, jobs + i, n - i < INFO_CHUNK ? n - i : INFO_CHUNK,
                                timeout_ms, live_ms, refuse_fast);
        if (rc)
            return rc;
    }
    return 0;
}

static int ask_info_chunk(void *zctx, info_job *jobs, size_t n, int timeout_ms,
                          double live_ms, int refuse_fast)
{
    shoal_link **links = calloc(n, sizeof *links);
    expect *e = calloc(n, sizeof *e);
    shoal_wire_header *hs = calloc(n, sizeof *hs);
    if (!links || !e || !hs) {
        free(links);
        free(e);
        free(hs);
        return SHOAL_ERR_NOMEM;
    }
    uint64_t id;
    randombytes_buf(&id, sizeof id);
    double now = shoal_link_now();
    size_t ne = 0;
    size_t *of = calloc(n, sizeof *of);
    for (size_t i = 0; i < n && of; i++) {
        info_job *j = &jobs[i];
        j->rc = shoal_link_open(zctx, j->address, &links[i]);
        if (j->rc) {
            set_err(j->why, sizeof j->why, "%s",
                    j->rc == SHOAL_ERR_FORMAT ? "not a node address" : shoal_strerror(j->rc));
            continue;
        }
        shoal_wire_header q;
        if (++id == 0)
            id = 1;
        shoal_wire_header_init(&q, SHOAL_OP_INFO, id);
        if ((j->rc = shoal_link_send(links[i], &q, NULL, 0, 0, 0))) {
            set_err(j->why, sizeof j->why, "cannot send (%s)", shoal_strerror(j->rc));
            continue;
        }
        shoal_link_await(links[i], now);
        exp_init(&e[ne], links[i], 0, q.request_id, SHOAL_OP_INFO, now, timeout_ms);
        e[ne].hdr = &hs[ne];
        e[ne].refuse_fast = refuse_fast;
        of[ne++] = i;
    }
    if (of) {
        /* INFO is answered by the node's I/O thread: silence means down */
        wait_all(e, ne, live_ms < timeout_ms ? live_ms : timeout_ms, 0);
        for (size_t k = 0; k < ne; k++) {
            info_job *j = &jobs[of[k]];
            if (e[k].state != EXP_DONE) {
                j->rc = e[k].rc;
                set_err(j->why, sizeof j->why, "%s%s", e[k].said ? ": " : "", e[k].why);
            } else if (info_from_header(&hs[k], &j->c)) {
                j->rc = SHOAL_ERR_PROTOCOL;
                set_err(j->why, sizeof j->why, "INFO reply without a usable span, block count or dim");
            } else {
                j->rc = 0;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        shoal_link_destroy(&links[i]);
    int rc = of ? 0 : SHOAL_ERR_NOMEM;
    free(of);
    free(links);
    free(e);
    free(hs);
    return rc;
}

int shoal_remote_lookup(const char *const *addrs, size_t n, int timeout_ms,
                        shoal_route_cands *out, size_t *n_failed, char *failed,
                        size_t failed_len)
{
    *n_failed = 0;
    if (failed && failed_len)
        failed[0] = 0;
    if (n == 0)
        return 0;
    if (sodium_init() < 0)
        return SHOAL_ERR_INTERNAL;
    info_job *jobs = calloc(n, sizeof *jobs);
    void *zctx = shoal_transport_ctx_new();
    int rc = 0;
    if (!jobs || !zctx) {
        rc = jobs ? SHOAL_ERR_IO : SHOAL_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        jobs[i].address = addrs[i];
    if ((rc = ask_info(zctx, jobs, n, timeout_ms, timeout_ms, 0)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].rc) {
            if (failed && failed_len) {
                size_t used = strlen(failed);
                if (used + 1 < failed_len)
                    snprintf(failed + used, failed_len - used, "%speer %s%s%s",
                             used ? "; " : "", addrs[i], jobs[i].why[0] == ':' ? "" : " ",
                             jobs[i].why);
            }
            (*n_failed)++;
            continue;
        }
        if ((rc = shoal_route_cands_add(out, addrs[i], &jobs[i].c.info)))
            goto out;
        out->v[out->n - 1].state = jobs[i].c.state;
    }
out:
    if (zctx)
        zmq_ctx_term(zctx);
    free(jobs);
    return rc;
}

/* ---- history ------------------------------------------------------------ */

/* Room in boundary bnd's history for positions [0, need). */
static int hist_reserve(shoal_remote *r, uint32_t bnd, uint32_t need)
{
    if (need <= r->hist_cap[bnd] && r->hist[bnd])
        return 0;
    uint32_t cap = r->hist_cap[bnd];
    if (cap == 0)
        cap = r->p.max_length < REMOTE_HIST_FIRST ? r->p.max_length : REMOTE_HIST_FIRST;
    while (cap < need)
        cap = cap > r->p.max_length / 2 ? r->p.max_length : cap * 2;
    float *nh = realloc(r->hist[bnd], (size_t)cap * r->dim * sizeof *nh);
    if (!nh)
        return SHOAL_ERR_NOMEM;
    r->hist[bnd] = nh;
    r->hist_cap[bnd] = cap;
    return 0;
}

static float *hist_at(shoal_remote *r, uint32_t bnd, uint32_t pos)
{
    return r->hist[bnd] + (size_t)pos * r->dim;
}

/* ---- hops ---------------------------------------------------------------- */

static uint64_t new_ids(shoal_remote *r, size_t k)
{
    if (r->next_id == 0 || r->next_id > UINT64_MAX - 64)
        r->next_id = 1;
    uint64_t id = r->next_id;
    r->next_id += k;
    return id;
}

static uint64_t rand_nonzero(void)
{
    uint64_t v;
    do
        randombytes_buf(&v, sizeof v);
    while (v == 0);
    return v;
}

static void hop_free(remote_hop *h) { shoal_link_destroy(&h->link); }

/* Send the OPEN of every hop in hs[0..n) (links made here) and wait. On
 * return, each hop is open or not; e[k] says why not. */
static void hops_open(shoal_remote *r, remote_hop *hs, size_t n, expect *e)
{
    double now = shoal_link_now();
    for (size_t k = 0; k < n; k++) {
        remote_hop *h = &hs[k];
        const char *address = r->cands.v[h->cand].address;
        h->open = 0;
        h->sid = rand_nonzero();
        h->ptok = r->p.push ? rand_nonzero() : 0;
        exp_init(&e[k], NULL, 0, 0, SHOAL_OP_SESSION_OPEN, now, r->p.timeout_ms);
        int rc = h->link ? 0 : shoal_link_open(r->zctx, address, &h->link);
        if (rc) {
            exp_fail(&e[k], now, rc, 0, "cannot connect (%s)", shoal_strerror(rc));
            continue;
        }
        h->drops = shoal_link_drops(h->link);
        shoal_wire_header q;
        shoal_wire_header_init(&q, SHOAL_OP_SESSION_OPEN, new_ids(r, 1));
        q.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH;
        q.session_id = h->sid;
        q.span_start = h->start;
        q.span_end = h->end;
        q.max_length = r->p.max_length;
        if (h->ptok) {
            q.has |= SHOAL_WIRE_HAS_PUSH_TOKEN;
            q.push_token = h->ptok;
        }
        if (r->p.adapter && *r->p.adapter) {
            q.has |= SHOAL_WIRE_HAS_ADAPTER;
            shoal_wire_text_set(q.adapter, sizeof q.adapter, r->p.adapter);
        }
        e[k].link = h->link;
        e[k].drops0 = h->drops;
        e[k].id = q.request_id;
        e[k].refuse_fast = 1;
        if ((rc = shoal_link_send(h->link, &q, NULL, 0, 0, 0))) {
            exp_fail(&e[k], now, rc, 0, "cannot send (%s)", shoal_strerror(rc));
            continue;
        }
        shoal_link_await(h->link, now);
    }
    /* only the pending ones are waited on; failed ones stay failed */
    wait_all(e, n, liveness(&r->p), r->dim);
    for (size_t k = 0; k < n; k++)
        hs[k].open = e[k].state == EXP_DONE;
}

/* Close the sessions of hs[0..n) that are open on links still connected,
 * waiting at most ms for the answers. */
static void hops_close(shoal_remote *r, remote_hop *hs, size_t n, int ms)
{
    expect *e = calloc(n ? n : 1, sizeof *e);
    if (!e)
        return;
    double now = shoal_link_now();
    size_t ne = 0;
    for (size_t k = 0; k < n; k++) {
        remote_hop *h = &hs[k];
        if (!h->open || !h->link || shoal_link_drops(h->link) > h->drops)
            continue;
        shoal_wire_header q;
        shoal_wire_header_init(&q, SHOAL_OP_SESSION_CLOSE, new_ids(r, 1));
        q.has = SHOAL_WIRE_HAS_SESSION;
        q.session_id = h->sid;
        if (shoal_link_send(h->link, &q, NULL, 0, 0, 0))
            continue;
        shoal_link_await(h->link, now);
        exp_init(&e[ne++], h->link, h->drops, q.request_id, SHOAL_OP_SESSION_CLOSE, now, ms);
        h->open = 0;
    }
    double live = liveness(&r->p);
    wait_all(e, ne, live < ms ? live : ms, r->dim);
    free(e);
}

static int hop_dead(const remote_hop *h) { return shoal_link_drops(h->link) > h->drops; }

/* The hop's node failed (here or on another hop) and is banned now. */
static int hop_banned(const shoal_remote *r, const remote_hop *h, double now)
{
    return shoal_health_banned_for(r->health, r->cands.v[h->cand].address, now) > 0;
}

/* Where hop output at boundary bnd goes for positions pos..: the history
 * of bnd, or x after the last block. */
static float *dest(shoal_remote *r, uint32_t bnd, uint32_t pos, float *x)
{
    return bnd < r->L ? hist_at(r, bnd, pos) : x;
}

static int ensure_exps(shoal_remote *r, size_t n)
{
    if (n <= r->cap_exps)
        return 0;
    expect *e = realloc(r->exps, n * sizeof *e);
    if (!e)
        return SHOAL_ERR_NOMEM;
    r->exps = e;
    r->cap_exps = n;
    return 0;
}

/* ---- replacing a hop ------------------------------------------------------ */

enum { REPLACE_FAILOVER, REPLACE_MOVE };

/* Ask INFO again of the addresses that are not usable now (never
 * answered, banned, leaving) and take what they say. */
static void refresh_known(shoal_remote *r)
{
    size_t n = r->n_spares;
    double now = shoal_link_now();
    for (size_t c = 0; c < r->cands.n; c++)
        if (shoal_health_banned_for(r->health, r->cands.v[c].address, now) > 0 ||
            r->cands.v[c].state == SHOAL_WIRE_STATE_OFFLINE)
            n++;
    if (n == 0)
        return;
    info_job *jobs = calloc(n, sizeof *jobs);
    size_t *cand_of = calloc(n, sizeof *cand_of);
    if (!jobs || !cand_of)
        goto out;
    size_t k = 0;
    for (size_t s = 0; s < r->n_spares; s++, k++) {
        jobs[k].address = r->spares[s];
        cand_of[k] = SIZE_MAX;
    }
    for (size_t c = 0; c < r->cands.n && k < n; c++)
        if (shoal_health_banned_for(r->health, r->cands.v[c].address, now) > 0 ||
            r->cands.v[c].state == SHOAL_WIRE_STATE_OFFLINE) {
            jobs[k].address = r->cands.v[c].address;
            cand_of[k++] = c;
        }
    int ms = r->p.timeout_ms < REMOTE_REFRESH_MAX_MS ? r->p.timeout_ms : REMOTE_REFRESH_MAX_MS;
    if (ask_info(r->zctx, jobs, k, ms, ms, 1))
        goto out;
    size_t kept = 0;
    for (size_t j = 0; j < k; j++) {
        info_job *x = &jobs[j];
        if (cand_of[j] == SIZE_MAX) { /* a spare */
            char why[8];
            if (x->rc == 0 && shoal_route_check_model(&x->c, &r->want, why, sizeof why) == 0 &&
                shoal_route_cands_add(&r->cands, x->address, &x->c.info) == 0) {
                r->cands.v[r->cands.n - 1].state = x->c.state;
                continue; /* a candidate now */
            }
            if (x->rc == 0)
                continue; /* another model: never a candidate */
            if (kept != j)
                memmove(r->spares[kept], r->spares[j], SHOAL_ADDR_MAX);
            kept++;
            continue;
        }
        shoal_route_cand *c = &r->cands.v[cand_of[j]];
        if (x->rc) {
            /* still down: keep it out of the plans for longer */
            if (shoal_health_banned_for(r->health, c->address, now) > 0)
                shoal_health_ban(r->health, c->address, shoal_link_now());
            continue;
        }
        char why[8];
        if (shoal_route_check_model(&x->c, &r->want, why, sizeof why))
            continue;
        c->info = x->c.info;
        c->state = x->c.state;
        if (c->state != SHOAL_WIRE_STATE_OFFLINE)
            shoal_health_lift(r->health, c->address); /* it is back */
    }
    r->n_spares = kept;
out:
    free(jobs);
    free(cand_of);
}

/* Ask the swarm (params.lookup: the DHT) for servers again, and add the
 * ones of our model we did not know: servers that joined, or moved, after
 * the chain opened. */
static void lookup_new(shoal_remote *r)
{
    if (!r->p.lookup)
        return;
    shoal_route_cands found;
    shoal_route_cands_init(&found);
    size_t added = 0;
    if (r->p.lookup(r->p.lookup_ctx, &found) == 0) {
        for (size_t i = 0; i < found.n; i++) {
            const shoal_route_cand *f = &found.v[i];
            size_t c = 0;
            while (c < r->cands.n && strcmp(r->cands.v[c].address, f->address))
                c++;
            char why[8];
            if (c < r->cands.n || shoal_route_check_model(f, &r->want, why, sizeof why) ||
                shoal_route_cands_add(&r->cands, f->address, &f->info))
                continue; /* known (refresh_known asked it), another model, or no room */
            r->cands.v[r->cands.n - 1].state = f->state;
            added++;
        }
    }
    shoal_route_cands_fini(&found);
    if (added)
        event(r, "the swarm named %zu more server%s", added, added == 1 ? "" : "s");
}

static void refresh(shoal_remote *r)
{
    refresh_known(r);
    lookup_new(r);
}

/* Replay positions [0, total) of boundary hs[0].start through the new hops
 * hs[0..n) (open, empty). Inner boundaries' histories are written; the last
 * hop's outputs for positions >= keep_from go to out (rows from keep_from),
 * and those before are compared with boundary b's history when check.
 * On failure returns the index of the hop that failed, with e[0] saying
 * why; n when all went through. */
static size_t replay(shoal_remote *r, remote_hop *hs, size_t n, uint32_t total,
                     uint32_t keep_from, float *out, int check, uint32_t *mismatch, expect *e)
{
    const size_t row = r->dim;
    for (size_t k = 0; k < n; k++) {
        remote_hop *h = &hs[k];
        int last = k + 1 == n;
        if (!last && hist_reserve(r, h->end, total)) {
            exp_init(e, h->link, h->drops, 0, 0, shoal_link_now(), 0);
            exp_fail(e, shoal_link_now(), SHOAL_ERR_NOMEM, 0, "out of memory for the history");
            return k;
        }
        uint32_t batch = (uint32_t)r->p.replay_batch;
        for (uint32_t p = 0; p < total;) {
            uint32_t m = total - p < batch ? total - p : batch;
            float *dst = last ? r->scratch : hist_at(r, h->end, p);
            double now = shoal_link_now();
            shoal_wire_header q;
            shoal_wire_header_init(&q, SHOAL_OP_SESSION_STEP, new_ids(r, 1));
            q.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
            q.session_id = h->sid;
            q.step_id = ++r->step_ctr;
            q.position = p;
            exp_init(e, h->link, h->drops, q.request_id, SHOAL_OP_SESSION_STEP, now,
                     r->p.timeout_ms);
            e->sid = h->sid;
            e->step = q.step_id;
            e->out = dst;
            e->n = m;
            int rc = shoal_link_send(h->link, &q, hist_at(r, h->start, p), m, r->dim, r->p.codec);
            if (rc) {
                exp_fail(e, now, rc, 0, "cannot send (%s)", shoal_strerror(rc));
                return k;
            }
            shoal_link_await(h->link, now);
            wait_all(e, 1, liveness(&r->p), r->dim);
            if (e->state != EXP_DONE) {
                if (e->rc == SHOAL_ERR_RANGE && m > 1 && strstr(e->why, "tokens in one request")) {
                    batch = m / 2; /* the node takes fewer tokens per request */
                    continue;
                }
                return k;
            }
            r->st.replayed += m;
            if (last) {
                for (uint32_t q2 = 0; q2 < m; q2++) {
                    uint32_t at = p + q2;
                    const float *src = dst + (size_t)q2 * row;
                    if (at >= keep_from)
                        memcpy(out + (size_t)(at - keep_from) * row, src, row * sizeof *src);
                    else if (check && h->end < r->L &&
                             memcmp(src, hist_at(r, h->end, at), row * sizeof *src))
                        (*mismatch)++;
                }
            }
            p += m;
        }
    }
    return n;
}

/* Hop idx of the chain failed (cause) or is leaving: plan blocks
 * [a, b) again without it, open sessions there, replay positions
 * [0, total) (outputs for keep_from.. into out) and splice the new hops in
 * its place. *n_new is how many hops replaced it. */
static int replace(shoal_remote *r, size_t idx, uint32_t total, uint32_t keep_from, float *out,
                   const expect *cause, int mode, size_t *n_new)
{
    remote_hop old = r->hops[idx];
    const uint32_t a = old.start, b = old.end;
    const char *old_addr = r->cands.v[old.cand].address;
    double t0 = shoal_link_now();
    char why[REMOTE_WHY_MAX + SHOAL_ADDR_MAX + 32];
    *n_new = 0;
    if (mode == REPLACE_FAILOVER) {
        describe(why, sizeof why, old_addr, NULL, cause);
        r->st.detect_ms = cause->sent > 0 ? cause->when - cause->sent : 0;
        /* a node that answered "unknown session" is alive: it lost the
         * session (a restart, an expiry) and may serve the range again */
        if (cause->rc != SHOAL_ERR_SESSION)
            shoal_health_ban(r->health, old_addr, t0);
    } else {
        snprintf(why, sizeof why, "peer %s is leaving", old_addr);
        r->cands.v[old.cand].state = SHOAL_WIRE_STATE_OFFLINE;
    }
    remote_hop *nh = calloc(b - a, sizeof *nh);
    expect *e = calloc(b - a, sizeof *e);
    if (!nh || !e) {
        free(nh);
        free(e);
        set_err(r->err, sizeof r->err, "blocks %u:%u: %s; out of memory for a replacement", a,
                b, why);
        return SHOAL_ERR_NOMEM;
    }
    int rc = 0, attempts = 0, refreshes = 0;
    double backoff = REMOTE_BACKOFF_MS;
    char last[sizeof why + 64];
    snprintf(last, sizeof last, "%s", why);
    for (;;) {
        double now = shoal_link_now();
        for (size_t c = 0; c < r->cands.n; c++)
            r->skip[c] = shoal_health_banned_for(r->health, r->cands.v[c].address, now) > 0;
        if (mode == REPLACE_MOVE)
            r->skip[old.cand] = 1; /* not the node the range leaves */
        char perr[512];
        size_t np = 0;
        rc = shoal_route_plan_range(r->cands.v, r->cands.n, r->skip, &r->want, a, b, r->plan,
                                    b - a, &np, perr, sizeof perr);
        if (rc == SHOAL_ERR_NOTFOUND) {
            if (mode == REPLACE_MOVE)
                break; /* stay on the leaving node while it lasts */
            if (refreshes < REMOTE_REFRESHES) {
                if (refreshes)
                    sleep_ms(REMOTE_REFRESH_GAP_MS);
                refreshes++;
                refresh(r);
                continue;
            }
            const char *missing = strstr(perr, "no peer serves ");
            if (attempts)
                set_err(r->err, sizeof r->err,
                        "blocks %u:%u: %s, and no other peer serves %s (tried %d: %s)", a, b,
                        why, missing ? missing + strlen("no peer serves ") : perr, attempts,
                        last);
            else
                set_err(r->err, sizeof r->err, "blocks %u:%u: %s, and no other peer serves %s",
                        a, b, why, missing ? missing + strlen("no peer serves ") : perr);
            break;
        }
        if (rc) {
            set_err(r->err, sizeof r->err, "blocks %u:%u: %s; %s", a, b, last, perr);
            break;
        }
        for (size_t k = 0; k < np; k++)
            nh[k] = (remote_hop){.cand = r->plan[k].cand, .start = r->plan[k].start,
                                 .end = r->plan[k].end};
        double t_route = shoal_link_now();
        hops_open(r, nh, np, e);
        size_t bad = np;
        for (size_t k = 0; k < np && bad == np; k++)
            if (!nh[k].open)
                bad = k;
        uint32_t mismatch = 0;
        double t_replay = shoal_link_now();
        if (bad == np) {
            int check = r->p.codec == SHOAL_CODEC_F32 || np == 1;
            bad = replay(r, nh, np, total, keep_from, out, check, &mismatch, e);
            if (bad < np)
                e[bad] = e[0];
        }
        if (bad == np) {
            double t1 = shoal_link_now();
            /* splice nh[0..np) in place of hop idx */
            size_t need = r->n_hops - 1 + np;
            if (need > r->cap_hops) {
                remote_hop *v = realloc(r->hops, need * sizeof *v);
                if (!v) {
                    hops_close(r, nh, np, 200);
                    for (size_t k = 0; k < np; k++)
                        hop_free(&nh[k]);
                    rc = SHOAL_ERR_NOMEM;
                    set_err(r->err, sizeof r->err, "out of memory");
                    break;
                }
                r->hops = v;
                r->cap_hops = need;
            }
            memmove(&r->hops[idx + np], &r->hops[idx + 1],
                    (r->n_hops - idx - 1) * sizeof *r->hops);
            memcpy(&r->hops[idx], nh, np * sizeof *nh);
            r->n_hops = need;
            *n_new = np;
            char to[1024];
            size_t used = 0;
            to[0] = 0;
            for (size_t k = 0; k < np && used + 1 < sizeof to; k++) {
                int w = snprintf(to + used, sizeof to - used, "%s%u:%u %s", k ? ", " : "",
                                 nh[k].start, nh[k].end, r->cands.v[nh[k].cand].address);
                if (w > 0)
                    used += (size_t)w;
            }
            r->st.reroute_ms = t_replay - t0;
            r->st.replay_ms = t1 - t_replay;
            if (mode == REPLACE_FAILOVER) {
                r->st.failovers++;
                event(r, "failover: blocks %u:%u: %s (seen after %.0f ms); now %s (plan %.0f ms, "
                         "open %.0f ms, replay of %u positions %.0f ms)",
                      a, b, why, r->st.detect_ms, to, t_route - t0, t_replay - t_route, total,
                      t1 - t_replay);
            } else {
                r->st.moves++;
                event(r, "leave: blocks %u:%u: %s; now %s (replay of %u positions %.0f ms)", a, b,
                      why, to, total, t1 - t_replay);
            }
            if (mismatch)
                event(r, "warning: blocks %u:%u: the replacement's output differs from the "
                         "first run at %u of %u positions",
                      a, b, mismatch, keep_from);
            rc = 0;
            break;
        }
        /* nh[bad] failed: ban it, drop every new hop, try again */
        const char *bad_addr = r->cands.v[nh[bad].cand].address;
        describe(last, sizeof last, bad_addr, NULL, &e[bad]);
        if (e[bad].rc != SHOAL_ERR_SESSION)
            shoal_health_ban(r->health, bad_addr, shoal_link_now());
        hops_close(r, nh, np, 200);
        for (size_t k = 0; k < np; k++)
            hop_free(&nh[k]);
        if (++attempts > r->p.max_retries) {
            rc = e[bad].rc ? e[bad].rc : SHOAL_ERR_INTERNAL;
            set_err(r->err, sizeof r->err, "blocks %u:%u: %s; gave up after %d replacements: %s",
                    a, b, why, attempts, last);
            break;
        }
        sleep_ms(backoff);
        backoff = backoff * 2 < REMOTE_BACKOFF_MAX_MS ? backoff * 2 : REMOTE_BACKOFF_MAX_MS;
    }
    free(nh);
    free(e);
    if (rc == 0 && *n_new) {
        /* the old session: closed if its node still listens, then dropped */
        if (!hop_dead(&old) && (mode == REPLACE_MOVE || (cause->rc != SHOAL_ERR_TIMEOUT &&
                                                         cause->rc != SHOAL_ERR_IO)))
            hops_close(r, &old, 1, mode == REPLACE_MOVE ? 1000 : 200);
        hop_free(&old);
    }
    return rc;
}

/* ---- a step ----------------------------------------------------------------- */

/* Run the step (pos, n) through hops from i on: to hop i directly, and on
 * through a push route when pushing. Returns the index of the first hop
 * that failed (its reason in *fail), or the index after the last one run. */
static size_t drive(shoal_remote *r, size_t i, int pos, int n, float *x, expect *fail,
                    int *failed)
{
    *failed = 0;
    size_t k = r->p.push ? r->n_hops - i : 1;
    if (k > 1 + SHOAL_WIRE_MAX_ROUTE)
        k = 1 + SHOAL_WIRE_MAX_ROUTE;
    /* a push never goes into a hop whose node is known to be gone */
    double now = shoal_link_now();
    for (size_t m = 1; m < k; m++)
        if (hop_dead(&r->hops[i + m]) || hop_banned(r, &r->hops[i + m], now)) {
            k = m;
            break;
        }
    expect *e = r->exps;
    uint64_t id0 = new_ids(r, k);
    for (size_t m = 0; m < k; m++) {
        remote_hop *h = &r->hops[i + m];
        int rc = h->end < r->L ? hist_reserve(r, h->end, (uint32_t)(pos + n)) : 0;
        exp_init(&e[m], h->link, h->drops, id0 + m, SHOAL_OP_SESSION_STEP, now, r->p.timeout_ms);
        e[m].sid = h->sid;
        e[m].step = r->step;
        e[m].out = dest(r, h->end, (uint32_t)pos, x);
        e[m].n = (uint32_t)n;
        if (m > 0) {
            e[m].relay = r->hops[i + m - 1].link;
            e[m].after = (int)m - 1;
            if (h->ewma_ms > 0)
                e[m].stall_ms = liveness(&r->p) + 8 * h->ewma_ms;
        }
        if (rc) {
            exp_fail(&e[m], now, SHOAL_ERR_NOMEM, 0, "out of memory for the history");
            *fail = e[m];
            *failed = 1;
            return i + m;
        }
    }
    remote_hop *h0 = &r->hops[i];
    if (hop_dead(h0) || hop_banned(r, h0, now)) {
        if (hop_dead(h0))
            exp_fail(&e[0], now, SHOAL_ERR_IO, 0, "lost its connection");
        else
            exp_fail(&e[0], now, SHOAL_ERR_IO, 0, "failed on another hop");
        *fail = e[0];
        *failed = 1;
        return i;
    }
    shoal_wire_header q;
    shoal_wire_header_init(&q, SHOAL_OP_SESSION_STEP, id0);
    q.has = SHOAL_WIRE_HAS_SESSION | SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
    q.session_id = h0->sid;
    q.step_id = r->step;
    q.position = (uint32_t)pos;
    if (k > 1) {
        q.has |= SHOAL_WIRE_HAS_ROUTE;
        q.nroute = (uint32_t)(k - 1);
        for (size_t m = 1; m < k; m++) {
            remote_hop *h = &r->hops[i + m];
            const char *a = shoal_link_address(h->link);
            q.route[m - 1] = (shoal_wire_hop){{(const uint8_t *)a, (uint32_t)strlen(a)}, h->sid,
                                              h->ptok};
        }
    }
    int rc = shoal_link_send(h0->link, &q, hist_at(r, h0->start, (uint32_t)pos), (uint32_t)n,
                             r->dim, r->p.codec);
    if (rc) {
        exp_fail(&e[0], now, rc, 0, "cannot send (%s)", shoal_strerror(rc));
        *fail = e[0];
        *failed = 1;
        return i;
    }
    for (size_t m = 0; m < k; m++)
        shoal_link_await(r->hops[i + m].link, now);
    wait_all(e, k, liveness(&r->p), r->dim);
    for (size_t m = 0; m < k; m++) {
        remote_hop *h = &r->hops[i + m];
        if (e[m].state != EXP_DONE) {
            *fail = e[m];
            *failed = 1;
            return i + m;
        }
        double took = e[m].when - (m ? e[m - 1].when : e[m].sent);
        if (took < 0)
            took = 0;
        h->ewma_ms = h->ewma_ms > 0 ? h->ewma_ms + (took - h->ewma_ms) / 4 : took;
        if (e[m].leaving)
            h->leaving = 1;
    }
    return i + k;
}

int shoal_remote_blocks(shoal_remote *r, int pos, int n, float *x)
{
    if (r->p.on_step)
        r->p.on_step(r->p.step_ctx, r, r->calls, pos, n);
    r->calls++;
    if (r->broken)
        return r->broken;
    r->err[0] = 0;
    if (n < 1 || pos < 0 || pos > r->len) {
        set_err(r->err, sizeof r->err, "bad step: %d tokens at position %d of %d", n, pos,
                r->len);
        return SHOAL_ERR_ARG;
    }
    if ((uint32_t)n > r->p.max_length - (uint32_t)pos) {
        set_err(r->err, sizeof r->err, "the sessions hold %u positions", r->p.max_length);
        return SHOAL_ERR_CONTEXT;
    }
    const uint32_t a0 = r->hops[0].start;
    if (hist_reserve(r, a0, (uint32_t)(pos + n))) {
        set_err(r->err, sizeof r->err, "out of memory for the history");
        return SHOAL_ERR_NOMEM;
    }
    memcpy(hist_at(r, a0, (uint32_t)pos), x, (size_t)n * r->dim * sizeof *x);
    r->step = ++r->step_ctr;
    size_t i = 0;
    while (i < r->n_hops) {
        expect fail;
        int failed;
        size_t j = drive(r, i, pos, n, x, &fail, &failed);
        if (!failed) {
            i = j;
            continue;
        }
        if (fail.soft && j > i) {
            /* a push into hop j went wrong (refused or lost): the client
             * sends hop j the step itself, with the same step id */
            r->st.push_fallbacks++;
            i = j;
            continue;
        }
        remote_hop *h = &r->hops[j];
        int rc = fail.rc ? fail.rc : SHOAL_ERR_INTERNAL;
        if (r->p.max_retries <= 0 || rc == SHOAL_ERR_NOMEM) {
            describe(r->err, sizeof r->err, r->cands.v[h->cand].address, h, &fail);
            r->broken = rc;
            return rc;
        }
        size_t n_new = 0;
        rc = replace(r, j, (uint32_t)(pos + n), (uint32_t)pos, dest(r, h->end, (uint32_t)pos, x),
                     &fail, REPLACE_FAILOVER, &n_new);
        if (rc) {
            r->broken = rc;
            return rc;
        }
        i = j + n_new;
    }
    r->len = pos + n;
    /* move hops off nodes that said they are leaving */
    for (size_t j = 0; j < r->n_hops;) {
        if (!r->hops[j].leaving) {
            j++;
            continue;
        }
        size_t n_new = 0;
        int rc = replace(r, j, (uint32_t)r->len, (uint32_t)r->len, NULL, NULL, REPLACE_MOVE,
                         &n_new);
        if (rc || n_new == 0) {
            r->err[0] = 0;
            j++; /* nobody else: stay while it lasts */
            continue;
        }
        j += n_new;
    }
    return 0;
}

/* ---- the sequence ---------------------------------------------------------- */

int shoal_remote_new(const shoal_route_cands *cands, const shoal_route_want *want,
                     const char *const *spares, size_t n_spares, const shoal_route_hop *hops,
                     size_t n_hops, const shoal_remote_params *params, shoal_remote **out,
                     char *err, size_t errlen)
{
    *out = NULL;
    if (!params || params->max_length == 0 || !want || want->dim == 0 || want->nblocks == 0 ||
        n_hops == 0 || params->codec < 0 || params->codec >= SHOAL_CODEC__COUNT ||
        params->timeout_ms < 1 || params->liveness_ms < 1 || params->replay_batch < 1 ||
        params->max_retries < 0) {
        set_err(err, errlen, "bad remote sequence parameters");
        return SHOAL_ERR_ARG;
    }
    for (size_t i = 0; i < n_hops; i++)
        if (hops[i].cand >= cands->n || hops[i].start >= hops[i].end ||
            hops[i].end > want->nblocks || (i && hops[i].start != hops[i - 1].end) ||
            (i == 0 && hops[i].start != 0) || (i + 1 == n_hops && hops[i].end != want->nblocks)) {
            set_err(err, errlen, "the plan does not cover the model's blocks in order");
            return SHOAL_ERR_ARG;
        }
    if (sodium_init() < 0) {
        set_err(err, errlen, "libsodium does not start");
        return SHOAL_ERR_INTERNAL;
    }
    int rc = SHOAL_ERR_NOMEM;
    shoal_remote *r = calloc(1, sizeof *r);
    if (!r) {
        set_err(err, errlen, "out of memory");
        return rc;
    }
    r->p = *params;
    r->want = *want;
    r->dim = want->dim;
    r->L = want->nblocks;
    shoal_route_cands_init(&r->cands);
    for (size_t i = 0; i < cands->n; i++) {
        if (shoal_route_cands_add(&r->cands, cands->v[i].address, &cands->v[i].info))
            goto nomem;
        r->cands.v[i].state = cands->v[i].state;
    }
    r->hops = calloc(n_hops, sizeof *r->hops);
    r->cap_hops = n_hops;
    r->hist = calloc(r->L + 1, sizeof *r->hist);
    r->hist_cap = calloc(r->L + 1, sizeof *r->hist_cap);
    r->skip = calloc(SHOAL_ROUTE_MAX_CANDS, 1);
    r->plan = calloc(r->L, sizeof *r->plan);
    r->scratch = malloc((size_t)params->replay_batch * r->dim * sizeof *r->scratch);
    r->spares = n_spares ? calloc(n_spares, sizeof *r->spares) : NULL;
    if (!r->hops || !r->hist || !r->hist_cap || !r->skip || !r->plan || !r->scratch ||
        (n_spares && !r->spares) || ensure_exps(r, 1 + SHOAL_WIRE_MAX_ROUTE) ||
        shoal_health_new(&params->health, &r->health))
        goto nomem;
    for (size_t i = 0; i < n_spares; i++)
        if (strlen(spares[i]) < SHOAL_ADDR_MAX)
            snprintf(r->spares[r->n_spares++], SHOAL_ADDR_MAX, "%s", spares[i]);
    if (!(r->zctx = shoal_transport_ctx_new())) {
        rc = SHOAL_ERR_IO;
        set_err(err, errlen, "cannot start ZeroMQ");
        goto fail;
    }
    randombytes_buf(&r->next_id, sizeof r->next_id);
    r->n_hops = n_hops;
    for (size_t i = 0; i < n_hops; i++)
        r->hops[i] = (remote_hop){.cand = hops[i].cand, .start = hops[i].start,
                                  .end = hops[i].end};
    expect *e = calloc(n_hops, sizeof *e);
    if (!e)
        goto nomem;
    hops_open(r, r->hops, n_hops, e);
    rc = 0;
    for (size_t i = 0; i < n_hops && !rc; i++)
        if (!r->hops[i].open) {
            rc = e[i].rc ? e[i].rc : SHOAL_ERR_INTERNAL;
            describe(err, errlen, cands->v[hops[i].cand].address, &r->hops[i], &e[i]);
        }
    free(e);
    if (rc)
        goto fail;
    *out = r;
    return 0;
nomem:
    rc = SHOAL_ERR_NOMEM;
    set_err(err, errlen, "out of memory");
fail:
    shoal_remote_destroy(&r);
    return rc;
}

void shoal_remote_destroy(shoal_remote **rp)
{
    if (!rp || !*rp)
        return;
    shoal_remote *r = *rp;
    if (r->zctx && r->hops) {
        int ms = r->p.timeout_ms < REMOTE_CLOSE_MS ? r->p.timeout_ms : REMOTE_CLOSE_MS;
        hops_close(r, r->hops, r->n_hops, ms);
    }
    for (size_t i = 0; r->hops && i < r->n_hops; i++)
        hop_free(&r->hops[i]);
    free(r->hops);
    for (uint32_t b = 0; r->hist && b <= r->L; b++)
        free(r->hist[b]);
    free(r->hist);
    free(r->hist_cap);
    free(r->skip);
    free(r->plan);
    free(r->scratch);
    free(r->spares);
    free(r->exps);
    shoal_health_destroy(&r->health);
    shoal_route_cands_fini(&r->cands);
    if (r->zctx)
        zmq_ctx_term(r->zctx);
    free(r);
    *rp = NULL;
}

int shoal_remote_len(const shoal_remote *r) { return r->len; }

void shoal_remote_describe(const shoal_remote *r, char *out, size_t outlen)
{
    if (!out || !outlen)
        return;
    out[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i < r->n_hops && used + 1 < outlen; i++) {
        int k = snprintf(out + used, outlen - used, "%s%u:%u %s", i ? ", " : "",
                         r->hops[i].start, r->hops[i].end, r->cands.v[r->hops[i].cand].address);
        if (k < 0)
            break;
        used += (size_t)k;
    }
}

const char *shoal_remote_last_error(const shoal_remote *r) { return r->err; }

void shoal_remote_stats_get(const shoal_remote *r, shoal_remote_stats *out) { *out = r->st; }
