/*
 * GGUF reader and writer: writer -> reader round trips of every value type
 * and every tensor type (buffered and streamed), the real stories260K model,
 * that opening touches no tensor pages (mincore), every prefix of a valid
 * file failing cleanly, and the malformed-file corpus of fuzz_gguf.
 */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/err.h"
#include "kernels/gguf.h"
#include "kernels/types.h"
#include "tests/check.h"

static char tmpdir[256];

static void path_in_tmp(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static bool one_line(const char *s)
{
    return s[0] != '\0' && strchr(s, '\n') == NULL && strchr(s, '\r') == NULL;
}

static uint64_t rng_state = 0x1234567;

static uint8_t rnd8(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint8_t)(rng_state >> 56);
}

static const int all_types[] = {SHOAL_TYPE_F32, SHOAL_TYPE_F16, SHOAL_TYPE_Q4_0, SHOAL_TYPE_Q8_0,
                                SHOAL_TYPE_Q4_K, SHOAL_TYPE_Q6_K, SHOAL_TYPE_BF16};
#define N_TYPES ((int)(sizeof all_types / sizeof all_types[0]))

/* Writes a file with every value type and a tensor of every type; streamed
 * writes half of the tensors through begin/put/finish. Checks it back. */
static void test_round_trip(uint32_t alignment, bool streamed)
{
    char path[512];
    path_in_tmp(path, sizeof path, "rt.gguf");
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    CHECK(w != NULL);
    if (alignment != 32)
        CHECK(shoal_gguf_writer_set_alignment(w, alignment) == 0);

    uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000;
    uint64_t u64 = 0xfedcba9876543210ull; int64_t i64 = -((int64_t)1 << 60); double f64 = -1.0 / 3.0;
    CHECK(shoal_gguf_writer_set_scalar(w, "t.u8", SHOAL_GGUF_U8, &u8) == 0);
    CHECK(shoal_gguf_writer_set_scalar(w, "t.i8", SHOAL_GGUF_I8, &i8) == 0);
    CHECK(shoal_gguf_writer_set_scalar(w, "t.u16", SHOAL_GGUF_U16, &u16) == 0);
    CHECK(shoal_gguf_writer_set_scalar(w, "t.i16", SHOAL_GGUF_I16, &i16) == 0);
    CHECK(shoal_gguf_writer_set_u32(w, "t.u32", 4000000000u) == 0);
    CHECK(shoal_gguf_writer_set_i32(w, "t.i32", -2000000000) == 0);
    CHECK(shoal_gguf_writer_set_f32(w, "t.f32", 1.5e-5f) == 0);
    CHECK(shoal_gguf_writer_set_bool(w, "t.bool", true) == 0);
    CHECK(shoal_gguf_writer_set_str(w, "t.str", "héllo ▁world") == 0);
    CHECK(shoal_gguf_writer_set_u64(w, "t.u64", u64) == 0);
    CHECK(shoal_gguf_writer_set_scalar(w, "t.i64", SHOAL_GGUF_I64, &i64) == 0);
    CHECK(shoal_gguf_writer_set_scalar(w, "t.f64", SHOAL_GGUF_F64, &f64) == 0);
    CHECK(shoal_gguf_writer_set_str(w, "t.empty", "") == 0);
    /* replacing a key keeps one entry with the new value */
    CHECK(shoal_gguf_writer_set_u32(w, "t.replaced", 1) == 0);
    CHECK(shoal_gguf_writer_set_str(w, "t.replaced", "second") == 0);

    uint8_t a_u8[3] = {1, 2, 255}; int8_t a_i8[3] = {-1, 0, 127};
    uint16_t a_u16[2] = {1, 65535}; int16_t a_i16[2] = {-32768, 5};
    uint32_t a_u32[4] = {0, 1, 2, 0xffffffffu}; int32_t a_i32[2] = {-7, 7};
    float a_f32[3] = {0.5f, -2.25f, 1e30f}; bool a_bool[4] = {true, false, false, true};
    uint64_t a_u64[2] = {1, UINT64_MAX}; int64_t a_i64[2] = {INT64_MIN, 3};
    double a_f64[2] = {3.141592653589793, -0.0};
    const char *a_str[4] = {"<unk>", "", "▁the", "<0x0A>"};
    CHECK(shoal_gguf_writer_set_arr(w, "a.u8", SHOAL_GGUF_U8, a_u8, 3) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.i8", SHOAL_GGUF_I8, a_i8, 3) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.u16", SHOAL_GGUF_U16, a_u16, 2) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.i16", SHOAL_GGUF_I16, a_i16, 2) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.u32", SHOAL_GGUF_U32, a_u32, 4) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.i32", SHOAL_GGUF_I32, a_i32, 2) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.f32", SHOAL_GGUF_F32, a_f32, 3) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.bool", SHOAL_GGUF_BOOL, a_bool, 4) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.u64", SHOAL_GGUF_U64, a_u64, 2) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.i64", SHOAL_GGUF_I64, a_i64, 2) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.f64", SHOAL_GGUF_F64, a_f64, 2) == 0);
    CHECK(shoal_gguf_writer_set_arr_str(w, "a.str", a_str, 4) == 0);
    CHECK(shoal_gguf_writer_set_arr(w, "a.empty", SHOAL_GGUF_U32, NULL, 0) == 0);

    /* bad writer input is refused */
    CHECK(shoal_gguf_writer_set_u32(w, "", 1) == SHOAL_ERR_ARG);
    CHECK(shoal_gguf_writer_set_u32(w, "bad\nkey", 1) == SHOAL_ERR_ARG);
    CHECK(shoal_gguf_writer_set_arr(w, "a.bad", SHOAL_GGUF_STRING, a_u8, 1) == SHOAL_ERR_ARG);
    CHECK(shoal_gguf_writer_set_alignment(w, 48) == SHOAL_ERR_ARG);

    /* a tensor of every type; rows of 256 elements suit every block size */
    void *data[N_TYPES];
    size_t sizes[N_TYPES];
    char names[N_TYPES][32];
    for (int k = 0; k < N_TYPES; k++) {
        int64_t ne[3] = {256, 3, k + 1};
        sizes[k] = shoal_type_row_bytes(all_types[k], 256) * 3 * (size_t)(k + 1);
        CHECK(sizes[k] > 0);
        data[k] = malloc(sizes[k]);
        for (size_t j = 0; j < sizes[k]; j++)
            ((uint8_t *)data[k])[j] = rnd8();
        snprintf(names[k], sizeof names[k], "blk.%d.%s.weight", k,
                 shoal_type_info(all_types[k])->name);
        int n_dims = 1 + k % 3;
        sizes[k] = shoal_type_row_bytes(all_types[k], 256) * (n_dims > 1 ? 3 : 1) *
                   (size_t)(n_dims > 2 ? k + 1 : 1);
        if (streamed && k % 2 == 1)
            CHECK(shoal_gguf_writer_declare_tensor(w, names[k], all_types[k], n_dims, ne) == 0);
        else
            CHECK(shoal_gguf_writer_add_tensor(w, names[k], all_types[k], n_dims, ne, data[k]) == 0);
    }
    int64_t bad_ne[2] = {100, 2};
    CHECK(shoal_gguf_writer_add_tensor(w, "x", SHOAL_TYPE_Q8_0, 2, bad_ne, data[0]) == SHOAL_ERR_ARG);
    CHECK(shoal_gguf_writer_add_tensor(w, "x", 10, 2, bad_ne, data[0]) == SHOAL_ERR_UNSUPPORTED);
    int64_t ok_ne[1] = {4};
    CHECK(shoal_gguf_writer_add_tensor(w, names[0], SHOAL_TYPE_F32, 1, ok_ne, data[0]) == SHOAL_ERR_ARG);
    int64_t zero_ne[2] = {4, 0};
    CHECK(shoal_gguf_writer_add_tensor(w, "z", SHOAL_TYPE_F32, 2, zero_ne, data[0]) == SHOAL_ERR_ARG);

    char err[256];
    if (streamed) {
        CHECK(shoal_gguf_writer_begin(w, path, err, sizeof err) == 0);
        CHECK(shoal_gguf_writer_set_u32(w, "late", 1) == SHOAL_ERR_ARG);
        for (int k = 1; k < N_TYPES; k += 2) {
            CHECK(shoal_gguf_writer_next_tensor(w) == k);
            CHECK(shoal_gguf_writer_tensor_bytes(w, k) == sizes[k]);
            CHECK(shoal_gguf_writer_put_tensor(w, data[k], err, sizeof err) == 0);
        }
        CHECK(shoal_gguf_writer_next_tensor(w) == -1);
        CHECK(shoal_gguf_writer_put_tensor(w, data[0], err, sizeof err) == SHOAL_ERR_ARG);
        CHECK(shoal_gguf_writer_finish(w, err, sizeof err) == 0);
    } else {
        CHECK_MSG(shoal_gguf_writer_write(w, path, err, sizeof err) == 0, "%s", err);
    }
    shoal_gguf_writer_destroy(&w);
    CHECK(w == NULL);
    shoal_gguf_writer_destroy(&w);

    shoal_gguf *g = NULL;
    int rc = shoal_gguf_open(path, &g, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc) {
        for (int k = 0; k < N_TYPES; k++)
            free(data[k]);
        return;
    }
    CHECK(shoal_gguf_version(g) == 3);
    CHECK(shoal_gguf_alignment(g) == alignment);
    CHECK(shoal_gguf_data_offset(g) % alignment == 0);
    CHECK(shoal_gguf_n_kv(g) == 14 + 13 + (alignment != 32));

    uint32_t v32;
    uint64_t v64;
    int64_t vi64;
    float f;
    double d;
    bool b;
    const char *s;
    int64_t i = shoal_gguf_find_key(g, "t.u8");
    CHECK(i >= 0 && shoal_gguf_kv_type(g, i) == SHOAL_GGUF_U8);
    CHECK(strcmp(shoal_gguf_key(g, i), "t.u8") == 0);
    CHECK(shoal_gguf_get_u32(g, "t.u8", &v32) == 0 && v32 == 200);
    CHECK(shoal_gguf_get_i64(g, "t.i8", &vi64) == 0 && vi64 == -100);
    CHECK(shoal_gguf_get_u32(g, "t.i8", &v32) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_get_u32(g, "t.u16", &v32) == 0 && v32 == 60000);
    CHECK(shoal_gguf_get_i64(g, "t.i16", &vi64) == 0 && vi64 == -30000);
    CHECK(shoal_gguf_get_u32(g, "t.u32", &v32) == 0 && v32 == 4000000000u);
    CHECK(shoal_gguf_get_i64(g, "t.i32", &vi64) == 0 && vi64 == -2000000000);
    CHECK(shoal_gguf_get_f32(g, "t.f32", &f) == 0 && f == 1.5e-5f);
    CHECK(shoal_gguf_get_bool(g, "t.bool", &b) == 0 && b);
    CHECK(shoal_gguf_get_str(g, "t.str", &s) == 0 && strcmp(s, "héllo ▁world") == 0);
    CHECK(shoal_gguf_get_u64(g, "t.u64", &v64) == 0 && v64 == u64);
    CHECK(shoal_gguf_get_u32(g, "t.u64", &v32) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_get_i64(g, "t.u64", &vi64) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_get_i64(g, "t.i64", &vi64) == 0 && vi64 == i64);
    CHECK(shoal_gguf_get_u64(g, "t.i64", &v64) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_get_f64(g, "t.f64", &d) == 0 && d == f64);
    CHECK(shoal_gguf_get_f32(g, "t.f64", &f) == 0 && f == (float)f64);
    CHECK(shoal_gguf_get_str(g, "t.empty", &s) == 0 && s[0] == '\0');
    CHECK(shoal_gguf_get_str(g, "t.replaced", &s) == 0 && strcmp(s, "second") == 0);
    CHECK(shoal_gguf_get_u32(g, "t.missing", &v32) == SHOAL_ERR_NOTFOUND);
    CHECK(shoal_gguf_get_u32(g, "t.str", &v32) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_get_str(g, "t.u32", &s) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_get_bool(g, "t.u8", &b) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_get_f32(g, "t.u8", &f) == SHOAL_ERR_FORMAT);
    CHECK(shoal_gguf_find_key(g, "nope") == -1);
    i = shoal_gguf_find_key(g, "t.str");
    CHECK(shoal_gguf_get_str_at(g, i) && shoal_gguf_get_str_at(g, i)->len == strlen("héllo ▁world"));
    CHECK(shoal_gguf_get_i64_at(g, shoal_gguf_find_key(g, "t.i16"), &vi64) == 0 && vi64 == -30000);
    CHECK(shoal_gguf_get_f64_at(g, shoal_gguf_find_key(g, "t.f64"), &d) == 0 && d == f64);

