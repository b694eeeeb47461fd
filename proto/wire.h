/*
 * The wire: a Shoal message is a ZeroMQ multipart message made of one
 * msgpack header frame and then 0..4 raw tensor frames (codec.h), in the
 * order of the header's tensor descriptors. docs/WIRE.md describes the
 * bytes; this header is the C view of them.
 *
 * The header is a msgpack map with short string keys. Encoding writes the
 * keys in one fixed order with msgpack-c's packer into the caller's buffer
 * (no allocation). Decoding never hands peer bytes to msgpack-c: a frame is
 * first walked by shoal_wire_msgpack_check(), which checks the frame cap,
 * that every declared array/map count and str/bin/ext length fits in the
 * bytes that remain, the nesting depth, the total element count and the
 * string sizes, and that exactly one object fills the frame; the decoder
 * then reads the validated bytes with its own bounds-checked cursor into a
 * fixed-size struct. Nothing is allocated, whatever a peer declares.
 *
 * Compatibility: keys the decoder does not know are skipped, so later
 * versions may add keys without bumping SHOAL_WIRE_VERSION; a changed
 * meaning bumps it, and a peer on another version gets SHOAL_ERR_VERSION.
 * Op ids, flag bits, key names and codec ids are never renumbered or reused.
 *
 * Per-op contract (checked by both encode and decode; SHOAL_ERR_FORMAT on
 * decode, SHOAL_ERR_ARG on encode when violated). Every message has v, op,
 * id and fl. Requests (REPLY flag clear) need id != 0 and:
 *   FORWARD          span, >= 1 tensor (hidden states (ntok, dim))
 *   SESSION_OPEN     session, span, max_length
 *   SESSION_STEP     session, step, position, >= 1 tensor
 *   SESSION_CLOSE    session
 *   SESSION_PUSH     session, step, position, push_token, >= 1 tensor
 *   TRAIN_OPEN       session, span, max_length, lora, opt
 *   TRAIN_FORWARD    session, >= 1 tensor
 *   TRAIN_BACKWARD   session, step, >= 1 tensor
 *   TRAIN_STEP       session, step
 *   TRAIN_PULL       session, position, max_length
 *   TRAIN_PUSH       session, step, position, >= 1 tensor
 *   TRAIN_CLOSE      session
 *   FIND_NODE        target
 *   FIND_VALUE       target
 *   STORE            target, >= 1 value
 *   ERROR            (never a request: always SHOAL_ERR_FORMAT)
 * Replies (REPLY flag set) need:
 *   ERROR            error != 0
 *   INFO             model, model_hash, span
 *   FORWARD          >= 1 tensor
 *   SESSION_STEP     session, step, >= 1 tensor
 *   TRAIN_FORWARD    >= 1 tensor
 *   TRAIN_BACKWARD   >= 1 tensor
 *   TRAIN_PULL       step, >= 1 tensor
 * PING may carry a pad, to time a link's bandwidth (docs/WIRE.md): a request
 * has at most one tensor (the pad it sends: F32, one dim, at most
 * SHOAL_WIRE_PAD_MAX bytes) and "pad" (bytes asked back: a multiple of 4,
 * at most the request's own pad bytes, so a reply never outgrows its
 * request); a reply has at most one tensor of the same form. "pad" is
 * allowed in PING requests only.
 * Other ops, including reserved and unknown ones, need only the common keys:
 * a node answers an op it does not serve with an ERROR reply carrying
 * SHOAL_ERR_UNSUPPORTED. Whenever span is present, start <= end. Text fields
 * are valid UTF-8 without NUL bytes. Tensor descriptors must pass
 * shoal_codec_desc_check() (unknown codec: SHOAL_ERR_UNSUPPORTED).
 *
 * THREAD SAFETY: all functions are pure and thread-safe on distinct
 * headers and buffers. None allocates.
 * (Training ops and the lora, opt and adapter keys: see docs/WIRE.md.)
 * (Graceful leave and forwarding: the state, ptok and route keys and the
 * LEAVING flag, see docs/WIRE.md.)
 */
#ifndef SHOAL_PROTO_WIRE_H
#define SHOAL_PROTO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/codec.h"

/* The protocol version: every header carries it as "v". */
#define SHOAL_WIRE_VERSION 1

