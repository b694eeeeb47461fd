/*
 * Fuzz target for the GGUF reader: the input is opened as a memory-backed
 * GGUF file. A rejected input must leave a one-line message and no object;
 * an accepted one is walked through every getter, and every tensor's first
 * and last byte is read (out-of-bounds data pointers show up under ASan,
 * since the replay and libFuzzer both pass a buffer of exactly `size`).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shoal_gguf *g = NULL;
    char err[256];
    int rc = shoal_gguf_open_memory(data, size, "fuzz.gguf", &g, err, sizeof err);
    if (rc != 0) {
        if (g != NULL || err[0] == '\0' || strchr(err, '\n'))
            abort();
        return 0;
    }
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < shoal_gguf_n_kv(g); i++) {
        const char *key = shoal_gguf_key(g, i);
        if (!key || shoal_gguf_find_key(g, key) != i)
            abort();
        int64_t iv;
        double dv;
        uint32_t u32;
        uint64_t u64;
        float f;
        bool b;
        const char *s;
        sink += (uint64_t)shoal_gguf_get_i64_at(g, i, &iv) + (uint64_t)shoal_gguf_get_f64_at(g, i, &dv);
        sink += (uint64_t)shoal_gguf_get_u32(g, key, &u32) + (uint64_t)shoal_gguf_get_u64(g, key, &u64);
        sink += (uint64_t)shoal_gguf_get_f32(g, key, &f) + (uint64_t)shoal_gguf_get_bool(g, key, &b);
        sink += (uint64_t)shoal_gguf_get_i64(g, key, &iv) + (uint64_t)shoal_gguf_get_f64(g, key, &dv);
        if (shoal_gguf_get_str(g, key, &s) == 0)
            sink += strlen(s);
        const shoal_gguf_str *str = shoal_gguf_get_str_at(g, i);
        if (str && str->s[str->len] != '\0')
            abort();
        if (shoal_gguf_kv_type(g, i) == SHOAL_GGUF_ARRAY) {
            uint64_t n = shoal_gguf_arr_len(g, i);
            int t = shoal_gguf_arr_type(g, i);
            const uint8_t *p = shoal_gguf_arr_data(g, i);
            if (p && n)
                sink += p[0];
            for (uint64_t j = 0; t == SHOAL_GGUF_STRING && j < n; j++) {
                const shoal_gguf_str *e = shoal_gguf_arr_str(g, i, j);
                if (!e || e->s[e->len] != '\0')
                    abort();
                sink += e->len ? (uint8_t)e->s[e->len - 1] : 0;
            }
        }
    }
    for (int64_t i = 0; i < shoal_gguf_n_tensors(g); i++) {
        const shoal_gguf_tensor *t = shoal_gguf_tensor_at(g, i);
        if (!t || shoal_gguf_find_tensor(g, t->name) != i || t->size == 0)
            abort();
        const uint8_t *p = shoal_gguf_tensor_data(g, i);
        sink += p[0] + p[t->size - 1];
    }
    (void)sink;
    shoal_gguf_close(&g);
    return 0;
}