#define CHECK_ARR(key, vt, arr, n)                                            \
    do {                                                                      \
        int64_t k_ = shoal_gguf_find_key(g, key);                             \
        CHECK(k_ >= 0 && shoal_gguf_kv_type(g, k_) == SHOAL_GGUF_ARRAY);      \
        CHECK(shoal_gguf_arr_type(g, k_) == vt);                              \
        CHECK(shoal_gguf_arr_len(g, k_) == n);                                \
        const void *p_ = shoal_gguf_arr_data(g, k_);                          \
        CHECK(p_ && memcmp(p_, arr, sizeof arr) == 0);                        \
    } while (0)
    CHECK_ARR("a.u8", SHOAL_GGUF_U8, a_u8, 3);
    CHECK_ARR("a.i8", SHOAL_GGUF_I8, a_i8, 3);
    CHECK_ARR("a.u16", SHOAL_GGUF_U16, a_u16, 2);
    CHECK_ARR("a.i16", SHOAL_GGUF_I16, a_i16, 2);
    CHECK_ARR("a.u32", SHOAL_GGUF_U32, a_u32, 4);
    CHECK_ARR("a.i32", SHOAL_GGUF_I32, a_i32, 2);
    CHECK_ARR("a.f32", SHOAL_GGUF_F32, a_f32, 3);
    CHECK_ARR("a.bool", SHOAL_GGUF_BOOL, a_bool, 4);
    CHECK_ARR("a.u64", SHOAL_GGUF_U64, a_u64, 2);
    CHECK_ARR("a.i64", SHOAL_GGUF_I64, a_i64, 2);
    CHECK_ARR("a.f64", SHOAL_GGUF_F64, a_f64, 2);
    i = shoal_gguf_find_key(g, "a.str");
    CHECK(shoal_gguf_arr_type(g, i) == SHOAL_GGUF_STRING && shoal_gguf_arr_len(g, i) == 4);
    CHECK(shoal_gguf_arr_data(g, i) == NULL);
    for (uint64_t j = 0; j < 4; j++) {
        const shoal_gguf_str *e = shoal_gguf_arr_str(g, i, j);
        CHECK(e && e->len == strlen(a_str[j]) && strcmp(e->s, a_str[j]) == 0);
    }
    CHECK(shoal_gguf_arr_str(g, i, 4) == NULL);
    i = shoal_gguf_find_key(g, "a.empty");
    CHECK(shoal_gguf_arr_len(g, i) == 0 && shoal_gguf_arr_type(g, i) == SHOAL_GGUF_U32);

    CHECK(shoal_gguf_n_tensors(g) == N_TYPES);
    for (int k = 0; k < N_TYPES; k++) {
        int64_t ti = shoal_gguf_find_tensor(g, names[k]);
        CHECK(ti == k);
        const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, ti);
        if (!t)
            continue;
        int n_dims = 1 + k % 3;
        CHECK(strcmp(t->name, names[k]) == 0);
        CHECK(t->type == all_types[k]);
        CHECK(t->n_dims == n_dims);
        CHECK(t->ne[0] == 256 && t->ne[1] == (n_dims > 1 ? 3 : 1));
        CHECK(t->ne[2] == (n_dims > 2 ? k + 1 : 1) && t->ne[3] == 1);
        size_t want = shoal_type_row_bytes(all_types[k], 256) * (size_t)(t->ne[1] * t->ne[2]);
        CHECK(t->size == want);
        CHECK(t->offset % alignment == 0);
        const uint8_t *p = shoal_gguf_tensor_data(g, ti);
        CHECK(p && ((uintptr_t)p % alignment) == 0);
        CHECK(p && memcmp(p, data[k], want) == 0);
    }
    CHECK(shoal_gguf_find_tensor(g, "nope") == -1);
    CHECK(shoal_gguf_tensor_at(g, N_TYPES) == NULL && shoal_gguf_tensor_at(g, -1) == NULL);
    CHECK(shoal_gguf_tensor_data(g, N_TYPES) == NULL);

    /* every prefix of this valid file that cuts the header or a tensor
     * fails cleanly; the rest (the padding after the last tensor, which
     * ggml writes and expects) opens */
    uint64_t size = shoal_gguf_file_size(g), end = 0;
    for (int64_t k = 0; k < shoal_gguf_n_tensors(g); k++) {
        const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, k);
        if (t->offset + t->size > end)
            end = t->offset + t->size;
    }
    end += shoal_gguf_data_offset(g);
    CHECK(size == (end + alignment - 1) / alignment * alignment);
    uint8_t *copy = malloc(size);
    FILE *fp = fopen(path, "rb");
    CHECK(fp && fread(copy, 1, size, fp) == size);
    if (fp)
        fclose(fp);
    shoal_gguf_close(&g);
    CHECK(g == NULL);
    shoal_gguf_close(&g);
    int prefix_fail = 0;
    for (uint64_t n = 0; n < size; n++) {
        shoal_gguf *h = NULL;
        err[0] = '\0';
        int e = shoal_gguf_open_memory(copy, n, "prefix", &h, err, sizeof err);
        if (n >= end ? (e != 0 || h == NULL)
                     : (e == 0 || h != NULL || !one_line(err) || strncmp(err, "prefix: ", 8) != 0))
            prefix_fail++;
        shoal_gguf_close(&h);
    }
    CHECK_MSG(prefix_fail == 0, "%d prefixes did not fail cleanly", prefix_fail);
    shoal_gguf *h = NULL;
    CHECK(shoal_gguf_open_memory(copy, size, "whole", &h, err, sizeof err) == 0);
    shoal_gguf_close(&h);
    free(copy);
    unlink(path);
    for (int k = 0; k < N_TYPES; k++)
        free(data[k]);
}

