/*
 * A model's identity on the wire: its name and a hash that every node and
 * client computes the same way from the same GGUF file, whatever span it
 * serves, so a client can check that the peers of a chain serve the model
 * it holds (and that its own copy of the embedding and head matches).
 *
 * hash = BLAKE2b-256 over, in file order, every metadata key with its type
 * and value (arrays element by element) and the whole tensor layout (name,
 * type, dims), each item length-prefixed in little-endian u64s, after the
 * domain tag "shoal-model-id 1". Tensor data is not hashed (a node never
 * reads the blocks it does not serve); offsets are not hashed (the same
 * model rewritten with another alignment is the same model).
 *
 * name = general.name, or "" when the file has none.
 *
 * THREAD SAFETY: pure; any thread, on an open (immutable) GGUF.
 */
#ifndef SHOAL_SWARM_MODEL_ID_H
#define SHOAL_SWARM_MODEL_ID_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/gguf.h"
#include "proto/wire.h"

typedef struct shoal_model_id {
    char name[SHOAL_WIRE_MODEL_MAX];     /* UTF-8, cut to fit */
    uint8_t hash[SHOAL_WIRE_HASH_BYTES];
} shoal_model_id;

/* Compute g's identity. SHOAL_ERR_INTERNAL if libsodium cannot start. */
int shoal_model_id_compute(const shoal_gguf *g, shoal_model_id *out);

/* Same name and hash. */
bool shoal_model_id_equal(const shoal_model_id *a, const shoal_model_id *b);

/* The first 8 bytes of the hash as 16 hex digits + NUL, for messages. */
void shoal_model_id_short(const shoal_model_id *id, char out[17]);

#endif
