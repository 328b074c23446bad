/*
 * embedapi.h - the client of an OpenAI-compatible embeddings endpoint
 * (POST BASE/embeddings, {"model", "input": [...]}), such as a local
 * Ollama or text-embeddings-inference. Blocking libcurl, one easy handle
 * kept for connection reuse: it runs in the `scrim index` command and on
 * the gateway's context worker thread, never on the event loop. This file
 * owns the request and the checks on the answer; struct embedder
 * (embed.c) is its only user.
 */
#ifndef SCRIM_EMBEDAPI_H
#define SCRIM_EMBEDAPI_H

#include "scrim.h"

struct embedapi;

/* Strings are copied; api_key (NULL: none) is wiped on free. */
struct embedapi *embedapi_new(const char *url, const char *model,
                              const char *api_key, long timeout_ms,
                              size_t batch, bool verbose_errors);
void embedapi_free(struct embedapi *a);

/*
 * Vectors for texts[0..n) into out (n * *dim floats), normalised to unit
 * length, in requests of at most batch texts. *dim 0: take the dimension
 * of the first answer and set *dim; else every vector must have *dim.
 * out must hold n * EMBED_MAX_DIM floats when *dim is 0. 0, or -1 with a
 * message in err that names the endpoint and never quotes a text sent.
 */
int embedapi_run(struct embedapi *a, const char *const *texts,
                 const size_t *lens, size_t n, float *out, unsigned *dim,
                 char *err, size_t errlen) SCRIM_MUSTCHECK;

#endif