/* Streaming that stops early: no file, no temporary left behind. */
static void test_stream_abort(void)
{
    char path[512], err[256];
    path_in_tmp(path, sizeof path, "abort.gguf");
    float x[8] = {0};
    int64_t ne[1] = {8};
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    CHECK(shoal_gguf_writer_declare_tensor(w, "a", SHOAL_TYPE_F32, 1, ne) == 0);
    CHECK(shoal_gguf_writer_declare_tensor(w, "b", SHOAL_TYPE_F32, 1, ne) == 0);
    CHECK(shoal_gguf_writer_write(w, path, err, sizeof err) == SHOAL_ERR_ARG && one_line(err));
    CHECK(shoal_gguf_writer_begin(w, path, err, sizeof err) == 0);
    CHECK(shoal_gguf_writer_begin(w, path, err, sizeof err) == SHOAL_ERR_ARG);
    CHECK(shoal_gguf_writer_put_tensor(w, x, err, sizeof err) == 0);
    CHECK(shoal_gguf_writer_finish(w, err, sizeof err) == SHOAL_ERR_ARG && strstr(err, "'b'"));
    shoal_gguf_writer_destroy(&w);
    w = shoal_gguf_writer_new();
    CHECK(shoal_gguf_writer_declare_tensor(w, "a", SHOAL_TYPE_F32, 1, ne) == 0);
    CHECK(shoal_gguf_writer_begin(w, path, err, sizeof err) == 0);
    shoal_gguf_writer_destroy(&w);   /* mid-stream */
    CHECK(access(path, F_OK) != 0);
    DIR *d = opendir(tmpdir);
    int left = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "abort.gguf", 10) == 0)
            left++;
    if (d)
        closedir(d);
    CHECK_MSG(left == 0, "%d temporary files left behind", left);
    /* general.alignment only through set_alignment */
    w = shoal_gguf_writer_new();
    CHECK(shoal_gguf_writer_set_u32(w, "general.alignment", 64) == 0);
    CHECK(shoal_gguf_writer_write(w, path, err, sizeof err) == SHOAL_ERR_ARG && one_line(err));
    CHECK(shoal_gguf_writer_set_alignment(w, 64) == 0);
    CHECK_MSG(shoal_gguf_writer_write(w, path, err, sizeof err) == 0, "%s", err);
    shoal_gguf_writer_destroy(&w);
    shoal_gguf *g = NULL;
    CHECK(shoal_gguf_open(path, &g, err, sizeof err) == 0 && shoal_gguf_alignment(g) == 64);
    shoal_gguf_close(&g);
    unlink(path);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.gguf", tmpdir);
    w = shoal_gguf_writer_new();
    CHECK(shoal_gguf_writer_write(w, bad, err, sizeof err) == SHOAL_ERR_IO && one_line(err));
    shoal_gguf_writer_destroy(&w);
}

