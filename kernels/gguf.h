/*
 * GGUF reader and writer (v3; v2 read too). The reader mmaps the file and
 * parses only the header: metadata and tensor infos. Tensor data is never
 * read by opening: pages of a tensor are touched only when its data pointer
 * is used, so a node serving blocks 10..20 of a model reads no other block.
 *
 * Every count, length and offset in the header is checked against the bytes
 * that remain and against fixed caps before anything is allocated; a
 * malformed file gives SHOAL_ERR_FORMAT (or _UNSUPPORTED for a valid file of
 * an unsupported version or tensor type) with a one-line message in err.
 *
 * Ownership: shoal_gguf_open returns an object the caller frees with
 * shoal_gguf_close. Strings and pointers returned by getters point into the
 * object (or the mapping) and live until it is closed.
 *
 * THREAD SAFETY: an open object is immutable; any thread may call getters.
 */
#ifndef SHOAL_KERNELS_GGUF_H
#define SHOAL_KERNELS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHOAL_GGUF_MAX_DIMS 4

typedef enum shoal_gguf_vtype {
    SHOAL_GGUF_U8 = 0, SHOAL_GGUF_I8 = 1, SHOAL_GGUF_U16 = 2, SHOAL_GGUF_I16 = 3,
    SHOAL_GGUF_U32 = 4, SHOAL_GGUF_I32 = 5, SHOAL_GGUF_F32 = 6, SHOAL_GGUF_BOOL = 7,
    SHOAL_GGUF_STRING = 8, SHOAL_GGUF_ARRAY = 9, SHOAL_GGUF_U64 = 10,
    SHOAL_GGUF_I64 = 11, SHOAL_GGUF_F64 = 12,
} shoal_gguf_vtype;

typedef struct shoal_gguf shoal_gguf;

typedef struct shoal_gguf_str {
    const char *s;  /* NUL-terminated copy */
    uint64_t len;   /* bytes, without the NUL */
} shoal_gguf_str;

typedef struct shoal_gguf_tensor {
    const char *name;
    int type;                          /* shoal_type; always a supported one */
    int n_dims;
    int64_t ne[SHOAL_GGUF_MAX_DIMS];   /* ne[0] is the row length; unused dims are 1 */
    uint64_t offset;                   /* from the start of the data section */
    uint64_t size;                     /* bytes */
} shoal_gguf_tensor;

/* Opens and validates `path`. On failure returns an error code, *out is
 * NULL and err holds one line (no trailing newline). */
int shoal_gguf_open(const char *path, shoal_gguf **out, char *err, size_t errlen);
void shoal_gguf_close(shoal_gguf **g);

uint32_t shoal_gguf_version(const shoal_gguf *g);
uint64_t shoal_gguf_alignment(const shoal_gguf *g);

/* Metadata. Index lookups return -1 when the key is absent. */
int64_t shoal_gguf_n_kv(const shoal_gguf *g);
int64_t shoal_gguf_find_key(const shoal_gguf *g, const char *key);
const char *shoal_gguf_key(const shoal_gguf *g, int64_t i);
int shoal_gguf_kv_type(const shoal_gguf *g, int64_t i);         /* shoal_gguf_vtype */
int shoal_gguf_arr_type(const shoal_gguf *g, int64_t i);        /* element type of an array */
uint64_t shoal_gguf_arr_len(const shoal_gguf *g, int64_t i);
/* Raw little-endian elements of a numeric array (NULL for strings/arrays). */
const void *shoal_gguf_arr_data(const shoal_gguf *g, int64_t i);
/* Element j of an array of strings (NULL if out of range or not strings). */
const shoal_gguf_str *shoal_gguf_arr_str(const shoal_gguf *g, int64_t i, uint64_t j);
const shoal_gguf_str *shoal_gguf_get_str_at(const shoal_gguf *g, int64_t i);

/* Typed getters by key. Integers of any integer type convert when the value
 * fits; floats accept f32 or f64. Return 0 on success, SHOAL_ERR_NOTFOUND
 * when absent, SHOAL_ERR_FORMAT when of another type or out of range. */
int shoal_gguf_get_u32(const shoal_gguf *g, const char *key, uint32_t *v);
int shoal_gguf_get_u64(const shoal_gguf *g, const char *key, uint64_t *v);
int shoal_gguf_get_f32(const shoal_gguf *g, const char *key, float *v);
int shoal_gguf_get_bool(const shoal_gguf *g, const char *key, bool *v);
int shoal_gguf_get_str(const shoal_gguf *g, const char *key, const char **v);

/* Tensors. */
int64_t shoal_gguf_n_tensors(const shoal_gguf *g);
int64_t shoal_gguf_find_tensor(const shoal_gguf *g, const char *name);
const shoal_gguf_tensor *shoal_gguf_tensor_at(const shoal_gguf *g, int64_t i);
/* Pointer to tensor i's bytes in the mapping (checked at open to lie
 * within the file, aligned as the file's alignment says). */
const void *shoal_gguf_tensor_data(const shoal_gguf *g, int64_t i);

/* Bytes of the file before the data section (header, metadata, infos). */
uint64_t shoal_gguf_data_offset(const shoal_gguf *g);

