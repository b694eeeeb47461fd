/*
 * LoRA on the node: training sessions, and the adapters it serves.
 *
 * The node's training sessions (docs/WIRE.md, "Training sessions"): each
 * holds the LoRA adapter, gradients and AdamW state of a span of the
 * served blocks (lora/train_span.h) for one client, whose CURVE key owns
 * it as for inference sessions.
 *
 * Memory: a session's bytes (shoal_train_span_bytes: adapter, moments,
 * the block inputs of the micro-batches it keeps, scratch) come out of
 * the node's one budget, counted in KV-cache tokens of the served span,
 * so inference and training share a bound. An open that does not fit now
 * gets SHOAL_ERR_BUSY at once (it does not wait).
 *
 * Jobs: the I/O thread queues every training op; a worker runs it. As for
 * inference sessions, the ops of one session run one at a time, in
 * arrival order: pop_runnable (worker.c) skips a job whose session is
 * busy (node_train_claim_locked) and releases it after the job
 * (node_train_release_locked). Idle sessions expire after
 * session_timeout_s; all close when the node stops.
 *
 * Served adapters: `shoal serve --adapter NAME=FILE` loads a GGUF LoRA
 * file's pairs for the served span (lora/adapter.h); an inference session
 * that names it at SESSION_OPEN runs its steps with it (shoal_fwd_set_lora),
 * and INFO lists the names.
 *
 * THREAD SAFETY: *_locked functions run under node->mu; node_train_run
 * runs on a worker holding the job's session.
 */
#ifndef SHOAL_NODE_TRAIN_H
#define SHOAL_NODE_TRAIN_H

#include <stdbool.h>

#include "node/node_impl.h"

#define NODE_TRAIN_MAX_SESSIONS 64
#define NODE_TRAIN_MAX_SAVED 2  /* micro-batches a session keeps for backward */

/* Make and free the node's table of training sessions (n->train). */
int node_train_init(shoal_node *n);
void node_train_fini(shoal_node *n);

/* Whether op is one of the training ops this file serves. */
bool node_train_is_op(int op);

/* For a queued training job: 1 when it may run now (its session, if it
 * names a known one of the job's owner, is marked busy and set in j->ts;
 * an unknown one leaves j->ts NULL and the job answers SESSION), 0 when
 * its session is busy. */
int node_train_claim_locked(shoal_node *n, node_job *j);
/* After the job: the session is free again and its idle clock restarts. */
void node_train_release_locked(shoal_node *n, node_job *j);

/* Close sessions idle longer than the timeout; returns how many. */
int node_train_expire_locked(shoal_node *n, double now);
/* Close every session (the node is stopping); returns how many. */
int node_train_close_all_locked(shoal_node *n);

/* Run a training job on worker w and send its reply. */
void node_train_run(node_worker *w, node_job *j);

/* ---- served adapters (shoal_node_add_adapter) ----
 * The table is filled before the node starts and fixed after: any thread
 * may read it without the lock. */

#define NODE_MAX_ADAPTERS 16
#define NODE_ADAPTER_NAME_MAX 64   /* with the NUL */

/* The served adapter called name, NULL when there is none ("" or NULL:
 * none asked for, also NULL). */
const struct node_adapter *node_adapter_find(const shoal_node *n, const char *name);
/* The served adapters' names, comma-separated, cut to fit size. */
void node_adapter_list(const shoal_node *n, char *out, size_t size);
/* Apply adapter a (NULL: none) in f's following passes; f's span must lie
 * inside the node's. */
int node_adapter_apply(shoal_fwd *f, const struct node_adapter *a);

#endif
