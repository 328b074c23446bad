/*
 * embed.h - text -> a fixed-size, L2-normalised float vector. Two kinds:
 * the built-in offline embedder, with no model to download (hashed words,
 * word bigrams and character trigrams: the "hashing trick"), and an
 * OpenAI-compatible embeddings endpoint (embedapi.c) such as a local
 * Ollama or text-embeddings-inference. This file owns the built-in
 * features and their weights, and struct embedder, which hides which kind
 * a caller has; the index (vindex.c) owns how vectors are stored,
 * quantised and compared. docs/index.md says what the built-in embedder
 * is good and bad at.
 */
#ifndef SCRIM_EMBED_H
#define SCRIM_EMBED_H

#include "scrim.h"

/* The built-in embedder's name, as recorded in an index. */
#define EMBED_HASH_NAME "scrim-hash"
/* An OpenAI-compatible endpoint's, with the model beside it. */
#define EMBED_OPENAI_NAME "openai"
/* Bumped whenever a change would move an existing vector: an index built
 * by another version is refused rather than silently mixed. */
#define EMBED_HASH_VERSION 1
#define EMBED_DEFAULT_DIM 512
#define EMBED_MIN_DIM 64
#define EMBED_MAX_DIM 4096

#define EMBED_MAX_MODEL 128

/*
 * Which embedder made a vector. Two vectors are comparable only when all
 * four fields are equal; an index stores them and refuses any other.
 */
struct embed_spec {
	char name[32];          /* EMBED_HASH_NAME or EMBED_OPENAI_NAME */
	char model[EMBED_MAX_MODEL]; /* the endpoint's model; "" built in */
	unsigned dim;           /* floats per vector */
	unsigned version;       /* built in: EMBED_HASH_VERSION; else 0 */
};

/* Room for embed_spec_format's text. */
#define EMBED_SPEC_TEXT (EMBED_MAX_MODEL + 64)

/* The built-in embedder with dim dimensions (a power of two between
 * EMBED_MIN_DIM and EMBED_MAX_DIM); false when dim is not one. */
bool embed_hash_spec(unsigned dim, struct embed_spec *out) SCRIM_MUSTCHECK;

/* True when spec is the built-in embedder, of any version. */
bool embed_is_hash(const struct embed_spec *spec);

/* True when this build can compute vectors for spec without an endpoint
 * (the built-in embedder, this version). */
bool embed_supported(const struct embed_spec *spec);

/* True when vectors of a and b are comparable. */
bool embed_spec_equal(const struct embed_spec *a, const struct embed_spec *b);

/* "scrim-hash/512 v1" or "openai:nomic-embed-text/768", for messages;
 * len >= EMBED_SPEC_TEXT holds any. */
void embed_spec_format(const struct embed_spec *spec, char *out, size_t len);

/*
 * Write spec->dim floats for the n bytes at s into out (caller-owned),
 * normalised to unit length; all zeros when the text has no features
 * (empty, punctuation only, only stop words). spec must be supported.
 * Pure function of its input: safe on any thread.
 */
void embed_text(const struct embed_spec *spec, const char *s, size_t n,
                float *out);

/* Tokenising shared with the lexical query: true for a stop word (lower
 * case ASCII, n bytes) that carries no meaning on its own. */
bool embed_is_stopword(const char *w, size_t n);

/* ---- struct embedder: either kind, behind one interface ------------------ */

enum embed_kind { EMBED_BUILTIN, EMBED_OPENAI };

/* How to reach an embedder ([index] in scrim.conf). The strings are
 * copied by embedder_new. */
struct embed_conf {
	enum embed_kind kind;
	unsigned dim;           /* built in: dimensions of a new index */
	const char *url;        /* endpoint: base URL; "/embeddings" is
	                         * appended */
	const char *model;      /* endpoint: the "model" of each request */
	const char *api_key;    /* endpoint: Bearer token; NULL none */
	long timeout_ms;        /* endpoint: one request, connecting included */
	size_t batch;           /* endpoint: texts per request */
	bool verbose_errors;    /* endpoint: quote its own error message
	                         * (the CLI; never the gateway, whose log must
	                         * not hold what an endpoint echoes back) */
};

struct embedder;

/* A new embedder; nothing is contacted yet. Owned by the caller, used by
 * one thread at a time. */
struct embedder *embedder_new(const struct embed_conf *c);
void embedder_free(struct embedder *e);
bool embedder_is_builtin(const struct embedder *e);

/*
 * The spec of the vectors e makes, in out. An endpoint's dimension is
 * what its answers hold: unknown (0) until its first answer, unless
 * probe, which asks now with one short text. 0, or -1 with a message
 * in err.
 */
int embedder_spec(struct embedder *e, bool probe, struct embed_spec *out,
                  char *err, size_t errlen) SCRIM_MUSTCHECK;

/* An endpoint whose dimension is not known yet takes dim, from an index
 * it built: every answer is then held to it. */
void embedder_expect_dim(struct embedder *e, unsigned dim);

/*
 * Vectors for texts[0..n) (lens[i] bytes each) into out, n * dim floats,
 * each of unit length (or zero); dim is embedder_spec's, which must be
 * known (probe, or embedder_expect_dim). An endpoint gets
 * them in requests of at most conf.batch texts. 0, or -1 with a message
 * in err (nothing usable in out).
 */
int embedder_run(struct embedder *e, const char *const *texts,
                 const size_t *lens, size_t n, float *out, char *err,
                 size_t errlen) SCRIM_MUSTCHECK;

#endif