static void test_stories(void)
{
    const char *path = SHOAL_SHARED "/models/stories260K.gguf";
    shoal_gguf *g = NULL;
    char err[256];
    int rc = shoal_gguf_open(path, &g, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc)
        return;
    CHECK(shoal_gguf_n_tensors(g) == 48);
    CHECK(shoal_gguf_n_kv(g) == 19);
    uint32_t v;
    CHECK(shoal_gguf_get_u32(g, "llama.block_count", &v) == 0 && v == 5);
    CHECK(shoal_gguf_get_u32(g, "llama.embedding_length", &v) == 0 && v == 64);
    CHECK(shoal_gguf_get_u32(g, "llama.context_length", &v) == 0 && v == 512);
    const char *s;
    CHECK(shoal_gguf_get_str(g, "general.architecture", &s) == 0 && strcmp(s, "llama") == 0);
    CHECK(shoal_gguf_get_str(g, "tokenizer.ggml.model", &s) == 0 && strcmp(s, "llama") == 0);
    int64_t i = shoal_gguf_find_key(g, "tokenizer.ggml.tokens");
    CHECK(shoal_gguf_arr_type(g, i) == SHOAL_GGUF_STRING && shoal_gguf_arr_len(g, i) == 512);
    const shoal_gguf_str *t1 = shoal_gguf_arr_str(g, i, 1);
    CHECK(t1 && strcmp(t1->s, "<s>") == 0);
    i = shoal_gguf_find_key(g, "tokenizer.ggml.scores");
    CHECK(shoal_gguf_arr_type(g, i) == SHOAL_GGUF_F32 && shoal_gguf_arr_len(g, i) == 512);
    int64_t ti = shoal_gguf_find_tensor(g, "token_embd.weight");
    const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, ti);
    CHECK(t && t->type == SHOAL_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512);
    CHECK(t && t->size == 64 * 512 * 4);
    const float *x = shoal_gguf_tensor_data(g, ti);
    bool finite = x != NULL;
    for (int k = 0; x && k < 64 * 512; k++)
        finite = finite && isfinite(x[k]);
    CHECK(finite);
    t = shoal_gguf_tensor_at(g, shoal_gguf_find_tensor(g, "blk.4.ffn_down.weight"));
    CHECK(t && t->ne[0] == 172 && t->ne[1] == 64);
    shoal_gguf_close(&g);
}