/* Like shoal_gguf_open, over `size` bytes at `data` that the caller keeps
 * valid (and unchanged) until the object is closed; nothing is copied but
 * metadata. `name` (may be NULL) prefixes error messages. */
int shoal_gguf_open_memory(const void *data, size_t size, const char *name,
                           shoal_gguf **out, char *err, size_t errlen);

/* Size of the mapped file (or memory) in bytes. */
uint64_t shoal_gguf_file_size(const shoal_gguf *g);

/* Signed and floating-point getters by key, same rules as above. */
int shoal_gguf_get_i64(const shoal_gguf *g, const char *key, int64_t *v);
int shoal_gguf_get_f64(const shoal_gguf *g, const char *key, double *v);
/* Scalar value of key i: integers and bools as int64 (u64 above INT64_MAX
 * gives SHOAL_ERR_RANGE), floats as double. SHOAL_ERR_FORMAT for other types. */
int shoal_gguf_get_i64_at(const shoal_gguf *g, int64_t i, int64_t *v);
int shoal_gguf_get_f64_at(const shoal_gguf *g, int64_t i, double *v);

/* The name ggml gives a tensor type id ("q2_K", "iq4_xs", ...), supported
 * or not; NULL when the id is unknown to ggml as well. */
const char *shoal_gguf_ggml_type_name(int type);

/*
 * Writer: collects metadata and tensors in memory order and writes a GGUF v3
 * file. Tensor data is copied at add time (the caller may free its buffer).
 */
typedef struct shoal_gguf_writer shoal_gguf_writer;

shoal_gguf_writer *shoal_gguf_writer_new(void);
void shoal_gguf_writer_destroy(shoal_gguf_writer **w);
int shoal_gguf_writer_set_u32(shoal_gguf_writer *w, const char *key, uint32_t v);
int shoal_gguf_writer_set_i32(shoal_gguf_writer *w, const char *key, int32_t v);
int shoal_gguf_writer_set_u64(shoal_gguf_writer *w, const char *key, uint64_t v);
int shoal_gguf_writer_set_f32(shoal_gguf_writer *w, const char *key, float v);
int shoal_gguf_writer_set_bool(shoal_gguf_writer *w, const char *key, bool v);
int shoal_gguf_writer_set_str(shoal_gguf_writer *w, const char *key, const char *v);
/* Numeric array of `n` elements of vtype (data copied). */
int shoal_gguf_writer_set_arr(shoal_gguf_writer *w, const char *key, int vtype,
                              const void *data, uint64_t n);
int shoal_gguf_writer_set_arr_str(shoal_gguf_writer *w, const char *key,
                                  const char *const *strs, uint64_t n);
/* ne[0] is the row length; data holds shoal_type_row_bytes(type, ne0)*rows bytes. */
int shoal_gguf_writer_add_tensor(shoal_gguf_writer *w, const char *name, int type,
                                 int n_dims, const int64_t *ne, const void *data);
/* Writes atomically (temporary file, then rename). Every tensor must have
 * its data (added with shoal_gguf_writer_add_tensor). */
int shoal_gguf_writer_write(shoal_gguf_writer *w, const char *path, char *err, size_t errlen);

/* Any scalar of vtype (not STRING or ARRAY): `v` points to its value in
 * host representation (uint8_t, int16_t, ..., bool for BOOL, double for F64). */
int shoal_gguf_writer_set_scalar(shoal_gguf_writer *w, const char *key, int vtype,
                                 const void *v);
/* Alignment of tensor data: a power of two in 1..65536 (default 32). A value
 * other than 32 is recorded as general.alignment. */
int shoal_gguf_writer_set_alignment(shoal_gguf_writer *w, uint32_t alignment);

/*
 * Streaming, so that a model larger than memory can be written with about
 * one tensor in memory at a time:
 *   shoal_gguf_writer_declare_tensor() for every tensor (no data), then
 *   shoal_gguf_writer_begin() writes the header to a temporary file,
 *   shoal_gguf_writer_put_tensor() once per declared tensor, in declaration
 *   order, with its bytes (tensors added with data are written in their turn
 *   without a call), then shoal_gguf_writer_finish() syncs and renames.
 * Destroying a writer between begin and finish removes the temporary file.
 * No metadata or tensors can be added after begin.
 */
int shoal_gguf_writer_declare_tensor(shoal_gguf_writer *w, const char *name, int type,
                                     int n_dims, const int64_t *ne);
int shoal_gguf_writer_begin(shoal_gguf_writer *w, const char *path, char *err, size_t errlen);
/* Index of the tensor the next put_tensor writes, or -1 when none is left. */
int64_t shoal_gguf_writer_next_tensor(const shoal_gguf_writer *w);
/* Bytes of declared tensor i (0 if out of range). */
uint64_t shoal_gguf_writer_tensor_bytes(const shoal_gguf_writer *w, int64_t i);
int shoal_gguf_writer_put_tensor(shoal_gguf_writer *w, const void *data, char *err, size_t errlen);
/* The next n bytes of the current streamed tensor (a tensor may be given
 * in any number of pieces; n must not pass the end of the tensor). */
int shoal_gguf_writer_put_bytes(shoal_gguf_writer *w, const void *data, size_t n, char *err,
                                size_t errlen);
int shoal_gguf_writer_finish(shoal_gguf_writer *w, char *err, size_t errlen);

#endif
