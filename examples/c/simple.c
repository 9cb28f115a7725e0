/* Answer one question with a model, through wgmoe's C API.
 *
 *   cargo build --release -p wgmoe-capi
 *   cc examples/c/simple.c -Iinclude -Ltarget/release -lwgmoe -Wl,-rpath,target/release -o simple
 *   ./simple MODEL "What is the capital of France?"
 */
#include <stdio.h>
#include <string.h>

#include "wgmoe.h"

/* Print each piece of the reply as it comes. */
static int32_t print_token(void *user, uint32_t id, const char *text, size_t len) {
    (void)user;
    (void)id;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* nonzero would stop the reply */
}

static int fail(const char *what, WgmoeStatus status) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, wgmoe_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: simple MODEL PROMPT\n");
        return 2;
    }
    WgmoeModel *model = NULL;
    WgmoeStatus s = wgmoe_model_open(argv[1], NULL, &model);
    if (s != WGMOE_STATUS_OK) return fail("opening the model", s);

    WgmoeGenerateOptions opts = wgmoe_generate_options_default();
    opts.max_tokens = 256;
    WgmoeStopReason why;
    WgmoeChat *chat = NULL;
    s = wgmoe_chat_new(model, 0, NULL, &chat);
    if (s == WGMOE_STATUS_OK) {
        s = wgmoe_chat_send(chat, argv[2], &opts, print_token, NULL, &why);
        wgmoe_chat_free(chat);
    } else if (s == WGMOE_STATUS_UNSUPPORTED) {
        /* No chat template: continue the prompt as text. */
        WgmoeSession *session = NULL;
        s = wgmoe_session_new(model, 0, &session);
        if (s == WGMOE_STATUS_OK) s = wgmoe_session_generate(session, argv[2], &opts, print_token, NULL, &why);
        wgmoe_session_free(session);
    }
    printf("\n");
    wgmoe_model_free(model);
    if (s != WGMOE_STATUS_OK) return fail("generating", s);
    return 0;
}