/* Opening a file whose data section is large touches only the header pages.
 * mincore reports page-cache residency of the mapping's pages; the cache
 * for the file is dropped (fsync + POSIX_FADV_DONTNEED) before opening.
 * Without care the kernel's read-around on the first header fault reads
 * read_ahead_kb (8 MiB on this machine's disk) of tensor data; the reader
 * avoids it, and reads at most one 256 KiB chunk past the header: the
 * check allows 1 MiB of 64. */
static void test_lazy_pages(void)
{
    char path[512], err[256];
    path_in_tmp(path, sizeof path, "big.gguf");
    const int64_t rows = 16384, cols = 1024;   /* 64 MiB of f32 */
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    CHECK(shoal_gguf_writer_set_str(w, "general.architecture", "test") == 0);
    int64_t ne[2] = {cols, rows};
    CHECK(shoal_gguf_writer_declare_tensor(w, "big.weight", SHOAL_TYPE_F32, 2, ne) == 0);
    CHECK(shoal_gguf_writer_begin(w, path, err, sizeof err) == 0);
    size_t bytes = (size_t)(rows * cols * 4);
    uint8_t *buf = malloc(bytes);
    memset(buf, 0x3f, bytes);
    CHECK(shoal_gguf_writer_put_tensor(w, buf, err, sizeof err) == 0);
    free(buf);
    CHECK(shoal_gguf_writer_finish(w, err, sizeof err) == 0);
    shoal_gguf_writer_destroy(&w);

    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    fsync(fd);
    int adv = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    /* On tmpfs, say, the cache cannot be dropped: then there is nothing to see */
    long pgsz = sysconf(_SC_PAGESIZE);
    struct stat st;
    size_t before = 0;
    if (adv == 0 && fstat(fd, &st) == 0) {
        void *probe = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        size_t np = ((size_t)st.st_size + (size_t)pgsz - 1) / (size_t)pgsz;
        unsigned char *v = malloc(np);
        if (probe != MAP_FAILED && v && mincore(probe, (size_t)st.st_size, v) == 0)
            for (size_t k = 0; k < np; k++)
                before += v[k] & 1;
        else
            adv = -1;
        free(v);
        if (probe != MAP_FAILED)
            munmap(probe, (size_t)st.st_size);
        if (before * (size_t)pgsz > ((size_t)1 << 20))
            adv = -2;
    }
    close(fd);

    shoal_gguf *g = NULL;
    CHECK(shoal_gguf_open(path, &g, err, sizeof err) == 0);
    if (!g)
        return;
    long pg = sysconf(_SC_PAGESIZE);
    const uint8_t *data = shoal_gguf_tensor_data(g, 0);
    const uint8_t *start = (const uint8_t *)((uintptr_t)data & ~(uintptr_t)(pg - 1));
    size_t len = (size_t)(data + bytes - start);
    size_t npages = (len + (size_t)pg - 1) / (size_t)pg;
    unsigned char *vec = malloc(npages);
    int mc = mincore((void *)start, len, vec);
    size_t resident = 0;
    for (size_t k = 0; mc == 0 && k < npages; k++)
        resident += vec[k] & 1;
    if (adv != 0 || mc != 0) {
        printf("mincore check skipped: page cache not dropped or mincore failed (%d, %d, %zu "
               "pages resident before open)\n", adv, mc, before);
    } else {
        printf("after open: %zu of %zu data pages resident\n", resident, npages);
        CHECK_MSG(resident * (size_t)pg <= ((size_t)1 << 20), "%zu data pages resident after open",
                  resident);
        /* the check can fail: reading the data does make it resident */
        volatile uint8_t sum = 0;
        for (size_t k = 0; k < bytes; k += (size_t)pg)
            sum += data[k];
        (void)sum;
        mc = mincore((void *)start, len, vec);
        resident = 0;
        for (size_t k = 0; mc == 0 && k < npages; k++)
            resident += vec[k] & 1;
        CHECK(mc == 0 && resident >= npages - 1);
    }
    free(vec);
    shoal_gguf_close(&g);
    unlink(path);
}

