/*
 * The node's Prometheus metrics (node/node.h, shoal_node_set_metrics).
 *
 * Families (all prefixed shoal_node_, base units):
 *   requests_total{rpc}                counter  every request decoded, by op
 *   request_errors_total{rpc,code}     counter  ERROR replies, by op and
 *                                               error name
 *   tokens_processed_total{rpc}        counter  token rows computed through
 *                                               the span (steps, pushes,
 *                                               stateless forwards)
 *   step_duration_seconds{rpc}         histogram compute time of a request
 *                                               in a worker (queueing not
 *                                               included)
 *   sessions                           gauge    inference sessions open
 *   kv_cache_reserved_tokens           gauge    tokens reserved by sessions
 *   kv_cache_budget_tokens             gauge    the budget
 *   queued_requests                    gauge    jobs waiting for a worker
 *   dht_peers                          gauge    contacts in the routing table
 *   dht_records                        gauge    records held for the swarm
 *   span_start, span_end               gauge    the blocks served [start, end)
 *   leaving                            gauge    1 while leaving gracefully
 *
 * Labels come from a fixed set (op names from proto/wire, error names from
 * kernels/err), never from a peer's bytes: an unknown op is counted as
 * "unknown", so the series stay bounded however hostile the traffic.
 *
 * Updates go straight to the registry (one mutex, see swarm/metrics.h) from
 * the I/O thread and the workers; the gauges are refreshed by the I/O
 * thread, which owns the DHT, about once a second.
 */
#include <stdatomic.h>

#include "kernels/err.h"
#include "node/announce.h"
#include "node/node_impl.h"
#include "proto/wire.h"
#include "swarm/metrics.h"

/* Step latency bounds, seconds: 100 µs .. 30 s. */
static const double step_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                     5,      10,      30};

static const char *rpc_label(uint32_t op)
{
    const char *s = shoal_wire_op_name(op);
    return s ? s : "unknown";
}

static const char *code_label(int code)
{
    const char *s = shoal_err_name(code);
    return s ? s : "unknown";
}

int node_metrics_init(shoal_node *n, shoal_metrics *m)
{
    static const char *const rpc[] = {"rpc"}, *const rpc_code[] = {"rpc", "code"};
    node_metrics *nm = &n->metrics;
    nm->m = m;
    nm->requests = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "shoal_node_requests_total",
                                            "Requests received, by RPC.", rpc, 1, NULL, 0);
    nm->errors = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER,
                                          "shoal_node_request_errors_total",
                                          "ERROR replies sent, by RPC and error.", rpc_code, 2,
                                          NULL, 0);
    nm->tokens = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER,
                                          "shoal_node_tokens_processed_total",
                                          "Token rows computed through the served blocks, by "
                                          "RPC.",
                                          rpc, 1, NULL, 0);
    nm->step = shoal_metrics_add_family(
        m, SHOAL_METRIC_HISTOGRAM, "shoal_node_step_duration_seconds",
        "Compute time of a request in a worker (without queueing), by RPC.", rpc, 1,
        step_bounds, (int)(sizeof step_bounds / sizeof step_bounds[0]));
    nm->sessions = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_node_sessions",
                                            "Inference sessions open.", NULL, 0, NULL, 0);
    nm->kv_used = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE,
                                           "shoal_node_kv_cache_reserved_tokens",
                                           "KV-cache tokens reserved by open sessions.", NULL, 0,
                                           NULL, 0);
    nm->kv_budget = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE,
                                             "shoal_node_kv_cache_budget_tokens",
                                             "KV-cache budget in tokens.", NULL, 0, NULL, 0);
    nm->queued = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_node_queued_requests",
                                          "Requests waiting for a worker.", NULL, 0, NULL, 0);
    nm->dht_peers = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_node_dht_peers",
                                             "Contacts in the DHT routing table.", NULL, 0,
                                             NULL, 0);
    nm->dht_records = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_node_dht_records",
                                               "Records this node holds for the swarm's DHT.",
                                               NULL, 0, NULL, 0);
    nm->span_start = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_node_span_start",
                                              "First block served.", NULL, 0, NULL, 0);
    nm->span_end = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_node_span_end",
                                            "One past the last block served.", NULL, 0, NULL, 0);
    nm->leaving = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "shoal_node_leaving",
                                           "1 while the node leaves gracefully.", NULL, 0, NULL,
                                           0);
    if (nm->requests < 0 || nm->errors < 0 || nm->tokens < 0 || nm->step < 0 ||
        nm->sessions < 0 || nm->kv_used < 0 || nm->kv_budget < 0 || nm->queued < 0 ||
        nm->dht_peers < 0 || nm->dht_records < 0 || nm->span_start < 0 || nm->span_end < 0 ||
        nm->leaving < 0) {
        nm->m = NULL;
        return SHOAL_ERR_ARG;
    }
    /* the series of the common RPCs exist from the first scrape */
    static const uint32_t common[] = {SHOAL_OP_PING, SHOAL_OP_INFO, SHOAL_OP_SESSION_OPEN,
                                      SHOAL_OP_SESSION_STEP, SHOAL_OP_SESSION_CLOSE,
                                      SHOAL_OP_FORWARD};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) {
        const char *v[1] = {rpc_label(common[i])};
        shoal_metrics_inc(m, nm->requests, v, 0);
    }
    static const uint32_t computed[] = {SHOAL_OP_SESSION_STEP, SHOAL_OP_FORWARD};
    for (size_t i = 0; i < sizeof computed / sizeof computed[0]; i++) {
        const char *v[1] = {rpc_label(computed[i])};
        shoal_metrics_inc(m, nm->tokens, v, 0);
    }
    node_metrics_tick(n);
    return 0;
}

