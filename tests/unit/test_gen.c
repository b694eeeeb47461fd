/*
 * The LM session (client/gen.h) on stories260K, locally:
 *  - greedy generation from "Once upon a time" gives the reference tokens
 *    (once-64.tokens), fed one token at a time after a batched prompt;
 *  - rewinding and syncing: after any rewind, or a sync onto a sequence
 *    that diverges and comes back, the next greedy tokens are the same bits
 *    as without (the cache really is truncated and refilled); sync feeds
 *    only the tokens past the common prefix;
 *  - sampler: set_sampler with a seed is reproducible after a rewind;
 *  - errors: context overflow, bad rewinds, nothing to feed;
 *  - printable output: byte tokens of a split UTF-8 character come out
 *    only once the character is complete; an invalid byte becomes U+FFFD
 *    when asked.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "client/gen.h"
#include "kernels/cpu.h"
#include "kernels/err.h"

#define MODEL SHOAL_SHARED "/models/stories260K.gguf"
#define MAXT 512

static int read_tokens(const char *path, int32_t *out, int max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0, v;
    while (n < max && fscanf(f, "%d", &v) == 1)
        out[n++] = v;
    fclose(f);
    return n;
}

/* n greedy tokens after what gs has fed (each fed but the last) */
static int greedy(shoal_gen *gs, int32_t *out, int n)
{
    for (int i = 0; i < n; i++) {
        out[i] = shoal_gen_sample(gs);
        if (i + 1 < n && shoal_gen_feed(gs, &out[i], 1))
            return -1;
    }
    return 0;
}

