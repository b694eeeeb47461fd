/*
 * Internals of the node shared by node.c (lifecycle and the I/O thread),
 * session.c (the session table and cache budget) and worker.c (compute).
 *
 * Locking: one mutex, node->mu, guards the job queue, the session table,
 * the cache budget, the span table and the training sessions (train.h). A session's compute state (its KV
 * cache and last step) belongs to the worker that holds it busy, without
 * the lock; the I/O thread touches a session only while it is not busy.
 *
 * Job life: a free job (node->free_jobs) is filled by the I/O thread with a
 * received message, then either queued (node->queue), parked waiting for
 * cache space (io-thread only, node->pending), or answered and freed. A
 * worker takes a queued job, answers it through its PUSH socket, and frees
 * it. The job pool is fixed: when it is empty new requests get BUSY.
 */
#ifndef SHOAL_NODE_NODE_IMPL_H
#define SHOAL_NODE_NODE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "kernels/model.h"
#include "node/node.h"
#include "proto/wire.h"
#include "swarm/transport.h"


#define NODE_MAX_JOBS 256     /* requests queued or in work at once */
#define NODE_MAX_PENDING 64   /* SESSION_OPENs waiting for cache space */
#define NODE_MAX_SPANS 32     /* distinct sub-spans served */
#define NODE_MAX_WORKERS 64
#define WORKER_FWD_SLOTS 4    /* forward scratches per worker (LRU) */
#define NODE_OWNER_SIZE 41    /* Z85 client key + NUL */
#define NODE_RID_MAX 255      /* bytes of a ROUTER routing id */

/* One block range the node computes: the served span, or a sub-span a
 * client asked for (spans overlap across nodes). Created on demand, freed
 * with the node. */
typedef struct node_span {
    int a, b;
    shoal_model *m;
} node_span;

typedef struct node_session {
    uint64_t id;
    char owner[NODE_OWNER_SIZE];  /* "" when the client key is not known */
    const node_span *span;
    uint32_t max_length;
    double last_used;             /* node_now() */
    int busy;                     /* held by a worker, or its OPEN is queued */
    /* Worker-only while busy: */
    shoal_kv *kv;                 /* NULL until the OPEN job made it */
    int has_last;                 /* the last applied step, for retries */
    uint64_t last_step;
    uint32_t last_pos, last_n;
    float *last_out;              /* (last_n, dim) */
    size_t last_cap;              /* floats */
    const struct node_adapter *adapter; /* served adapter applied, or NULL
                                     (train.h); set at open */
    /* >>> forwarding (node/push.h): worker-only while busy */
    uint64_t push_token;          /* a push must bear it; 0: no pushes */
    uint8_t client_rid[NODE_RID_MAX]; /* routing id of the session's client */
    size_t client_rid_len;
    /* <<< forwarding */
} node_session;

typedef struct node_job {
    shoal_transport_msg msg;      /* [routing id][header][tensors] */
    shoal_wire_header h;          /* decoded header */
    char owner[NODE_OWNER_SIZE];
    node_session *s;              /* OPEN: the reserved session; STEP/CLOSE:
                                     set when a worker takes the job */
    struct node_train_session *ts;/* training ops: the session, set when a
                                     worker takes the job (train.h) */
    double deadline;              /* pending OPEN: answer BUSY after this */
    struct node_job *next_free;
} node_job;

typedef struct node_fwd_slot {
    const node_span *span;        /* NULL: empty */
    shoal_fwd *f;
    shoal_kv *scratch;            /* stateless FORWARD; made on first use */
    uint64_t used;                /* LRU stamp */
} node_fwd_slot;

/* Metric family ids in the registry given by shoal_node_set_metrics
 * (node_metrics.c); m is NULL when the node keeps no metrics. */
typedef struct node_metrics {
    struct shoal_metrics *m;
    int requests, errors, tokens, step;
    int sessions, kv_used, kv_budget, queued, dht_peers, dht_records, span_start, span_end,
        leaving;
} node_metrics;

