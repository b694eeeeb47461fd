/*
 * Chat templates: turning a conversation into the token sequence a model was
 * trained on. The families are those llama.cpp, Ollama and exo users meet:
 * Llama 2, Llama 3, ChatML (Qwen and many others), Mistral, Gemma and Phi-3.
 * A model's family is detected from its tokenizer.chat_template (a Jinja
 * text; we recognise its markers, we do not run Jinja), or named by the
 * user. A model without a template (like stories260K) gets plain
 * continuation: the messages' contents are joined as text.
 *
 * Rendering produces tokens directly: special markers (<|im_start|>, ...)
 * are looked up as single tokens, never tokenized as text, so a user who
 * types "<|im_end|>" cannot forge a turn boundary.
 *
 * THREAD SAFETY: pure functions.
 */
#ifndef SHOAL_CLIENT_CHAT_H
#define SHOAL_CLIENT_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "client/tokenizer.h"

typedef enum shoal_chat_template {
    SHOAL_CHAT_NONE = 0,   /* plain continuation */
    SHOAL_CHAT_LLAMA2 = 1,
    SHOAL_CHAT_LLAMA3 = 2,
    SHOAL_CHAT_CHATML = 3,
    SHOAL_CHAT_MISTRAL = 4,
    SHOAL_CHAT_GEMMA = 5,
    SHOAL_CHAT_PHI3 = 6,
    SHOAL_CHAT__COUNT
} shoal_chat_template;

typedef enum shoal_chat_role {
    SHOAL_ROLE_SYSTEM = 0,
    SHOAL_ROLE_USER = 1,
    SHOAL_ROLE_ASSISTANT = 2,
} shoal_chat_role;

typedef struct shoal_chat_msg {
    int role;              /* shoal_chat_role */
    const char *content;   /* UTF-8 */
} shoal_chat_msg;

/* "none", "llama2", "llama3", "chatml", "mistral", "gemma", "phi3". */
const char *shoal_chat_template_name(int tmpl);
/* The template named `name` (also "qwen" for chatml, "phi" for phi3), or -1. */
int shoal_chat_template_from_name(const char *name);
/* The family of a Jinja chat template text; SHOAL_CHAT_NONE when NULL or
 * not recognised. */
int shoal_chat_template_detect(const char *jinja);
/* Role from "system" / "user" / "assistant", or -1. */
int shoal_chat_role_from_name(const char *name);

/* Renders msgs[0..n) with template tmpl into out[0..max), *n_out tokens.
 * add_generation_prompt appends the opening of the assistant's turn.
 * Returns 0, SHOAL_ERR_RANGE (more than max tokens; *n_out says how many
 * were needed), SHOAL_ERR_UNSUPPORTED (the vocabulary lacks a marker the
 * template needs) or SHOAL_ERR_ARG (a bad role, or a role order the
 * template cannot express). */
int shoal_chat_render(int tmpl, const shoal_tokenizer *tok, const shoal_chat_msg *msgs, int n,
                      bool add_generation_prompt, int32_t *out, int max, int *n_out);

/* The token that ends an assistant turn for tmpl (e.g. <|im_end|>), or -1
 * when the template relies on the model's end token alone. */
int32_t shoal_chat_end_token(int tmpl, const shoal_tokenizer *tok);

#endif