/* Operation ids ("op"). Gaps are reserved for their group. */
typedef enum shoal_op {
    /* 1..15: basic and inference */
    SHOAL_OP_PING = 1,
    SHOAL_OP_INFO = 2,
    SHOAL_OP_ERROR = 3,
    SHOAL_OP_FORWARD = 4,
    SHOAL_OP_SESSION_OPEN = 5,
    SHOAL_OP_SESSION_STEP = 6,
    SHOAL_OP_SESSION_CLOSE = 7,
    SHOAL_OP_SESSION_PUSH = 8,     /* server-to-server forwarding of a step */
    /* 16..31: DHT */
    SHOAL_OP_FIND_NODE = 16,
    SHOAL_OP_FIND_VALUE = 17,
    SHOAL_OP_STORE = 18,
    /* 32..63: training */
    SHOAL_OP_BACKWARD = 32,        /* stateless backward through a span */
    SHOAL_OP_TRAIN_OPEN = 33,      /* open a training session (LoRA state) */
    SHOAL_OP_TRAIN_FORWARD = 34,
    SHOAL_OP_TRAIN_BACKWARD = 35,
    SHOAL_OP_TRAIN_STEP = 36,      /* apply one optimizer step */
    SHOAL_OP_TRAIN_PULL = 37,      /* read the span's adapters (checkpoint) */
    SHOAL_OP_TRAIN_PUSH = 38,      /* write the span's adapters (restore) */
    SHOAL_OP_TRAIN_CLOSE = 39,
    SHOAL_OP__MAX = 0xffff         /* ops are u16 on the wire */
} shoal_op;

_Static_assert(SHOAL_OP_PING == 1 && SHOAL_OP_INFO == 2 && SHOAL_OP_ERROR == 3 &&
               SHOAL_OP_FORWARD == 4 && SHOAL_OP_SESSION_OPEN == 5 &&
               SHOAL_OP_SESSION_STEP == 6 && SHOAL_OP_SESSION_CLOSE == 7 &&
               SHOAL_OP_SESSION_PUSH == 8,
               "op ids travel on the wire: never renumber");
_Static_assert(SHOAL_OP_FIND_NODE == 16 && SHOAL_OP_FIND_VALUE == 17 &&
               SHOAL_OP_STORE == 18, "op ids travel on the wire: never renumber");
_Static_assert(SHOAL_OP_BACKWARD == 32 && SHOAL_OP_TRAIN_OPEN == 33 &&
               SHOAL_OP_TRAIN_FORWARD == 34 && SHOAL_OP_TRAIN_BACKWARD == 35 &&
               SHOAL_OP_TRAIN_STEP == 36 && SHOAL_OP_TRAIN_PULL == 37 &&
               SHOAL_OP_TRAIN_PUSH == 38 && SHOAL_OP_TRAIN_CLOSE == 39,
               "op ids travel on the wire: never renumber");

/* Flag bits ("fl"). Unknown bits are carried through and ignored. */
#define SHOAL_WIRE_FLAG_REPLY 0x0001u /* this message answers request `id` */
#define SHOAL_WIRE_FLAG_LEAVING 0x0002u /* (replies) the sender is leaving the
                                           swarm: move sessions off it now */
_Static_assert(SHOAL_WIRE_FLAG_REPLY == 1 && SHOAL_WIRE_FLAG_LEAVING == 2,
               "flag bits travel on the wire");

/* A node's state ("state" in INFO replies; the same numbers as the DHT
 * record's state, swarm/record.h). Absent means ONLINE. */
#define SHOAL_WIRE_STATE_JOINING 1u
#define SHOAL_WIRE_STATE_ONLINE 2u
#define SHOAL_WIRE_STATE_OFFLINE 3u /* leaving: takes no new sessions */