typedef struct node_worker {
    struct shoal_node *node;
    int index;
    pthread_t thread;
    int started;
    void *push;                   /* PUSH to the I/O thread */
    int threads;
    node_fwd_slot slot[WORKER_FWD_SLOTS]; /* slot[0]: the served span */
    uint64_t stamp;
    float *x;                     /* (max_batch, dim) */
    uint8_t *hbuf;                /* SHOAL_WIRE_HEADER_MAX */
    uint8_t *tbuf;                /* (max_batch * dim) f32 at most */
    size_t tcap;
    shoal_wire_header rep;
} node_worker;

struct shoal_node {
    shoal_node_params p;
    const shoal_gguf *g;
    shoal_hparams hp;
    shoal_model_id model_id;
    char address[SHOAL_ADDR_MAX];
    int port;
    int weight_type;
    size_t max_frame;

    void *ctx;
    void *router;                 /* I/O thread only (after start) */
    void *pull;                   /* replies from workers */
    void *zap;
    char pull_ep[64];
    pthread_t io_thread;
    int io_started;
    atomic_int stop;              /* set by shoal_node_stop */
    atomic_int running;

    pthread_mutex_t mu;
    pthread_cond_t cv;            /* work queued, session released, exit */
    node_job *jobs;               /* NODE_MAX_JOBS */
    node_job *free_jobs;
    node_job *queue[NODE_MAX_JOBS];
    int qlen;
    int active;                   /* jobs held by workers */
    int workers_exit;
    node_session **sessions;      /* max_sessions slots */
    int nsessions;
    uint64_t reserved;            /* tokens reserved by sessions */
    node_span spans[NODE_MAX_SPANS];
    int nspans;

    struct node_train_table *train; /* training sessions (train.h), under mu */

    /* >>> graceful leave and forwarding (node/push.h) */
    atomic_int leaving;           /* shoal_node_leave() was called */
    struct node_push_table *push_table; /* outgoing pushes: I/O thread only */
    /* <<< */

    /* >>> DHT (node/announce.h): I/O thread only while running */
    struct shoal_announce *announce;
    /* <<< */

    node_job *pending[NODE_MAX_PENDING]; /* I/O thread only */
    int npending;

    node_metrics metrics;         /* node_metrics.c; set before start */
    uint32_t io_op;               /* I/O thread: op of the request in hand */

    node_worker *workers;
    int nworkers;
    uint8_t *hbuf;                /* I/O thread's reply buffer */
    shoal_wire_header rep;        /* I/O thread's reply header */
};

double node_now(void);

/* session.c: all under node->mu. */
node_session *node_session_find(shoal_node *n, uint64_t id);
/* Reserve a new session (busy, no KV yet). SHOAL_ERR_BUSY when the budget
 * or the session table is full now, SHOAL_ERR_ARG when id is taken. */
int node_session_reserve(shoal_node *n, uint64_t id, const char *owner, const node_span *span,
                         uint32_t max_length, node_session **out);
/* Remove s from the table, release its tokens and free it. */
void node_session_remove(shoal_node *n, node_session *s);
/* Close sessions idle longer than the timeout; returns how many. */
int node_session_expire(shoal_node *n, double now);
/* The node's span object for blocks [a, b), made on first use. NULL when
 * the span table is full or the model cannot be opened. */
const node_span *node_span_get(shoal_node *n, int a, int b);

/* node_metrics.c: no-ops when the node keeps no metrics. Any thread, but
 * tick, which reads the DHT: the I/O thread (or before start). */
int node_metrics_init(shoal_node *n, struct shoal_metrics *m);
void node_metrics_request(shoal_node *n, uint32_t op);
void node_metrics_error(shoal_node *n, uint32_t op, int code);
void node_metrics_tokens(shoal_node *n, uint32_t op, uint64_t tokens);
void node_metrics_step(shoal_node *n, uint32_t op, double seconds);
void node_metrics_tick(shoal_node *n);

/* worker.c */
int node_worker_init(shoal_node *n, node_worker *w, int index, int threads);
void node_worker_fini(node_worker *w);
void *node_worker_main(void *arg);
void node_job_free_locked(shoal_node *n, node_job *j);

/* Replies from a worker, through its PUSH socket to the I/O thread (worker.c):
 * the header in w->hbuf (hlen bytes) and an optional tensor frame; an ERROR
 * reply with a formatted message. Used by worker.c and train.c. */
void node_worker_send(node_worker *w, node_job *j, size_t hlen, const void *t, size_t tlen);
void node_worker_error(node_worker *w, node_job *j, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