int main(void)
{
    shoal_cpu_init();
    static int32_t ref[MAXT], toks[MAXT], a[64], b[64];
    int n_ref = read_tokens(SHOAL_SHARED "/reference/once-64.tokens", ref, MAXT);
    CHECK(n_ref > 10);

    char err[512];
    shoal_lm_params lp = shoal_lm_params_default();
    lp.model_path = MODEL;
    lp.ctx = 128;
    lp.threads = 1;
    shoal_lm *lm = NULL;
    CHECK_MSG(shoal_lm_open(&lp, &lm, err, sizeof err) == 0, "%s", err);
    if (!lm)
        return check_done();
    CHECK(shoal_lm_ctx(lm) == 128);
    CHECK(!shoal_lm_remote(lm));
    CHECK(!strcmp(shoal_lm_name(lm), "stories260K"));
    CHECK(shoal_lm_check_route(lm, err, sizeof err) == 0);
    const shoal_tokenizer *tok = shoal_lm_tokenizer(lm);

    shoal_sampler_params sp = shoal_sampler_params_default();
    sp.temp = 0;
    shoal_gen *gs = NULL;
    CHECK_MSG(shoal_gen_new(lm, &sp, &gs, err, sizeof err) == 0, "%s", err);
    if (!gs)
        return check_done();

    /* the reference: BOS + 4 prompt tokens, then the generated ones */
    int n_prompt = 0;
    CHECK(shoal_tokenizer_encode(tok, "Once upon a time", 16, true, toks, MAXT, &n_prompt) == 0);
    CHECK(n_prompt == 5 && !memcmp(toks, ref, 5 * sizeof *toks));
    CHECK(!shoal_gen_has_logits(gs));
    CHECK(shoal_gen_feed(gs, toks, n_prompt) == 0);
    CHECK(shoal_gen_has_logits(gs) && shoal_gen_pos(gs) == 5);
    int n_gen = n_ref - n_prompt < 40 ? n_ref - n_prompt : 40;
    CHECK(greedy(gs, a, n_gen) == 0);
    CHECK(!memcmp(a, ref + n_prompt, (size_t)n_gen * sizeof *a));
    CHECK(shoal_gen_pos(gs) == n_prompt + n_gen - 1);
    CHECK(!memcmp(shoal_gen_tokens(gs), ref, (size_t)shoal_gen_pos(gs) * sizeof *ref));

    /* rewind into the middle and go on: the same tokens */
    CHECK(shoal_gen_rewind(gs, 12) == 0);
    CHECK(!shoal_gen_has_logits(gs) && shoal_gen_pos(gs) == 12);
    CHECK(shoal_gen_feed(gs, ref + 12, 3) == 0);
    CHECK(greedy(gs, b, 10) == 0);
    CHECK(!memcmp(b, ref + 15, 10 * sizeof *b));

    /* sync onto a diverging sequence, then back onto the reference */
    int fed = -1;
    memcpy(toks, ref, 20 * sizeof *toks);
    toks[10] = ref[10] == 100 ? 101 : 100;
    CHECK(shoal_gen_sync(gs, toks, 20, &fed) == 0);
    CHECK_MSG(fed == 10, "fed %d", fed);
    CHECK(shoal_gen_sync(gs, ref, 30, &fed) == 0);
    CHECK_MSG(fed == 20, "fed %d", fed);
    CHECK(greedy(gs, b, 10) == 0);
    CHECK(!memcmp(b, ref + 30, 10 * sizeof *b));
    /* sync onto exactly what was fed: only the last token runs again */
    memcpy(toks, shoal_gen_tokens(gs), (size_t)shoal_gen_pos(gs) * sizeof *toks);
    int pos = shoal_gen_pos(gs);
    CHECK(shoal_gen_sync(gs, toks, pos, &fed) == 0 && fed == 1);
    CHECK(shoal_gen_sample(gs) == ref[pos]);

    /* a seeded sampler is reproducible after rewinding */
    shoal_sampler_params hot = shoal_sampler_params_default();
    hot.temp = 1.0f;
    hot.seed = 42;
    CHECK(shoal_gen_rewind(gs, 5) == 0);
    CHECK(shoal_gen_set_sampler(gs, &hot) == 0);
    CHECK(shoal_gen_sync(gs, ref, 5, &fed) == 0 && fed == 1);
    CHECK(greedy(gs, a, 20) == 0);
    CHECK(shoal_gen_set_sampler(gs, &hot) == 0);
    CHECK(shoal_gen_sync(gs, ref, 5, &fed) == 0);
    CHECK(greedy(gs, b, 20) == 0);
    CHECK(!memcmp(a, b, 20 * sizeof *a));
    hot.temp = NAN; /* refused, the sampler stays */
    CHECK(shoal_gen_set_sampler(gs, &hot) == SHOAL_ERR_ARG);

    /* errors */
    CHECK(shoal_gen_rewind(gs, shoal_gen_pos(gs) + 1) == SHOAL_ERR_ARG);
    CHECK(shoal_gen_rewind(gs, -1) == SHOAL_ERR_ARG);
    CHECK(shoal_gen_feed(gs, ref, 0) == SHOAL_ERR_ARG);
    CHECK(shoal_gen_rewind(gs, 0) == 0);
    static int32_t many[200];
    for (int i = 0; i < 200; i++)
        many[i] = ref[i % n_ref];
    CHECK(shoal_gen_feed(gs, many, 129) == SHOAL_ERR_CONTEXT);
    CHECK(shoal_gen_pos(gs) == 0);
    CHECK(shoal_gen_feed(gs, many, 128) == 0);
    CHECK(shoal_gen_feed(gs, many, 1) == SHOAL_ERR_CONTEXT);
    CHECK(strstr(shoal_gen_error(gs), "context") != NULL);
    CHECK(shoal_gen_sync(gs, many, 129, NULL) == SHOAL_ERR_CONTEXT);
    CHECK(!shoal_gen_broken(gs));
    shoal_gen_destroy(&gs);
    CHECK(gs == NULL);
    shoal_gen_destroy(&gs);

    /* printable output: "é" is C3 A9; as byte tokens it is held back until
     * complete; a lone continuation byte becomes U+FFFD when asked */
    int32_t c3 = shoal_tokenizer_find(tok, "<0xC3>", 6), a9 = shoal_tokenizer_find(tok, "<0xA9>", 6);
    CHECK(c3 >= 0 && a9 >= 0);
    static shoal_gen_out out;
    static char buf[SHOAL_GEN_OUT_CAP];
    size_t len = 99;
    shoal_gen_out_init(&out, tok, -1, false);
    CHECK(shoal_gen_out_push(&out, c3, buf, sizeof buf, &len) == 0 && len == 0);
    CHECK(shoal_gen_out_push(&out, a9, buf, sizeof buf, &len) == 0 && len == 2 &&
          !memcmp(buf, "\xc3\xa9", 2));
    CHECK(shoal_gen_out_push(&out, c3, buf, sizeof buf, &len) == 0 && len == 0);
    CHECK(shoal_gen_out_flush(&out, buf, sizeof buf, &len) == 0 && len == 1 &&
          (unsigned char)buf[0] == 0xc3);
    shoal_gen_out_init(&out, tok, -1, true);
    CHECK(shoal_gen_out_push(&out, a9, buf, sizeof buf, &len) == 0 && len == 3 &&
          !memcmp(buf, "\xef\xbf\xbd", 3));
    CHECK(shoal_gen_out_push(&out, -5, buf, sizeof buf, &len) == SHOAL_ERR_ARG);
    CHECK(shoal_gen_out_push(&out, a9, buf, 8, &len) == SHOAL_ERR_ARG);
    /* a piece's leading space goes right after BOS, as the tokenizer says */
    shoal_gen_out_init(&out, tok, shoal_tokenizer_bos(tok), false);
    CHECK(shoal_gen_out_push(&out, ref[1], buf, sizeof buf, &len) == 0 && len == 4 &&
          !memcmp(buf, "Once", 4));

    /* a bad file: one line */
    lp.model_path = "/nonexistent/model.gguf";
    shoal_lm *bad = NULL;
    CHECK(shoal_lm_open(&lp, &bad, err, sizeof err) != 0 && bad == NULL && strchr(err, '\n') == NULL);
    lp.model_path = MODEL;
    lp.threads = 0;
    CHECK(shoal_lm_open(&lp, &bad, err, sizeof err) == SHOAL_ERR_ARG && bad == NULL);
    shoal_lm_close(&lm);
    CHECK(lm == NULL);
    return check_done();
}