/* Which optional fields a header carries (shoal_wire_header.has). */
enum {
    SHOAL_WIRE_HAS_SESSION = 1u << 0,     /* "sid" */
    SHOAL_WIRE_HAS_STEP = 1u << 1,        /* "step" */
    SHOAL_WIRE_HAS_POSITION = 1u << 2,    /* "pos" */
    SHOAL_WIRE_HAS_ERROR = 1u << 3,       /* "err" */
    SHOAL_WIRE_HAS_MESSAGE = 1u << 4,     /* "msg" */
    SHOAL_WIRE_HAS_SPAN = 1u << 5,        /* "span" */
    SHOAL_WIRE_HAS_MAX_LENGTH = 1u << 6,  /* "maxlen" */
    SHOAL_WIRE_HAS_REPLY_CODEC = 1u << 7, /* "rc" */
    SHOAL_WIRE_HAS_MODEL = 1u << 8,       /* "model" */
    SHOAL_WIRE_HAS_MODEL_HASH = 1u << 9,  /* "mhash" */
    SHOAL_WIRE_HAS_WEIGHT_TYPE = 1u << 10,/* "wtype" */
    SHOAL_WIRE_HAS_FREE_TOKENS = 1u << 11,/* "free" */
    SHOAL_WIRE_HAS_SOFTWARE = 1u << 12,   /* "sw" */
    SHOAL_WIRE_HAS_NBLOCKS = 1u << 13,    /* "nblk" */
    SHOAL_WIRE_HAS_DIM = 1u << 14,        /* "dim" */
    SHOAL_WIRE_HAS_CODECS = 1u << 15,     /* "codecs" */
    SHOAL_WIRE_HAS_THROUGHPUT = 1u << 16, /* "tput" */
    SHOAL_WIRE_HAS_TARGET = 1u << 17,     /* "target" */
    SHOAL_WIRE_HAS_ADDR = 1u << 18,       /* "addr" */
    SHOAL_WIRE_HAS_VALUES = 1u << 19,     /* "vals" */
    SHOAL_WIRE_HAS_LORA = 1u << 20,       /* "lora" */
    SHOAL_WIRE_HAS_OPT = 1u << 21,        /* "opt" */
    SHOAL_WIRE_HAS_ADAPTER = 1u << 22,    /* "adapter" */
    SHOAL_WIRE_HAS_STATE = 1u << 23,      /* "state" */
    SHOAL_WIRE_HAS_PUSH_TOKEN = 1u << 24, /* "ptok" */
    SHOAL_WIRE_HAS_ROUTE = 1u << 25,      /* "route" */
    SHOAL_WIRE_HAS_PAD = 1u << 26,        /* "pad" */
    SHOAL_WIRE_HAS__ALL = (1u << 27) - 1
};

/* Limits of the header and its fields. Text sizes include the NUL. */
#define SHOAL_WIRE_HEADER_MAX (64 * 1024) /* bytes of a header frame */
#define SHOAL_WIRE_MAX_TENSORS 4
#define SHOAL_WIRE_MESSAGE_MAX 256
#define SHOAL_WIRE_MODEL_MAX 128
#define SHOAL_WIRE_SOFTWARE_MAX 64
#define SHOAL_WIRE_ADDR_MAX 336           /* == SHOAL_ADDR_MAX (identity.h) */
#define SHOAL_WIRE_HASH_BYTES 32
#define SHOAL_WIRE_MAX_VALUES 32
#define SHOAL_WIRE_VALUE_MAX 4096         /* bytes of one value */
#define SHOAL_WIRE_ADAPTER_MAX 256
#define SHOAL_WIRE_MAX_ROUTE 16           /* hops of a push route */
#define SHOAL_WIRE_PAD_MAX (256 * 1024)   /* bytes of a PING's pad, each way */

/* A byte string inside a frame: after decode it points into the buffer
 * given to shoal_wire_decode() and is valid only while that buffer is. */
typedef struct shoal_wire_bytes {
    const uint8_t *ptr;
    uint32_t len;
} shoal_wire_bytes;

/* One hop of a push route: after a SESSION_STEP (or SESSION_PUSH) that
 * carries a route, the node passes its output as a SESSION_PUSH to
 * route[0] (session session_id, bearing token), with the rest of the route.
 * addr points into the decoded buffer, like values. */
typedef struct shoal_wire_hop {
    shoal_wire_bytes addr;   /* "shoal://..." text, 1..SHOAL_WIRE_ADDR_MAX-1 bytes */
    uint64_t session_id;
    uint64_t token;
} shoal_wire_hop;

