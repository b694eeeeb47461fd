/*
 * Server-to-server forwarding of inference steps (the node's half; the
 * client's is client/remote.h, the bytes docs/WIRE.md).
 *
 * A client opens each session with a push token ("ptok"). A SESSION_STEP
 * may carry a route: the next hops' addresses, session ids and tokens.
 * After the step, the worker that ran it (1) answers the requester as
 * usual and (2) hands the I/O thread a SESSION_PUSH for route[0]: the same
 * step id and position, the output in the reply codec, the request id plus
 * one, bearing route[0]'s token, with the rest of the route. The I/O thread
 * sends it on an outgoing DEALER it owns (one per next-hop address, at most
 * NODE_PUSH_LINKS, the least recently used closed first; sends never block).
 *
 * The next hop's address comes from a client, so a client could make the
 * node connect anywhere. Bounds: at most NODE_PUSH_LINKS links, new ones
 * from a token bucket (NODE_PUSH_NEW_BURST, then NODE_PUSH_NEW_PER_S),
 * links idle for NODE_PUSH_IDLE_S closed, and a link to a host that does
 * not answer retries with backoff (swarm/transport.h), so no client can
 * turn a node into a stream of connection attempts. A push that finds no
 * link is refused like one that cannot be sent: the client drives that
 * hop itself (client/remote.h), nothing is lost.
 *
 * The node that receives a SESSION_PUSH checks the session and the token,
 * then runs it as a step of that session, but answers the session's client
 * (the routing id of the connection the client last used for the session:
 * its OPEN or its last own STEP), under the push's request id, with op
 * SESSION_STEP: the client gets every hop's output on its own connection
 * to that hop, which is how it keeps the history failover replays.
 *
 * Errors: a push refused before it runs (unknown session, wrong token, a
 * full queue) is answered to the pushing node; its I/O thread relays that
 * ERROR to its own session's client (it keeps the push request ids it sent
 * in a ring of NODE_PUSH_RELAYS), so the client learns at once that the
 * chain broke there. A push that cannot be sent at all is answered the
 * same way. Anything else is the client's to notice (a dead next node).
 *
 * Threads: node_push_open/_note_client/_accept/_forward run on a worker
 * holding the session; _poll_items/_service/_send on the I/O thread; init
 * and fini with the node.
 */
#ifndef SHOAL_NODE_PUSH_H
#define SHOAL_NODE_PUSH_H

#include "node/node_impl.h"

#define NODE_PUSH_LINKS 16  /* outgoing connections kept at most */
#define NODE_PUSH_NEW_BURST 16   /* new outgoing connections at once ... */
#define NODE_PUSH_NEW_PER_S 0.2  /* ... then one per 5 s */
#define NODE_PUSH_IDLE_S 120     /* a link unused this long is closed */
#define NODE_PUSH_RELAYS 64 /* pushes remembered for relaying their errors */

int node_push_init(shoal_node *n);
void node_push_fini(shoal_node *n);

/* Worker, at SESSION_OPEN: the session's push token and its client. */
void node_push_open(node_session *s, const node_job *j);
/* Worker, at a SESSION_STEP from the session's owner: where its client is
 * now (a reconnected client has a new routing id). */
void node_push_note_client(node_session *s, const node_job *j);
/* Worker, at a SESSION_PUSH: checks the token. Returns 0 when the job may
 * run: it is then addressed to the session's client and reads as a
 * SESSION_STEP. -1: refused, the pusher has its error reply. */
int node_push_accept(node_worker *w, node_job *j, node_session *s);
/* Worker, after answering step j with output x (ntok, dim): the push to
 * route[0], when j carries a route. */
void node_push_forward(node_worker *w, node_job *j, const float *x, uint32_t ntok);

/* I/O thread: close links idle longer than NODE_PUSH_IDLE_S. */
void node_push_expire(shoal_node *n, double now);
/* I/O thread: the outgoing sockets to poll (POLLIN), at most max; their
 * count. */
int node_push_poll_items(shoal_node *n, zmq_pollitem_t *items, int max);
/* I/O thread: take what came on them (error replies are relayed). */
void node_push_service(shoal_node *n, const zmq_pollitem_t *items, int count);
/* I/O thread: a worker's push message [empty][address][client routing id]
 * [header][tensor]; m is emptied. */
void node_push_send(shoal_node *n, shoal_transport_msg *m);

#endif