/* Hand-made headers for errors whose message the test pins. */
typedef struct hb {
    uint8_t p[4096];
    size_t n;
} hb;

static void hb_put(hb *b, const void *s, size_t n) { memcpy(b->p + b->n, s, n); b->n += n; }
static void hb_u32(hb *b, uint32_t v) { for (int i = 0; i < 4; i++) b->p[b->n++] = (uint8_t)(v >> 8 * i); }
static void hb_u64(hb *b, uint64_t v) { for (int i = 0; i < 8; i++) b->p[b->n++] = (uint8_t)(v >> 8 * i); }
static void hb_str(hb *b, const char *s) { hb_u64(b, strlen(s)); hb_put(b, s, strlen(s)); }

static void test_messages(void)
{
    char err[256];
    shoal_gguf *g = NULL;
    hb b = {0};
    /* one f32 tensor of 64 elements whose data is cut short */
    hb_put(&b, "GGUF", 4); hb_u32(&b, 3); hb_u64(&b, 1); hb_u64(&b, 0);
    hb_str(&b, "blk.3.attn_q.weight"); hb_u32(&b, 1); hb_u64(&b, 64); hb_u32(&b, 0); hb_u64(&b, 0);
    while (b.n % 32) b.p[b.n++] = 0;
    b.n += 100;
    CHECK(shoal_gguf_open_memory(b.p, b.n, "model.gguf", &g, err, sizeof err) == SHOAL_ERR_FORMAT);
    CHECK_MSG(strstr(err, "model.gguf: tensor 'blk.3.attn_q.weight' extends past end of file") == err,
              "%s", err);
    CHECK(g == NULL);

    /* an unsupported type names the type */
    b.n = 0;
    hb_put(&b, "GGUF", 4); hb_u32(&b, 3); hb_u64(&b, 1); hb_u64(&b, 0);
    hb_str(&b, "w"); hb_u32(&b, 1); hb_u64(&b, 256); hb_u32(&b, 10); hb_u64(&b, 0);
    while (b.n % 32) b.p[b.n++] = 0;
    b.n += 84;
    CHECK(shoal_gguf_open_memory(b.p, b.n, "m", &g, err, sizeof err) == SHOAL_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err, "type 10 (q2_K)") != NULL, "%s", err);

    /* v2 reads like v3 */
    b.n = 0;
    hb_put(&b, "GGUF", 4); hb_u32(&b, 2); hb_u64(&b, 0); hb_u64(&b, 1);
    hb_str(&b, "general.name"); hb_u32(&b, SHOAL_GGUF_STRING); hb_str(&b, "v2");
    CHECK(shoal_gguf_open_memory(b.p, b.n, "m", &g, err, sizeof err) == 0);
    CHECK(g && shoal_gguf_version(g) == 2);
    shoal_gguf_close(&g);

    CHECK(shoal_gguf_open(SHOAL_SHARED "/no/such.gguf", &g, err, sizeof err) == SHOAL_ERR_NOTFOUND);
    CHECK(one_line(err) && g == NULL);
    CHECK(shoal_gguf_open(SHOAL_SHARED, &g, err, sizeof err) == SHOAL_ERR_IO && one_line(err));
}

