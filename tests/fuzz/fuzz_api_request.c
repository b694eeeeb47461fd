/*
 * Fuzz target: the JSON body of an API completion request
 * (client/api_request.h), parsed against stories260K's tokenizer. The
 * first byte picks chat or completion; the rest is the body.
 *
 * Checks on every input: an accepted request has a prompt of 1..ctx-1
 * in-vocabulary tokens, room for at least one new token, at most 4 stop
 * strings of 1..1024 bytes, a temperature in [0, 2] and top_p in [0, 1]; a
 * refused one has a 4xx/5xx status and a message. No leaks (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client/api_request.h"
#include "client/gen.h"
#include "client/tokenizer.h"

#ifndef SHOAL_SHARED
#define SHOAL_SHARED "../shared"
#endif

static shoal_lm *lm;

static void load(void)
{
    shoal_lm_params p = shoal_lm_params_default();
    p.model_path = SHOAL_SHARED "/models/stories260K.gguf";
    p.ctx = 64; /* small: context overflows are reachable */
    char err[256];
    if (shoal_lm_open(&p, &lm, err, sizeof err))
        abort(); /* the shipped model must load */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!lm)
        load();
    if (size < 1)
        return 0;
    bool chat = data[0] & 1;
    shoal_api_parse_ctx ctx = {lm, "stories260K", 42};
    shoal_api_job job;
    shoal_api_error e;
    int rc = shoal_api_parse(&ctx, (const char *)data + 1, size - 1, chat, &job, &e);
    int n_ctx = shoal_lm_ctx(lm), n_vocab = shoal_tokenizer_n_vocab(shoal_lm_tokenizer(lm));
    if (rc == 0) {
        if (job.n_prompt < 1 || job.n_prompt >= n_ctx || job.max_tokens < 1 ||
            job.n_prompt + job.max_tokens > n_ctx || job.n_stops < 0 ||
            job.n_stops > SHOAL_API_MAX_STOPS || !(job.sp.temp >= 0 && job.sp.temp <= 2) ||
            !(job.sp.top_p >= 0 && job.sp.top_p <= 1) || job.chat != chat)
            abort();
        for (int i = 0; i < job.n_prompt; i++)
            if (job.prompt[i] < 0 || job.prompt[i] >= n_vocab)
                abort();
        for (int i = 0; i < job.n_stops; i++)
            if (job.stop_len[i] < 1 || job.stop_len[i] > SHOAL_API_MAX_STOP_LEN)
                abort();
    } else if (rc != e.status || rc < 400 || rc > 599 || !e.msg[0]) {
        abort();
    }
    shoal_api_job_free(&job);
    return 0;
}
