/*
 * Training-session calls (see peer_train.h): each builds its request
 * header and goes through shoal_peer_call. Checkpoint state moves in
 * chunks; every PULL and PUSH reply states the length of the node's whole
 * state, which must equal what the client expects, so a client and a node
 * that disagree on the layout fail loudly instead of mixing tensors.
 */
#include "swarm/peer_train.h"

#include <string.h>

#include "kernels/err.h"

static void req_session(shoal_wire_header *h, int op, uint64_t sid)
{
    shoal_wire_header_init(h, (uint16_t)op, 0);
    h->has = SHOAL_WIRE_HAS_SESSION;
    h->session_id = sid;
}

static void req_opt(shoal_wire_header *h, const shoal_peer_train_params *tp)
{
    h->has |= SHOAL_WIRE_HAS_OPT;
    h->opt_lr = tp->lr;
    h->opt_beta1 = tp->beta1;
    h->opt_beta2 = tp->beta2;
    h->opt_eps = tp->eps;
    h->opt_wd = tp->weight_decay;
}

int shoal_peer_train_open(shoal_peer *p, uint64_t session_id, const shoal_peer_train_params *tp,
                          int timeout_ms)
{
    shoal_wire_header h;
    req_session(&h, SHOAL_OP_TRAIN_OPEN, session_id);
    h.has |= SHOAL_WIRE_HAS_SPAN | SHOAL_WIRE_HAS_MAX_LENGTH | SHOAL_WIRE_HAS_LORA;
    h.span_start = tp->span_start;
    h.span_end = tp->span_end;
    h.max_length = tp->max_tokens;
    h.lora_rank = tp->rank;
    h.lora_alpha = tp->alpha;
    h.lora_targets = tp->targets;
    h.lora_seed = tp->seed;
    req_opt(&h, tp);
    return shoal_peer_call(p, &h, NULL, 0, NULL, NULL, timeout_ms);
}

static int pass(shoal_peer *p, int op, uint64_t session_id, uint64_t key, float *x, int n_seq,
                int T, int dim, int codec, int timeout_ms)
{
    if (!x || n_seq < 1 || T < 1 || dim < 1)
        return SHOAL_ERR_ARG;
    shoal_wire_header h;
    req_session(&h, op, session_id);
    if (key) {
        h.has |= SHOAL_WIRE_HAS_STEP;
        h.step_id = key;
    }
    shoal_peer_tensor t = {x, 3, {(uint32_t)n_seq, (uint32_t)T, (uint32_t)dim},
                           (size_t)n_seq * (size_t)T * (size_t)dim};
    if (n_seq == 1)
        t = (shoal_peer_tensor){x, 2, {(uint32_t)T, (uint32_t)dim, 0}, t.cap};
    shoal_peer_tensor out = t;
    return shoal_peer_call(p, &h, &t, codec, &out, NULL, timeout_ms);
}

int shoal_peer_train_forward(shoal_peer *p, uint64_t session_id, uint64_t key, float *x,
                             int n_seq, int T, int dim, int codec, int timeout_ms)
{
    return pass(p, SHOAL_OP_TRAIN_FORWARD, session_id, key, x, n_seq, T, dim, codec,
                timeout_ms);
}

int shoal_peer_train_backward(shoal_peer *p, uint64_t session_id, uint64_t key, float *g,
                              int n_seq, int T, int dim, int codec, int timeout_ms)
{
    if (!key)
        return SHOAL_ERR_ARG;
    return pass(p, SHOAL_OP_TRAIN_BACKWARD, session_id, key, g, n_seq, T, dim, codec,
                timeout_ms);
}

int shoal_peer_train_step(shoal_peer *p, uint64_t session_id, int64_t t,
                          const shoal_peer_train_params *tp, int timeout_ms)
{
    if (t < 1)
        return SHOAL_ERR_ARG;
    shoal_wire_header h;
    req_session(&h, SHOAL_OP_TRAIN_STEP, session_id);
    h.has |= SHOAL_WIRE_HAS_STEP;
    h.step_id = (uint64_t)t;
    if (tp)
        req_opt(&h, tp);
    return shoal_peer_call(p, &h, NULL, 0, NULL, NULL, timeout_ms);
}

/* The length of the node's whole state, from a PULL or PUSH reply. */
static int check_total(shoal_peer *p, const shoal_wire_header *rep, size_t n)
{
    if (!(rep->has & SHOAL_WIRE_HAS_MAX_LENGTH) || rep->max_length != n) {
        (void)p;
        return SHOAL_ERR_PROTOCOL;
    }
    return 0;
}

int shoal_peer_train_pull(shoal_peer *p, uint64_t session_id, float *state, size_t n,
                          int64_t *t, size_t chunk, int timeout_ms)
{
    if ((!state && n) || chunk < 1 || n > UINT32_MAX || chunk > UINT32_MAX || !t)
        return SHOAL_ERR_ARG;
    shoal_wire_header h, rep;
    for (size_t off = 0; off < n;) {
        req_session(&h, SHOAL_OP_TRAIN_PULL, session_id);
        h.has |= SHOAL_WIRE_HAS_POSITION | SHOAL_WIRE_HAS_MAX_LENGTH;
        h.position = (uint32_t)off;
        h.max_length = (uint32_t)(n - off < chunk ? n - off : chunk);
        shoal_peer_tensor out = {state + off, 0, {0}, h.max_length};
        int rc = shoal_peer_call(p, &h, NULL, SHOAL_CODEC_F32, &out, &rep, timeout_ms);
        if (rc)
            return rc;
        if (out.ndim != 1 || check_total(p, &rep, n))
            return SHOAL_ERR_PROTOCOL;
        *t = (int64_t)rep.step_id;
        off += out.shape[0];
    }
    return 0;
}

int shoal_peer_train_push(shoal_peer *p, uint64_t session_id, const float *state, size_t n,
                          int64_t t, size_t chunk, int timeout_ms)
{
    if (!state || n < 1 || chunk < 1 || n > UINT32_MAX || t < 0)
        return SHOAL_ERR_ARG;
    shoal_wire_header h, rep;
    for (size_t off = 0; off < n;) {
        size_t k = n - off < chunk ? n - off : chunk;
        req_session(&h, SHOAL_OP_TRAIN_PUSH, session_id);
        h.has |= SHOAL_WIRE_HAS_STEP | SHOAL_WIRE_HAS_POSITION;
        h.step_id = (uint64_t)t;
        h.position = (uint32_t)off;
        shoal_peer_tensor in = {(float *)(state + off), 1, {(uint32_t)k, 0, 0}, k};
        int rc = shoal_peer_call(p, &h, &in, SHOAL_CODEC_F32, NULL, &rep, timeout_ms);
        if (rc)
            return rc;
        if (check_total(p, &rep, n))
            return SHOAL_ERR_PROTOCOL;
        off += k;
    }
    return 0;
}

int shoal_peer_train_close(shoal_peer *p, uint64_t session_id, int timeout_ms)
{
    shoal_wire_header h;
    req_session(&h, SHOAL_OP_TRAIN_CLOSE, session_id);
    return shoal_peer_call(p, &h, NULL, 0, NULL, NULL, timeout_ms);
}