/* Every file of the fuzz corpus: valid_* open, every other one fails with
 * an error code and a one-line message. */
static void test_corpus(void)
{
    const char *dir = SHOAL_TESTS_DIR "/fuzz/corpus/fuzz_gguf";
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "cannot open %s", dir);
    if (!d)
        return;
    int n_bad = 0, n_valid = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        shoal_gguf *g = NULL;
        err[0] = '\0';
        int rc = shoal_gguf_open(path, &g, err, sizeof err);
        if (strncmp(e->d_name, "valid_", 6) == 0) {
            n_valid++;
            CHECK_MSG(rc == 0 && g != NULL, "%s: %s", e->d_name, err);
        } else {
            n_bad++;
            CHECK_MSG(rc != 0 && g == NULL && one_line(err), "%s: rc %d, err '%s'", e->d_name, rc,
                      err);
        }
        shoal_gguf_close(&g);
    }
    closedir(d);
    printf("corpus: %d malformed, %d valid\n", n_bad, n_valid);
    CHECK(n_bad >= 20);
    CHECK(n_valid >= 2);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_gguf.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip(32, false);
    test_round_trip(64, true);
    test_round_trip(1, true);
    test_stream_abort();
    test_stories();
    test_lazy_pages();
    test_messages();
    test_corpus();
    rmdir(tmpdir);
    return check_done();
}