typedef struct shoal_wire_header {
    /* Common to every message. */
    uint32_t version;        /* "v": SHOAL_WIRE_VERSION */
    uint16_t op;             /* "op": shoal_op */
    uint16_t flags;          /* "fl": SHOAL_WIRE_FLAG_* */
    uint64_t request_id;     /* "id": chosen by the requester, != 0; echoed */
    uint32_t has;            /* SHOAL_WIRE_HAS_*: which fields below are set */

    /* Sessions. */
    uint64_t session_id;     /* "sid": chosen by the client at SESSION_OPEN */
    uint64_t step_id;        /* "step": the client's step counter */
    uint32_t position;       /* "pos": cache position of the first token */
    uint32_t max_length;     /* "maxlen": tokens the session may reach */
    uint32_t reply_codec;    /* "rc": codec the requester wants back */

    /* ERROR replies. */
    uint32_t error;          /* "err": a shoal_err code */
    char message[SHOAL_WIRE_MESSAGE_MAX];   /* "msg": UTF-8 */

    /* Blocks [span_start, span_end): asked for in requests, served in INFO. */
    uint32_t span_start, span_end;          /* "span": [start, end] */

    /* INFO replies. */
    char model[SHOAL_WIRE_MODEL_MAX];       /* "model": model name, UTF-8 */
    uint8_t model_hash[SHOAL_WIRE_HASH_BYTES]; /* "mhash": model identity */
    uint32_t weight_type;    /* "wtype": shoal_type of the served weights */
    uint64_t free_tokens;    /* "free": KV-cache tokens free now */
    char software[SHOAL_WIRE_SOFTWARE_MAX]; /* "sw": e.g. "shoal 0.1.0" */
    uint32_t nblocks;        /* "nblk": blocks in the whole model */
    uint32_t dim;            /* "dim": hidden size */
    uint32_t codecs;         /* "codecs": bit (1 << c) per codec served */
    double throughput;       /* "tput": tokens/s, finite, >= 0 */

    /* DHT. */
    uint8_t target[32];      /* "target": node id or key looked up/stored */
    char addr[SHOAL_WIRE_ADDR_MAX];         /* "addr": sender's shoal:// address */
    uint32_t nvalues;        /* "vals": contacts or signed records */
    shoal_wire_bytes values[SHOAL_WIRE_MAX_VALUES];

    /* Training sessions (TRAIN_OPEN; "opt" also in TRAIN_STEP). */
    uint32_t lora_rank;      /* "lora": [rank, alpha, targets, seed] */
    double lora_alpha;       /* finite */
    uint32_t lora_targets;   /* bit (1 << p), p in GGUF order q k v o gate up down */
    uint64_t lora_seed;      /* initial A of every pair */
    double opt_lr, opt_beta1, opt_beta2, opt_eps, opt_wd;
                             /* "opt": [lr, beta1, beta2, eps, weight decay],
                                AdamW, each finite and >= 0 */

    /* Adapters: SESSION_OPEN names the one the session applies; an INFO
     * reply lists those the node serves, comma-separated. */
    char adapter[SHOAL_WIRE_ADAPTER_MAX];   /* "adapter": UTF-8 */

    /* Graceful leave and server-to-server forwarding (docs/WIRE.md). */
    uint32_t state;          /* "state": SHOAL_WIRE_STATE_* (INFO replies) */
    uint64_t push_token;     /* "ptok": SESSION_OPEN: the token a push into
                                this session must bear; SESSION_PUSH: it */
    uint32_t nroute;         /* "route": 1..SHOAL_WIRE_MAX_ROUTE hops */
    shoal_wire_hop route[SHOAL_WIRE_MAX_ROUTE];

    /* Link measurement (PING requests). */
    uint32_t pad;            /* "pad": bytes of the request's pad tensor to
                                send back in the reply */

    /* Tensor frames that follow the header, in order ("t"). */
    uint32_t ntensors;
    shoal_codec_desc tensors[SHOAL_WIRE_MAX_TENSORS];
} shoal_wire_header;

/* Limits for shoal_wire_msgpack_check(). */
typedef struct shoal_wire_limits {
    size_t max_bytes;   /* the whole frame */
    uint32_t max_depth; /* nested arrays/maps */
    uint32_t max_elems; /* sum of array items and map keys + values */
    uint32_t max_str;   /* bytes of one str */
    uint32_t max_bin;   /* bytes of one bin or ext payload */
} shoal_wire_limits;

/* The header's limits: 64 KiB, depth 8, 2048 elements, 4 KiB str/bin. */
shoal_wire_limits shoal_wire_limits_default(void);

/* Walk the msgpack bytes buf[0..len) without reading past them and check
 * that they are exactly one object within lim (lim NULL: the defaults).
 * Returns 0 or SHOAL_ERR_FORMAT. Bytes that pass may be given to
 * msgpack-c's unpacker: what it reserves is then bounded by len. */
