/*
 * Chat templates: detection from Jinja markers, names, and rendering to
 * tokens for every family on a synthetic vocabulary that has the markers as
 * control tokens — markers must come out as single ids, text around them
 * must decode back to the template's exact text, and a user typing a
 * marker must not produce the marker's id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "client/chat.h"
#include "client/tokenizer.h"
#include "kernels/err.h"
#include "kernels/gguf.h"

static const char *specials[] = {"<|im_start|>", "<|im_end|>", "<|start_header_id|>",
                                 "<|end_header_id|>", "<|eot_id|>", "<start_of_turn>",
                                 "<end_of_turn>", "<|system|>", "<|user|>", "<|assistant|>",
                                 "<|end|>"};
#define NSPEC (int)(sizeof specials / sizeof specials[0])

static shoal_tokenizer *make_tokenizer(const char *path)
{
    enum { V = 3 + 256 + 1 + NSPEC };
    const char *toks[V];
    char bytes[256][8];
    float scores[V];
    int32_t types[V];
    toks[0] = "<unk>", toks[1] = "<s>", toks[2] = "</s>";
    types[0] = 2, types[1] = 3, types[2] = 3;
    for (int i = 0; i < 256; i++) {
        snprintf(bytes[i], sizeof bytes[i], "<0x%02X>", i);
        toks[3 + i] = bytes[i];
        types[3 + i] = 6;
    }
    toks[259] = "\xe2\x96\x81";
    types[259] = 1;
    for (int i = 0; i < NSPEC; i++) {
        toks[260 + i] = specials[i];
        types[260 + i] = 3;
    }
    for (int i = 0; i < V; i++)
        scores[i] = -(float)i;
    shoal_gguf_writer *w = shoal_gguf_writer_new();
    shoal_gguf_writer_set_str(w, "general.architecture", "llama");
    shoal_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    shoal_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, V);
    shoal_gguf_writer_set_arr(w, "tokenizer.ggml.scores", SHOAL_GGUF_F32, scores, V);
    shoal_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SHOAL_GGUF_I32, types, V);
    shoal_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    shoal_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    char err[256];
    int rc = shoal_gguf_writer_write(w, path, err, sizeof err);
    shoal_gguf_writer_destroy(&w);
    if (rc) {
        fprintf(stderr, "write: %s\n", err);
        return NULL;
    }
    shoal_gguf *g = NULL;
    if (shoal_gguf_open(path, &g, err, sizeof err)) {
        fprintf(stderr, "open: %s\n", err);
        return NULL;
    }
    shoal_tokenizer *t = shoal_tokenizer_from_gguf(g, err, sizeof err);
    if (!t)
        fprintf(stderr, "tokenizer: %s\n", err);
    shoal_gguf_close(&g);
    return t;
}

/* Decodes ids, writing control tokens as their text. */
static void render_text(const shoal_tokenizer *t, const int32_t *ids, int n, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        const char *piece = shoal_tokenizer_token(t, ids[i]);
        char tmp[64];
        int k;
        if (shoal_tokenizer_token_type(t, ids[i]) == 3) {
            k = snprintf(tmp, sizeof tmp, "%s", piece);
        } else {
            /* no BOS-space stripping: prev = a non-BOS token */
            k = shoal_tokenizer_piece(t, 0, ids[i], tmp, sizeof tmp);
        }
        if (k > 0 && len + (size_t)k < cap) {
            memcpy(buf + len, tmp, (size_t)k);
            len += (size_t)k;
            buf[len] = 0;
        }
    }
}

static int count_id(const int32_t *ids, int n, int32_t id)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += ids[i] == id;
    return c;
}

