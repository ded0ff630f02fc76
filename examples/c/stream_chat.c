/*
 * NexusAI Hub from C: open a hub, add a provider and a model, stream a chat, count tokens and
 * print the usage totals.
 *
 *   make -C examples/c            # builds stream_chat (shared) and stream_chat_static
 *   ./examples/c/stream_chat http://127.0.0.1:PORT/v1 [model] [db]
 *
 * The base URL is any OpenAI-compatible upstream (the tests use nexus-mock-upstream). The
 * upstream key comes from $UPSTREAM_API_KEY (default "sk-example").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nexus.h"

static int check(NexusResult rc, const char *what) {
  if (rc != NEXUS_OK) {
    fprintf(stderr, "%s failed: %s: %s\n", what, nexus_result_name(rc), nexus_last_error_message());
    return 1;
  }
  return 0;
}

/* Prints the "content" of a chunk's first delta, if it has one. */
static void print_delta(const char *chunk) {
  const char *p = strstr(chunk, "\"content\":\"");
  if (!p) return;
  p += strlen("\"content\":\"");
  for (; *p && *p != '"'; p++) {
    if (*p == '\\' && p[1]) p++;
    putchar(*p);
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s BASE_URL [model] [db]\n", argv[0]);
    return 2;
  }
  const char *base_url = argv[1];
  const char *model = argc > 2 ? argv[2] : "gpt-4o-mini";
  const char *db = argc > 3 ? argv[3] : ":memory:";
  const char *upstream_key = getenv("UPSTREAM_API_KEY") ? getenv("UPSTREAM_API_KEY") : "sk-example";
  printf("nexus %s\n", nexus_version());

  NexusHub *hub = NULL;
  if (check(nexus_hub_open(db, NULL, &hub), "open")) return 1;

  char json[1024];
  char *out = NULL;
  snprintf(json, sizeof json, "{\"name\":\"example\",\"base_url\":\"%s\",\"api_key\":\"%s\"}", base_url, upstream_key);
  int rc = check(nexus_provider_create(hub, json, &out), "add provider");
  long provider_id = (!rc && strstr(out, "\"id\":")) ? strtol(strstr(out, "\"id\":") + 5, NULL, 10) : 0;
  nexus_string_free(out);
  if (rc) goto done;

  snprintf(json, sizeof json, "{\"name\":\"%s\"}", model);
  if ((rc = check(nexus_model_create(hub, provider_id, json, &out), "add model"))) goto done;
  nexus_string_free(out);

  /* Stream a chat as the hub's owner (NULL key); pass a client key to apply its scope and limits. */
  const char *question = "Tell me about NexusAI Hub in one sentence.";
  snprintf(json, sizeof json, "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", model, question);
  NexusStream *stream = NULL;
  if ((rc = check(nexus_chat_stream_open(hub, NULL, json, &stream), "stream"))) goto done;
  printf("assistant: ");
  for (;;) {
    char *chunk = NULL;
    NexusResult r = nexus_chat_stream_next(stream, &chunk);
    if (r != NEXUS_OK) {
      rc = check(r, "\nstream");
      break;
    }
    if (chunk == NULL) break; /* the end */
    print_delta(chunk);
    nexus_string_free(chunk);
  }
  printf("\n");
  if (nexus_chat_stream_summary(stream, &out) == NEXUS_OK) {
    printf("stream summary: %s\n", out);
    nexus_string_free(out);
  }
  nexus_chat_stream_free(stream);

  NexusTokenCount count;
  if (!check(nexus_count_text(hub, model, question, &count), "count tokens"))
    printf("question: %llu tokens (%s%s)\n", (unsigned long long)count.tokens,
           count.method == NEXUS_TOKENS_EXACT ? "exact, " : "estimate", count.encoding ? count.encoding : "");

  if (!check(nexus_stats_summary(hub, &out), "stats")) {
    printf("stats: %s\n", out);
    nexus_string_free(out);
  }

done:
  nexus_hub_free(hub);
  return rc;
}
