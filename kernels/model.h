/*
 * The Llama-family transformer as a pass over a range of blocks:
 *
 *   tokens -> embed -> blocks[b0:b1) -> head -> logits
 *
 * Each piece is callable alone, so a node that serves blocks 10..20 opens a
 * model with only that span (its tensors are the only pages it touches), and
 * a client opens one with only the embedding and the head.
 *
 * Objects:
 *   shoal_model  weights of one span (pointers into the GGUF mapping, plus
 *                small f32 copies of norm weights); immutable once open.
 *   shoal_kv     the KV cache of one sequence for one model span.
 *   shoal_fwd    scratch buffers and a thread pool for forward passes with
 *                batches of up to max_batch tokens; all allocation happens
 *                in shoal_fwd_new, none per token.
 *
 * Determinism: a token's hidden state, logits and KV entries are bit-identical
 * whether it is computed alone or in a batch, and whatever the thread count
 * (see kernels/matmul.h for the canonical reduction orders; every other op
 * works per token in a fixed order).
 *
 * THREAD SAFETY: a model may be shared by any number of threads; a shoal_kv
 * and a shoal_fwd belong to one thread at a time.
 */
#ifndef SHOAL_KERNELS_MODEL_H
#define SHOAL_KERNELS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/gguf.h"
#include "kernels/matmul.h"

typedef struct shoal_hparams {
    int n_vocab;
    int dim;          /* embedding length */
    int ffn;          /* feed-forward length */
    int n_layer;      /* blocks in the whole model */
    int n_head;
    int n_head_kv;
    int head_dim;     /* dim / n_head */
    int rope_dim;     /* rotated dimensions per head (<= head_dim) */
    int ctx_train;    /* context length the file declares */
    float rms_eps;
    float rope_theta;
    float rope_freq_scale; /* 1 / linear scaling factor */
} shoal_hparams;

/* Reads and checks the hyper-parameters of a Llama-family GGUF. */
int shoal_hparams_read(const shoal_gguf *g, shoal_hparams *hp, char *err, size_t errlen);

enum {
    SHOAL_PART_EMBED = 1u << 0, /* token_embd */
    SHOAL_PART_HEAD = 1u << 1,  /* output_norm + output */
};

typedef struct shoal_model shoal_model;

/* The seven projections of a block, in GGUF order. */
typedef enum shoal_proj {
    SHOAL_PROJ_Q = 0,    /* attn_q      (H*hd, dim) */
    SHOAL_PROJ_K = 1,    /* attn_k      (Hkv*hd, dim) */
    SHOAL_PROJ_V = 2,    /* attn_v      (Hkv*hd, dim) */
    SHOAL_PROJ_O = 3,    /* attn_output (dim, H*hd) */
    SHOAL_PROJ_GATE = 4, /* ffn_gate    (ffn, dim) */
    SHOAL_PROJ_UP = 5,   /* ffn_up      (ffn, dim) */
    SHOAL_PROJ_DOWN = 6, /* ffn_down    (dim, ffn) */
    SHOAL_PROJ__COUNT = 7
} shoal_proj;

/* One block's frozen weights (views into the mapping; norms as f32). */
typedef struct shoal_block_w {
    const float *attn_norm;            /* (dim) */
    const float *ffn_norm;             /* (dim) */
    shoal_mat w[SHOAL_PROJ__COUNT];    /* indexed by shoal_proj */
} shoal_block_w;

/* The head and the embedding (views; out_norm as f32). A part that was not
 * opened has data == NULL. */
typedef struct shoal_head_w {
    const float *out_norm;  /* (dim) */
    shoal_mat out;          /* (n_vocab, dim) */
    shoal_mat embd;         /* (n_vocab, dim) */
} shoal_head_w;

/* Opens blocks [block_begin, block_end) (may be empty) and the given parts.
 * g must outlive the model. */
int shoal_model_open(const shoal_gguf *g, int block_begin, int block_end, unsigned parts,
                     shoal_model **out, char *err, size_t errlen);
void shoal_model_destroy(shoal_model **m);

const shoal_hparams *shoal_model_hparams(const shoal_model *m);
int shoal_model_block_begin(const shoal_model *m);
int shoal_model_block_end(const shoal_model *m);
/* The type of most weight bytes in the span (e.g. for display). */
int shoal_model_weight_type(const shoal_model *m);
/* Block `layer` (absolute index in the span), or NULL outside it. */
const shoal_block_w *shoal_model_block(const shoal_model *m, int layer);
/* The head and embedding views (parts not opened have NULL data). */
const shoal_head_w *shoal_model_head(const shoal_model *m);

