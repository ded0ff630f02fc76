/*
 * C tests of the nexus C API against the mock upstream (URL in argv[1]).
 * Built with -Wall -Wextra -Werror and run under valgrind by scripts/test-c.sh.
 * Covers every function, the error paths (NULL arguments, bad UTF-8, bad JSON, unknown key,
 * upstream failure mid-stream, freeing a stream early) and threads sharing one hub.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nexus.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                     \
  do {                                                                                  \
    checks++;                                                                           \
    if (!(cond)) {                                                                      \
      failures++;                                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, nexus_last_error_message());                                       \
    }                                                                                   \
  } while (0)

#define CHECK_RC(call, want) CHECK((call) == (want))

static long json_int(const char *json, const char *field) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", field);
  const char *p = strstr(json, pat);
  return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* Copies the string value of `field` into buf. */
static int json_str(const char *json, const char *field, char *buf, size_t len) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", field);
  const char *p = strstr(json, pat);
  if (!p) return 0;
  p += strlen(pat);
  const char *end = strchr(p, '"');
  if (!end || (size_t)(end - p) >= len) return 0;
  memcpy(buf, p, (size_t)(end - p));
  buf[end - p] = '\0';
  return 1;
}

struct collect {
  int chunks;
  int stop_after;
};

static int on_chunk(const char *chunk_json, size_t len, void *user_data) {
  struct collect *c = user_data;
  if (chunk_json == NULL || strlen(chunk_json) != len) return 1;
  c->chunks++;
  return c->stop_after > 0 && c->chunks >= c->stop_after;
}

struct thread_arg {
  NexusHub *hub;
  const char *key;
  int ok;
};

