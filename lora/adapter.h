/*
 * A LoRA adapter over a span of blocks [b0, b1): per block, a LoRA pair
 * (lora/lora.h) on each targeted projection, and the files that hold them.
 *
 * Files use llama.cpp's GGUF LoRA layout, so llama.cpp and Shoal load the
 * same file:
 *   general.architecture = "llama", general.type = "adapter",
 *   adapter.type = "lora", adapter.lora.alpha (f32),
 *   tensors blk.N.<proj>.weight.lora_a  ne = {in, rank}   (A, rank rows of in)
 *           blk.N.<proj>.weight.lora_b  ne = {rank, out}  (B, out rows of rank)
 * with <proj> one of attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up,
 * ffn_down (llama.cpp's llama-adapter.cpp checks exactly these shapes).
 * Shoal writes f32 tensors and reads f32, f16, bf16 and the quantized
 * types. Per-tensor ranks are allowed (scale = alpha / rank of each pair).
 *
 * A pair's initial A is drawn from a seed mixed with its (layer, proj), so
 * a span of an adapter initialised with seed S equals the same span of a
 * whole-model adapter initialised with S: servers and a local run start
 * from identical parameters.
 *
 * Ownership: the adapter owns its pairs. THREAD SAFETY: one thread at a time.
 */
#ifndef SHOAL_LORA_ADAPTER_H
#define SHOAL_LORA_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backward.h"
#include "kernels/gguf.h"
#include "kernels/model.h"
#include "lora/adamw.h"
#include "lora/lora.h"

typedef struct shoal_adapter shoal_adapter;

/* A pair of `rank` on every projection in `targets` (bit 1 << shoal_proj)
 * of blocks [b0, b1) of a model with hyper-parameters hp; A and B start
 * at zero (call shoal_adapter_init). */
int shoal_adapter_new(const shoal_hparams *hp, int b0, int b1, unsigned targets, int rank,
                      float alpha, shoal_adapter **out);
void shoal_adapter_destroy(shoal_adapter **a);

/* B = 0, A of (layer, proj) ~ N(0, 1/in) from shoal_lora_seed_mix(seed, layer, proj). */
void shoal_adapter_init(shoal_adapter *a, uint64_t seed);

int shoal_adapter_block_begin(const shoal_adapter *a);
int shoal_adapter_block_end(const shoal_adapter *a);
float shoal_adapter_alpha(const shoal_adapter *a);
/* Projections that have a pair in at least one block. */
unsigned shoal_adapter_targets(const shoal_adapter *a);
/* Largest rank of any pair (0 when there is none). */
int shoal_adapter_max_rank(const shoal_adapter *a);
/* Parameters (elements of every A and B). */
size_t shoal_adapter_n_params(const shoal_adapter *a);
/* Number of pairs. */
int shoal_adapter_n_pairs(const shoal_adapter *a);

/* The pair on (layer, proj), NULL when none or outside the span. */
shoal_lora *shoal_adapter_lora(const shoal_adapter *a, int layer, int proj);

/* Fills views[SHOAL_PROJ__COUNT] for block `layer` (rank 0 where no pair),
 * with gradient pointers, for shoal_train_block_*. */
void shoal_adapter_views(const shoal_adapter *a, int layer, shoal_lora_view *views);

void shoal_adapter_zero_grad(shoal_adapter *a);

/* Registers every pair's A then B with the optimizer, in (layer, proj)
 * order, so optimizer tensor 2i is pair i's A and 2i+1 its B. */
int shoal_adapter_add_to_optimizer(shoal_adapter *a, shoal_adamw *opt);

/* Copies A and B of every (layer, proj) that both hold with equal shapes;
 * SHOAL_ERR_ARG if some common pair differs in shape. */
int shoal_adapter_copy(shoal_adapter *dst, const shoal_adapter *src);

/* Writes the adapter as a GGUF LoRA file (atomically). */
int shoal_adapter_save(const shoal_adapter *a, const char *path, char *err, size_t errlen);

/* Reads the pairs of blocks [b0, b1) from a GGUF LoRA file for a model with
 * hyper-parameters hp. Pairs of other blocks are ignored (a server loads
 * only its span); norm vectors are ignored as llama.cpp does; any other
 * tensor, a bad shape, a missing half of a pair or a non-finite value is
 * an error (SHOAL_ERR_FORMAT / _UNSUPPORTED, one line in err). */
int shoal_adapter_load(const char *path, const shoal_hparams *hp, int b0, int b1,
                       shoal_adapter **out, char *err, size_t errlen);
/* The same from an open GGUF (a file or bytes from shoal_gguf_open_memory). */
int shoal_adapter_load_gguf(const shoal_gguf *g, const shoal_hparams *hp, int b0, int b1,
                            shoal_adapter **out, char *err, size_t errlen);

#endif