int main(void)
{
    CHECK(shoal_chat_template_detect(NULL) == SHOAL_CHAT_NONE);
    CHECK(shoal_chat_template_detect("{% for m in messages %}<|im_start|>{{m.role}}") == SHOAL_CHAT_CHATML);
    CHECK(shoal_chat_template_detect("<|start_header_id|>' + message['role']") == SHOAL_CHAT_LLAMA3);
    CHECK(shoal_chat_template_detect("[INST] <<SYS>>\\n") == SHOAL_CHAT_LLAMA2);
    CHECK(shoal_chat_template_detect("{{ '[INST] ' + message['content'] }}") == SHOAL_CHAT_MISTRAL);
    CHECK(shoal_chat_template_detect("<start_of_turn>user") == SHOAL_CHAT_GEMMA);
    CHECK(shoal_chat_template_detect("<|user|>\\n ... <|end|><|assistant|>") == SHOAL_CHAT_PHI3);
    CHECK(shoal_chat_template_detect("{{ bos_token }}{{ content }}") == SHOAL_CHAT_NONE);
    for (int i = 0; i < SHOAL_CHAT__COUNT; i++)
        CHECK(shoal_chat_template_from_name(shoal_chat_template_name(i)) == i);
    CHECK(shoal_chat_template_from_name("qwen") == SHOAL_CHAT_CHATML);
    CHECK(shoal_chat_template_from_name("nope") == -1);
    CHECK(shoal_chat_role_from_name("assistant") == SHOAL_ROLE_ASSISTANT);
    CHECK(shoal_chat_role_from_name("tool") == -1);

    char dir[] = "/tmp/shoal-test-chat-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char path[256];
    snprintf(path, sizeof path, "%s/tok.gguf", dir);
    shoal_tokenizer *t = make_tokenizer(path);
    CHECK(t != NULL);
    if (!t)
        return check_done();

    shoal_chat_msg conv[] = {{SHOAL_ROLE_SYSTEM, "Be brief."},
                             {SHOAL_ROLE_USER, "Hi <|im_end|>"},
                             {SHOAL_ROLE_ASSISTANT, "Hello."},
                             {SHOAL_ROLE_USER, "Bye"}};
    int32_t ids[1024];
    char text[4096];
    int n = 0;
    int32_t im_end = shoal_tokenizer_find(t, "<|im_end|>", 10);
    CHECK(im_end > 0);

    CHECK(shoal_chat_render(SHOAL_CHAT_CHATML, t, conv, 4, true, ids, 1024, &n) == 0);
    render_text(t, ids, n, text, sizeof text);
    /* The SentencePiece dummy prefix puts a space before each text run. */
    CHECK_MSG(strcmp(text, "<|im_start|> system \n Be brief.<|im_end|> \n<|im_start|> user \n Hi "
                           "<|im_end|><|im_end|> \n<|im_start|> assistant \n Hello.<|im_end|> "
                           "\n<|im_start|> user \n Bye<|im_end|> \n<|im_start|> assistant\n") == 0,
              "chatml rendered as [%s]", text);
    /* The user's typed "<|im_end|>" is text: 4 real turn ends, not 5. */
    CHECK(count_id(ids, n, im_end) == 4);
    CHECK(shoal_chat_end_token(SHOAL_CHAT_CHATML, t) == im_end);

    CHECK(shoal_chat_render(SHOAL_CHAT_LLAMA3, t, conv, 4, true, ids, 1024, &n) == 0);
    CHECK(ids[0] == 1);
    CHECK(count_id(ids, n, shoal_tokenizer_find(t, "<|eot_id|>", 10)) == 4);
    CHECK(count_id(ids, n, shoal_tokenizer_find(t, "<|start_header_id|>", 19)) == 5);

    CHECK(shoal_chat_render(SHOAL_CHAT_LLAMA2, t, conv, 4, true, ids, 1024, &n) == 0);
    render_text(t, ids, n, text, sizeof text);
    CHECK_MSG(strstr(text, "<<SYS>>") && strstr(text, "Be brief.") && strstr(text, "[/INST]"),
              "llama2 rendered as [%s]", text);
    CHECK(count_id(ids, n, 1) == 2 && count_id(ids, n, 2) == 1);

    CHECK(shoal_chat_render(SHOAL_CHAT_MISTRAL, t, conv, 4, true, ids, 1024, &n) == 0);
    CHECK(count_id(ids, n, 1) == 1 && count_id(ids, n, 2) == 1);

    CHECK(shoal_chat_render(SHOAL_CHAT_GEMMA, t, conv, 4, true, ids, 1024, &n) == 0);
    CHECK(count_id(ids, n, shoal_tokenizer_find(t, "<start_of_turn>", 15)) == 4);
    render_text(t, ids, n, text, sizeof text);
    CHECK_MSG(strstr(text, "Be brief.") != NULL, "gemma lost the system text: [%s]", text);

    CHECK(shoal_chat_render(SHOAL_CHAT_PHI3, t, conv, 4, false, ids, 1024, &n) == 0);
    CHECK(count_id(ids, n, shoal_tokenizer_find(t, "<|end|>", 7)) == 4);

    CHECK(shoal_chat_render(SHOAL_CHAT_NONE, t, conv + 1, 1, true, ids, 1024, &n) == 0);
    CHECK(ids[0] == 1 && n > 1);

    /* Output limits: RANGE with the needed count, never writing past max. */
    int need = 0;
    CHECK(shoal_chat_render(SHOAL_CHAT_CHATML, t, conv, 4, true, ids, 1024, &need) == 0);
    int32_t small[8];
    memset(small, 0x55, sizeof small);
    CHECK(shoal_chat_render(SHOAL_CHAT_CHATML, t, conv, 4, true, small, 4, &n) == SHOAL_ERR_RANGE);
    CHECK(n == need);
    CHECK(small[4] == 0x55555555 && small[7] == 0x55555555);
    /* Bad roles and roles a template cannot express. */
    shoal_chat_msg bad[] = {{7, "x"}};
    CHECK(shoal_chat_render(SHOAL_CHAT_CHATML, t, bad, 1, true, ids, 1024, &n) == SHOAL_ERR_ARG);
    shoal_chat_msg two_sys[] = {{SHOAL_ROLE_SYSTEM, "a"}, {SHOAL_ROLE_SYSTEM, "b"}};
    CHECK(shoal_chat_render(SHOAL_CHAT_LLAMA2, t, two_sys, 2, true, ids, 1024, &n) == SHOAL_ERR_ARG);

    shoal_tokenizer_destroy(&t);
    unlink(path);
    rmdir(dir);
    return check_done();
}