static void *chat_thread(void *p) {
  struct thread_arg *a = p;
  for (int i = 0; i < 5; i++) {
    char *out = NULL;
    if (nexus_chat(a->hub, a->key, "{\"model\":\"echo\",\"messages\":[{\"role\":\"user\",\"content\":\"from a thread\"}]}",
                   &out) == NEXUS_OK &&
        strstr(out, "from a thread") != NULL)
      a->ok++;
    nexus_string_free(out);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MOCK_BASE_URL\n", argv[0]);
    return 2;
  }
  const char *mock = argv[1];
  char buf[4096];
  char *out = NULL;

  /* Version, names, free(NULL). */
  CHECK(strlen(nexus_version()) > 0);
  CHECK(strcmp(nexus_result_name(NEXUS_NOT_FOUND), "NEXUS_NOT_FOUND") == 0);
  CHECK(strcmp(nexus_result_name(NEXUS_OK), "NEXUS_OK") == 0);
  /* Out-of-range codes (say, from a newer header) get an answer, not undefined behaviour. */
  CHECK(strcmp(nexus_result_name(9999), "NEXUS_UNKNOWN") == 0);
  CHECK(strcmp(nexus_result_name(-1), "NEXUS_UNKNOWN") == 0);
  CHECK(strcmp(nexus_result_name(5), "NEXUS_UNKNOWN") == 0);
  CHECK(strcmp(nexus_result_name(NEXUS_INTERNAL), "NEXUS_INTERNAL") == 0);
  nexus_string_free(NULL);
  nexus_hub_free(NULL);
  nexus_chat_stream_free(NULL);

  /* Opening: NULL arguments, bad JSON, bad UTF-8, bad master key, then success. */
  NexusHub *hub = (NexusHub *)0x1;
  CHECK_RC(nexus_hub_open(NULL, NULL, &hub), NEXUS_NULL_ARGUMENT);
  CHECK(hub == NULL);
  CHECK(strstr(nexus_last_error_message(), "db_path") != NULL);
  CHECK_RC(nexus_hub_open(":memory:", NULL, NULL), NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_hub_open(":memory:", "{not json", &hub), NEXUS_INVALID_JSON);
  CHECK_RC(nexus_hub_open(":memory:", "{\"unknown_option\":1}", &hub), NEXUS_INVALID_JSON);
  CHECK_RC(nexus_hub_open("\xff\xfe", NULL, &hub), NEXUS_INVALID_UTF8);
  CHECK_RC(nexus_hub_open(":memory:", "{\"master_key\":\"short\"}", &hub), NEXUS_CONFIG);
  CHECK_RC(nexus_hub_open(":memory:", "{\"message_retention_days\":-1}", &hub), NEXUS_INVALID_JSON);
  CHECK(hub == NULL);
  CHECK_RC(nexus_hub_open(":memory:", "{\"worker_threads\":2,\"message_retention_days\":7}", &hub), NEXUS_OK);
  CHECK(hub != NULL);
  if (hub == NULL) return 1;

  /* Providers. */
  char provider_json[512];
  snprintf(provider_json, sizeof provider_json,
           "{\"name\":\"mock\",\"base_url\":\"%s\",\"api_key\":\"sk-c-test-secret\"}", mock);
  CHECK_RC(nexus_provider_create(hub, provider_json, &out), NEXUS_OK);
  long pid = out ? json_int(out, "id") : -1;
  CHECK(pid > 0);
  CHECK(out && strstr(out, "sk-c-test-secret") == NULL); /* only a hint comes back */
  nexus_string_free(out);
  CHECK_RC(nexus_provider_create(hub, provider_json, &out), NEXUS_CONFLICT);
  CHECK(out == NULL);
  CHECK_RC(nexus_provider_create(hub, "[1,2]", &out), NEXUS_INVALID_JSON);
  CHECK_RC(nexus_provider_create(NULL, provider_json, &out), NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_provider_create(hub, NULL, &out), NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_provider_create(hub, provider_json, NULL), NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_provider_update(hub, pid, "{\"description\":\"updated from C\"}", &out), NEXUS_OK);
  CHECK(out && strstr(out, "updated from C") != NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_provider_update(hub, 9999, "{}", &out), NEXUS_NOT_FOUND);
  CHECK_RC(nexus_provider_list(hub, &out), NEXUS_OK);
  CHECK(out && out[0] == '[' && strstr(out, "\"mock\"") != NULL);
  nexus_string_free(out);

  /* Models. */
  const char *models[] = {"echo", "chunks5", "chunks4-miderror", "chunks50-delay20", "fail404"};
  for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
    snprintf(buf, sizeof buf, "{\"name\":\"%s\"}", models[i]);
    CHECK_RC(nexus_model_create(hub, pid, buf, &out), NEXUS_OK);
    nexus_string_free(out);
  }
  CHECK_RC(nexus_model_create(hub, pid, "{\"name\":\"tmp\"}", &out), NEXUS_OK);
  long tmp_model = out ? json_int(out, "id") : -1;
  nexus_string_free(out);
  CHECK_RC(nexus_model_create(hub, 9999, "{\"name\":\"x\"}", &out), NEXUS_NOT_FOUND);
  CHECK_RC(nexus_model_list(hub, pid, &out), NEXUS_OK);
  CHECK(out && strstr(out, "chunks5") != NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_model_list(hub, 0, &out), NEXUS_OK);
  nexus_string_free(out);
  CHECK_RC(nexus_model_delete(hub, tmp_model), NEXUS_OK);
  CHECK_RC(nexus_model_delete(hub, tmp_model), NEXUS_NOT_FOUND);

  /* Keys. */
  char key[128] = {0};
  CHECK_RC(nexus_key_create(hub, "{\"name\":\"c-tests\"}", &out), NEXUS_OK);
  CHECK(out && json_str(out, "key", key, sizeof key));
  nexus_string_free(out);
  CHECK_RC(nexus_key_create(hub, "{\"name\":\"doomed\"}", &out), NEXUS_OK);
  long doomed = out ? json_int(out, "id") : -1;
  nexus_string_free(out);
  CHECK_RC(nexus_key_list(hub, &out), NEXUS_OK);
  CHECK(out && strstr(out, "c-tests") != NULL && strstr(out, key) == NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_key_delete(hub, doomed), NEXUS_OK);
  CHECK_RC(nexus_key_delete(hub, doomed), NEXUS_NOT_FOUND);

  /* Blocking chat: with the key, as the owner, and the error paths. */
  const char *req = "{\"model\":\"echo\",\"messages\":[{\"role\":\"user\",\"content\":\"hello from C\"}],"
                    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}";
  CHECK_RC(nexus_chat(hub, key, req, &out), NEXUS_OK);
  CHECK(out && strstr(out, "hello from C") != NULL && strstr(out, "mock_saw_tools") != NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_chat(hub, NULL, req, &out), NEXUS_OK);
  nexus_string_free(out);
  CHECK_RC(nexus_chat(hub, "nx-not-a-key", req, &out), NEXUS_AUTHENTICATION);
  CHECK(out == NULL);
  CHECK(strlen(nexus_last_error_message()) > 0);
  CHECK_RC(nexus_chat(hub, key, "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &out),
           NEXUS_NOT_FOUND);
  CHECK_RC(nexus_chat(hub, key, "{\"model\":\"echo\"}", &out), NEXUS_INVALID_REQUEST);
  CHECK_RC(nexus_chat(hub, key, "not json", &out), NEXUS_INVALID_REQUEST);
  CHECK_RC(nexus_chat(hub, key, "{\"model\":\"fail404\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &out),
           NEXUS_UPSTREAM);
  CHECK_RC(nexus_chat(hub, "\xc3\x28", req, &out), NEXUS_INVALID_UTF8);

  /* Cost and budgets: a priced model, a key with a total budget of $0.02, the chat meta with
     its cost, the spend query, the refusal past the budget, and repricing. */
  CHECK_RC(nexus_model_create(hub, pid, "{\"name\":\"priced\",\"input_price\":1000,\"output_price\":1000}", &out),
           NEXUS_OK);
  nexus_string_free(out);
  char budget_key[128] = {0};
  CHECK_RC(nexus_key_create(hub, "{\"name\":\"budget\",\"budget_usd\":0.02,\"budget_period\":\"total\"}", &out),
           NEXUS_OK);
  long budget_id = out ? json_int(out, "id") : -1;
  CHECK(out && json_str(out, "key", budget_key, sizeof budget_key));
  nexus_string_free(out);
  CHECK_RC(nexus_key_create(hub, "{\"name\":\"bad\",\"budget_usd\":-1}", &out), NEXUS_INVALID_REQUEST);
  const char *priced = "{\"model\":\"priced\",\"messages\":[{\"role\":\"user\",\"content\":\"two words\"}]}";
  char *meta = NULL;
  /* The mock answers 10 prompt and 2 completion tokens: $0.012 at $1000 per million. */
  CHECK_RC(nexus_chat_ex(hub, budget_key, priced, &out, &meta), NEXUS_OK);
  CHECK(out && strstr(out, "two words") != NULL);
  CHECK(meta && strstr(meta, "\"cost_usd\":0.012") != NULL && strstr(meta, "\"provider_name\":\"mock\"") != NULL);
  nexus_string_free(out);
  nexus_string_free(meta);
  CHECK_RC(nexus_chat_ex(hub, budget_key, priced, &out, NULL), NEXUS_OK); /* meta is optional */
  nexus_string_free(out);
  CHECK_RC(nexus_chat_ex(hub, budget_key, priced, &out, &meta), NEXUS_QUOTA_EXCEEDED);
  CHECK(out == NULL && meta == NULL);
  CHECK(strstr(nexus_last_error_message(), "budget") != NULL);
  CHECK_RC(nexus_key_spend(hub, budget_id, &out), NEXUS_OK);
  CHECK(out && strstr(out, "\"spent_usd\":0.024") != NULL && strstr(out, "\"budget_reached\":true") != NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_key_spend(hub, 9999, &out), NEXUS_NOT_FOUND);
  CHECK_RC(nexus_reprice(hub, "{\"dry_run\":true}", &out), NEXUS_OK);
  CHECK(out && strstr(out, "\"rows_changed\":0") != NULL && strstr(out, "\"dry_run\":true") != NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_reprice(hub, "{\"bogus\":1}", &out), NEXUS_INVALID_REQUEST);

  /* Embeddings: an embedding model, float and base64, and the refusals. */
  CHECK_RC(nexus_model_create(hub, pid, "{\"name\":\"emb\",\"kind\":\"embedding\"}", &out), NEXUS_OK);
  CHECK(out && strstr(out, "\"kind\":\"embedding\"") != NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_embeddings(hub, key, "{\"model\":\"emb\",\"input\":[\"one two three\",\"four\"],\"dimensions\":4}", &out),
           NEXUS_OK);
  CHECK(out && strstr(out, "\"object\":\"list\"") != NULL && strstr(out, "\"index\":1") != NULL);
  CHECK(out && json_int(out, "prompt_tokens") == 4);
  nexus_string_free(out);
  CHECK_RC(nexus_embeddings(hub, NULL, "{\"model\":\"emb\",\"input\":[1,2,3],\"encoding_format\":\"base64\"}", &out),
           NEXUS_OK);
  char b64[256];
  CHECK(out && json_str(out, "embedding", b64, sizeof b64) && strlen(b64) > 0);
  nexus_string_free(out);
  CHECK_RC(nexus_embeddings(hub, key, "{\"model\":\"echo\",\"input\":\"x\"}", &out), NEXUS_INVALID_REQUEST);
  CHECK(out == NULL);
  CHECK(strstr(nexus_last_error_message(), "chat model") != NULL);
  CHECK_RC(nexus_chat(hub, key, "{\"model\":\"emb\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &out),
           NEXUS_INVALID_REQUEST);
  CHECK(strstr(nexus_last_error_message(), "embedding model") != NULL);
  CHECK_RC(nexus_embeddings(hub, key, "{\"model\":\"emb\",\"input\":\"\"}", &out), NEXUS_INVALID_REQUEST);
  CHECK_RC(nexus_embeddings(hub, key, "not json", &out), NEXUS_INVALID_REQUEST);
  CHECK_RC(nexus_embeddings(hub, "nx-not-a-key", "{\"model\":\"emb\",\"input\":\"x\"}", &out), NEXUS_AUTHENTICATION);
  CHECK_RC(nexus_embeddings(hub, key, NULL, &out), NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_embeddings(hub, key, "{\"model\":\"emb\",\"input\":\"x\"}", NULL), NEXUS_NULL_ARGUMENT);

  /* Streaming: pull to the end, then the summary. */
  NexusStream *s = NULL;
  CHECK_RC(nexus_chat_stream_open(hub, key, "{\"model\":\"chunks5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &s),
           NEXUS_OK);
  CHECK_RC(nexus_chat_stream_summary(s, &out), NEXUS_NOT_FOUND);
  int chunks = 0;
  char text[256] = {0};
  for (;;) {
    char *chunk = NULL;
    NexusResult rc = nexus_chat_stream_next(s, &chunk);
    CHECK_RC(rc, NEXUS_OK);
    if (rc != NEXUS_OK || chunk == NULL) break;
    char piece[64];
    if (json_str(chunk, "content", piece, sizeof piece)) strncat(text, piece, sizeof text - strlen(text) - 1);
    chunks++;
    nexus_string_free(chunk);
  }
  CHECK(chunks >= 7);
  CHECK(strcmp(text, "tok0 tok1 tok2 tok3 tok4 ") == 0);
  char *after = (char *)0x1;
  CHECK_RC(nexus_chat_stream_next(s, &after), NEXUS_OK);
  CHECK(after == NULL);
  CHECK_RC(nexus_chat_stream_summary(s, &out), NEXUS_OK);
  CHECK(out && json_int(out, "completion_tokens") == 5);
  nexus_string_free(out);
  nexus_chat_stream_free(s);

  /* Streaming errors: open failures, an upstream failure mid-stream, NULLs. */
  CHECK_RC(nexus_chat_stream_open(hub, "nx-bad", "{\"model\":\"chunks5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &s), NEXUS_AUTHENTICATION);
  CHECK(s == NULL);
  CHECK_RC(nexus_chat_stream_open(hub, key, "{\"model\":\"chunks5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL),
           NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_chat_stream_next(NULL, &out), NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_chat_stream_open(hub, key,
                                  "{\"model\":\"chunks4-miderror\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &s),
           NEXUS_OK);
  NexusResult last = NEXUS_OK;
  for (int i = 0; i < 100; i++) {
    char *chunk = NULL;
    last = nexus_chat_stream_next(s, &chunk);
    if (last != NEXUS_OK || chunk == NULL) break;
    nexus_string_free(chunk);
  }
  CHECK_RC(last, NEXUS_UPSTREAM);
  CHECK(strstr(nexus_last_error_message(), "mid-stream") != NULL);
  CHECK_RC(nexus_chat_stream_next(s, &out), NEXUS_OK); /* one end only */
  CHECK(out == NULL);
  nexus_chat_stream_free(s);

  /* Freeing a stream early cancels it. */
  CHECK_RC(nexus_chat_stream_open(hub, key,
                                  "{\"model\":\"chunks50-delay20\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &s),
           NEXUS_OK);
  char *first = NULL;
  CHECK_RC(nexus_chat_stream_next(s, &first), NEXUS_OK);
  CHECK(first != NULL);
  nexus_string_free(first);
  nexus_chat_stream_free(s);

  /* The callback convenience, to the end and stopped early. */
  struct collect all = {0, 0}, some = {0, 2};
  CHECK_RC(nexus_chat_stream_each(hub, key, "{\"model\":\"chunks5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                                  on_chunk, &all),
           NEXUS_OK);
  CHECK(all.chunks >= 7);
  CHECK_RC(nexus_chat_stream_each(hub, key,
                                  "{\"model\":\"chunks50-delay20\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                                  on_chunk, &some),
           NEXUS_OK);
  CHECK(some.chunks == 2);
  CHECK_RC(nexus_chat_stream_each(hub, key, "{}", NULL, NULL), NEXUS_NULL_ARGUMENT);

  /* Token counting. */
  NexusTokenCount tc;
  memset(&tc, 0, sizeof tc);
  CHECK_RC(nexus_count_text(hub, "gpt-4o", "hello world", &tc), NEXUS_OK);
  CHECK(tc.tokens == 2 && tc.method == NEXUS_TOKENS_EXACT && strcmp(tc.encoding, "o200k_base") == 0);
  CHECK_RC(nexus_count_text(hub, "gpt-4", "hello world", &tc), NEXUS_OK);
  CHECK(tc.tokens == 2 && strcmp(tc.encoding, "cl100k_base") == 0);
  CHECK_RC(nexus_count_text(hub, "some-local-model", "hello world", &tc), NEXUS_OK);
  CHECK(tc.method == NEXUS_TOKENS_ESTIMATE && tc.encoding == NULL && tc.tokens > 0);
  CHECK_RC(nexus_count_messages(hub, "gpt-4", "[{\"role\":\"user\",\"content\":\"hello world\"}]", &tc), NEXUS_OK);
  CHECK(tc.tokens == 2 + 3 + 1 + 3); /* text + per-message overhead + role + reply priming */
  CHECK_RC(nexus_count_messages(hub, "gpt-4", "{\"role\":1}", &tc), NEXUS_INVALID_JSON);
  CHECK_RC(nexus_count_text(hub, "gpt-4", NULL, &tc), NEXUS_NULL_ARGUMENT);
  CHECK_RC(nexus_count_text(hub, "gpt-4", "x", NULL), NEXUS_NULL_ARGUMENT);

  /* Threads sharing the hub. */
  pthread_t th[4];
  struct thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (struct thread_arg){hub, key, 0};
    pthread_create(&th[i], NULL, chat_thread, &args[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(args[i].ok == 5);
  }

  /* Stats. */
  CHECK_RC(nexus_stats_flush(hub), NEXUS_OK);
  CHECK_RC(nexus_stats_summary(hub, &out), NEXUS_OK);
  CHECK(out && strstr(out, "\"total_rounds\"") != NULL && json_int(out, "requests") >= 30);
  nexus_string_free(out);
  CHECK_RC(nexus_stats_timeseries(hub, "{\"bucket\":\"hour\",\"group_by\":\"model\",\"since\":0}", &out), NEXUS_OK);
  CHECK(out && strstr(out, "\"points\"") != NULL && strstr(out, "chunks5") != NULL);
  nexus_string_free(out);
  CHECK_RC(nexus_stats_timeseries(hub, "{\"bucket\":\"week\"}", &out), NEXUS_INVALID_JSON);
  CHECK_RC(nexus_stats_summary(NULL, &out), NEXUS_NULL_ARGUMENT);

  /* Deleting the provider, then the hub. */
  CHECK_RC(nexus_provider_delete(hub, pid), NEXUS_OK);
  CHECK_RC(nexus_provider_delete(hub, pid), NEXUS_NOT_FOUND);
  nexus_hub_free(hub);

  printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