/* x (n, dim) <- embedding rows of tokens (opened with SHOAL_PART_EMBED,
 * else SHOAL_ERR_ARG); SHOAL_ERR_RANGE for a bad id. Thread-safe. */
int shoal_model_embed(const shoal_model *m, const int32_t *tokens, int n, float *x);

/* Bytes of weights one token's pass reads (span blocks, plus head if open). */
uint64_t shoal_model_weight_bytes(const shoal_model *m);

/* Progress of long work: done of total units (here bytes). Kernels never
 * print; the caller draws (swarm/progress.h's shoal_progress_cb fits). */
typedef void (*shoal_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* Loads the model: brings every page of the weights a pass reads (the
 * span's blocks, and the head if opened: shoal_model_weight_bytes) into
 * memory, so that the first pass does not wait for the disk. The
 * embedding is left alone (a pass reads only its tokens' rows). Calls
 * progress (may be NULL) on the caller's thread after every 16 MiB. */
void shoal_model_prefault(const shoal_model *m, shoal_progress_fn progress, void *ctx);

typedef struct shoal_kv shoal_kv;

/* A cache for `capacity` positions of the model's span. */
shoal_kv *shoal_kv_new(const shoal_model *m, int capacity);
void shoal_kv_destroy(shoal_kv **kv);
int shoal_kv_len(const shoal_kv *kv);
int shoal_kv_capacity(const shoal_kv *kv);
/* Forgets positions >= n (n <= len). */
void shoal_kv_truncate(shoal_kv *kv, int n);
size_t shoal_kv_bytes_per_token(const shoal_model *m);
/* Layer l of the span, position p: pointers to K and V rows (n_head_kv*head_dim). */
const float *shoal_kv_k(const shoal_kv *kv, int l, int p);
const float *shoal_kv_v(const shoal_kv *kv, int l, int p);

typedef struct shoal_fwd shoal_fwd;

/* Scratch for batches of up to max_batch tokens at positions < max_ctx,
 * with n_threads compute threads (the caller's thread is one of them). */
shoal_fwd *shoal_fwd_new(const shoal_model *m, int max_batch, int max_ctx, int n_threads);
void shoal_fwd_destroy(shoal_fwd **f);
int shoal_fwd_max_batch(const shoal_fwd *f);

/* x (n, dim) <- embedding rows of tokens. SHOAL_ERR_RANGE for a bad id. */
int shoal_fwd_embed(shoal_fwd *f, const int32_t *tokens, int n, float *x);

/* Runs the span's blocks over n tokens at positions pos..pos+n-1, in place on
 * x (n, dim), writing their K/V into kv (which then holds pos+n positions;
 * pos must be <= shoal_kv_len(kv), later entries are replaced). */
int shoal_fwd_blocks(shoal_fwd *f, shoal_kv *kv, int pos, int n, float *x);

/* logits (n, n_vocab) <- head(x (n, dim)). */
int shoal_fwd_head(shoal_fwd *f, const float *x, int n, float *logits);

/* A LoRA pair applied at inference to one projection W (out, in) of a block:
 * y = W x + scale * B (A x), computed per token in a fixed order (so batch
 * and single-token results stay identical). Plain views: the adapter's
 * storage lives in lora/, which kernels/ does not know. */
typedef struct shoal_fwd_lora {
    int rank;          /* 0: no pair on this projection */
    float scale;       /* alpha / rank */
    const float *a;    /* (rank, in) */
    const float *b;    /* (out, rank) */
} shoal_fwd_lora;

/* Applies LoRA pairs in the following shoal_fwd_blocks calls:
 * lora[(l - b0) * 7 + p] is the pair of block l in [b0, b1) on projection p
 * in GGUF order (q, k, v, o, gate, up, down: kernels/backward.h's
 * shoal_proj). [b0, b1) must contain the model's span. The array and the
 * tensors it points to must stay valid and unchanged until the next call;
 * NULL clears (then b0, b1 are ignored). SHOAL_ERR_ARG for a bad range or
 * rank, SHOAL_ERR_NOMEM. */
int shoal_fwd_set_lora(shoal_fwd *f, const shoal_fwd_lora *lora, int b0, int b1);

#endif