void node_metrics_request(shoal_node *n, uint32_t op)
{
    if (!n->metrics.m)
        return;
    const char *v[1] = {rpc_label(op)};
    shoal_metrics_inc(n->metrics.m, n->metrics.requests, v, 1);
}

void node_metrics_error(shoal_node *n, uint32_t op, int code)
{
    if (!n->metrics.m)
        return;
    const char *v[2] = {rpc_label(op), code_label(code)};
    shoal_metrics_inc(n->metrics.m, n->metrics.errors, v, 1);
}

void node_metrics_tokens(shoal_node *n, uint32_t op, uint64_t tokens)
{
    if (!n->metrics.m)
        return;
    const char *v[1] = {rpc_label(op)};
    shoal_metrics_inc(n->metrics.m, n->metrics.tokens, v, (double)tokens);
}

void node_metrics_step(shoal_node *n, uint32_t op, double seconds)
{
    if (!n->metrics.m)
        return;
    const char *v[1] = {rpc_label(op)};
    shoal_metrics_observe(n->metrics.m, n->metrics.step, v, seconds);
}

void node_metrics_tick(shoal_node *n)
{
    node_metrics *nm = &n->metrics;
    if (!nm->m)
        return;
    pthread_mutex_lock(&n->mu);
    int sessions = n->nsessions, queued = n->qlen;
    uint64_t reserved = n->reserved;
    pthread_mutex_unlock(&n->mu);
    shoal_metrics_set(nm->m, nm->sessions, NULL, sessions);
    shoal_metrics_set(nm->m, nm->queued, NULL, queued);
    shoal_metrics_set(nm->m, nm->kv_used, NULL, (double)reserved);
    shoal_metrics_set(nm->m, nm->kv_budget, NULL, (double)n->p.cache_tokens);
    shoal_metrics_set(nm->m, nm->span_start, NULL, n->p.block_begin);
    shoal_metrics_set(nm->m, nm->span_end, NULL, n->p.block_end);
    shoal_metrics_set(nm->m, nm->leaving, NULL, atomic_load(&n->leaving) ? 1 : 0);
    uint32_t peers = 0, records = 0;
    if (n->announce)
        shoal_announce_dht_counts(n->announce, &peers, &records);
    shoal_metrics_set(nm->m, nm->dht_peers, NULL, peers);
    shoal_metrics_set(nm->m, nm->dht_records, NULL, records);
}
