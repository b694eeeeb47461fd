/*
 * Tensor element types and their block layouts. Type ids and block layouts
 * are ggml's, byte for byte, so GGUF files from the llama.cpp ecosystem load
 * as they are. A quantized type stores a row as whole blocks; a row's length
 * must be a multiple of the type's block size.
 *
 * THREAD SAFETY: all functions are pure and thread-safe.
 */
#ifndef SHOAL_KERNELS_TYPES_H
#define SHOAL_KERNELS_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum shoal_type {
    SHOAL_TYPE_F32 = 0,
    SHOAL_TYPE_F16 = 1,
    SHOAL_TYPE_Q4_0 = 2,
    SHOAL_TYPE_Q8_0 = 8,
    SHOAL_TYPE_Q4_K = 12,
    SHOAL_TYPE_Q6_K = 14,
    SHOAL_TYPE_BF16 = 30,
} shoal_type;

#define SHOAL_QK4_0 32
#define SHOAL_QK8_0 32
#define SHOAL_QK_K 256
#define SHOAL_K_SCALE_SIZE 12

typedef struct {
    uint16_t d;                 /* fp16 scale */
    uint8_t qs[SHOAL_QK4_0 / 2];/* byte j: element j (low nibble), j+16 (high) */
} shoal_block_q4_0;

typedef struct {
    uint16_t d;                 /* fp16 scale */
    int8_t qs[SHOAL_QK8_0];
} shoal_block_q8_0;

typedef struct {
    uint16_t d;                 /* fp16 super-block scale for scales */
    uint16_t dmin;              /* fp16 super-block scale for mins */
    uint8_t scales[SHOAL_K_SCALE_SIZE]; /* 8 scales and 8 mins, 6 bits each */
    uint8_t qs[SHOAL_QK_K / 2];
} shoal_block_q4_K;

typedef struct {
    uint8_t ql[SHOAL_QK_K / 2]; /* low 4 bits */
    uint8_t qh[SHOAL_QK_K / 4]; /* high 2 bits */
    int8_t scales[SHOAL_QK_K / 16];
    uint16_t d;                 /* fp16 super-block scale */
} shoal_block_q6_K;

_Static_assert(sizeof(shoal_block_q4_0) == 18, "ggml layout");
_Static_assert(sizeof(shoal_block_q8_0) == 34, "ggml layout");
_Static_assert(sizeof(shoal_block_q4_K) == 144, "ggml layout");
_Static_assert(sizeof(shoal_block_q6_K) == 210, "ggml layout");

typedef struct shoal_type_traits {
    const char *name;     /* "f32", "f16", "q4_0", "q8_0", "q4_K", "q6_K", "bf16" */
    int64_t block_elems;  /* elements per block (1 for plain types) */
    size_t block_bytes;   /* bytes per block */
} shoal_type_traits;

/* Traits of a supported type; NULL for any other id (never trust an id from a file). */
const shoal_type_traits *shoal_type_info(int type);

/* The type named `name` (case-insensitive: "f16", "Q8_0", ...), or -1. */
int shoal_type_from_name(const char *name);

/* Bytes of n elements of `type`; 0 if the type is unsupported or n is not a
 * whole number of blocks or the size would overflow. */
size_t shoal_type_row_bytes(int type, int64_t n);

/* IEEE half and bfloat16 conversions; round to nearest even, NaN kept NaN. */
float shoal_fp16_to_fp32(uint16_t h);
uint16_t shoal_fp32_to_fp16(float f);
float shoal_bf16_to_fp32(uint16_t h);
uint16_t shoal_fp32_to_bf16(float f);

/* Reference (plain C) conversion of n elements between f32 and `type`.
 * n must be a multiple of the block size. Quantizers follow ggml's
 * reference quantizers (quantize_row_*_ref), so results match llama.cpp. */
void shoal_quantize_row(int type, const float *x, void *y, int64_t n);
void shoal_dequantize_row(int type, const void *x, float *y, int64_t n);

#endif