int shoal_wire_msgpack_check(const uint8_t *buf, size_t len,
                             const shoal_wire_limits *lim);

/* Zero *h and set version, op and request_id. */
void shoal_wire_header_init(shoal_wire_header *h, uint16_t op, uint64_t request_id);

/* Start the reply to req: same op, request, session and step ids (the
 * latter two only if req has them), REPLY flag set. */
void shoal_wire_reply_init(shoal_wire_header *h, const shoal_wire_header *req);

/* Build an ERROR reply to request_id (0 when the request could not be
 * read) with code `error` (a shoal_err, != 0) and message (NULL or text;
 * cut to fit at a UTF-8 boundary, invalid bytes replaced by '?'). */
void shoal_wire_error_init(shoal_wire_header *h, uint64_t request_id,
                           int error, const char *message);

/* Copy text into a header text field (message, model, software, addr:
 * pass the field and its sizeof), cut at a UTF-8 boundary to fit, invalid
 * bytes replaced by '?'. Returns SHOAL_ERR_RANGE if it was cut, else 0. */
int shoal_wire_text_set(char *field, size_t field_size, const char *text);

/* Append a tensor descriptor. SHOAL_ERR_RANGE when 4 are already there,
 * SHOAL_ERR_ARG when d fails shoal_codec_desc_check(). */
int shoal_wire_tensor_add(shoal_wire_header *h, const shoal_codec_desc *d);

/* Encode h into out[0..cap); on success *len is the frame length.
 * SHOAL_ERR_ARG if h breaks the contract above (wrong version, unknown has
 * bits, bad text, missing fields, bad descriptors, ...); SHOAL_ERR_RANGE if
 * cap (or SHOAL_WIRE_HEADER_MAX) is too small. */
int shoal_wire_encode(const shoal_wire_header *h, uint8_t *out, size_t cap,
                      size_t *len);

/* Build and encode an ERROR reply in one call (see shoal_wire_error_init). */
int shoal_wire_encode_error(uint64_t request_id, int error, const char *message,
                            uint8_t *out, size_t cap, size_t *len);

/* Decode a peer's header frame. Returns 0, SHOAL_ERR_FORMAT (malformed,
 * or the contract above broken), SHOAL_ERR_VERSION (another protocol
 * version; h->version holds it) or SHOAL_ERR_UNSUPPORTED (a tensor in an
 * unknown codec). On failure *h is zeroed except h->request_id and
 * h->version when those could be read, so that the caller can address an
 * ERROR reply. h->values point into buf. */
int shoal_wire_decode(shoal_wire_header *h, const uint8_t *buf, size_t len);

/* Check the tensor frames that came with header h: nframes frames (not
 * counting the header) of lengths lens[]. SHOAL_ERR_FORMAT unless nframes
 * == h->ntensors and every length equals its descriptor's nbytes. */
int shoal_wire_frames_check(const shoal_wire_header *h, size_t nframes,
                            const size_t *lens);

/* True when a and b carry the same fields with the same values (values
 * compared by content). */
bool shoal_wire_header_equal(const shoal_wire_header *a, const shoal_wire_header *b);

/* A PING request that sends `send` bytes of pad (a multiple of 4, at most
 * SHOAL_WIRE_PAD_MAX; 0: none) and asks for `back` of them back (a
 * multiple of 4, at most send): *h is initialized, "pad" set (when back >
 * 0) and the pad's descriptor added. The requester then sends `send` bytes
 * (any content; zeros) as the tensor frame. SHOAL_ERR_ARG for other
 * sizes. */
int shoal_wire_ping_init(shoal_wire_header *h, uint64_t request_id, uint32_t send,
                         uint32_t back);

/* The reply to a decoded PING request req: shoal_wire_reply_init, and when
 * req asks for pad bytes back, the descriptor of req->pad bytes. The
 * answering node sends the first r->tensors[0].nbytes bytes of req's own
 * pad frame as the reply's tensor frame (decoding req checked that they
 * are there). r and req are distinct. SHOAL_ERR_ARG when req is not a
 * PING request. */
int shoal_wire_ping_reply(shoal_wire_header *r, const shoal_wire_header *req);

/* "ping", "info", ... for a known op; NULL otherwise. */
const char *shoal_wire_op_name(int op);

#endif
