/*
 * embed.h - the built-in offline embedder: text -> a fixed-size,
 * L2-normalised float vector, with no model to download. Features are
 * hashed words, word bigrams and character trigrams (the "hashing trick").
 * This file owns the features and their weights; the index (vindex.c)
 * owns how vectors are stored, quantised and compared. docs/index.md says
 * what this embedder is good and bad at.
 */
#ifndef SCRIM_EMBED_H
#define SCRIM_EMBED_H

#include "scrim.h"

/* The built-in embedder's name, as recorded in an index. */
#define EMBED_HASH_NAME "scrim-hash"
/* Bumped whenever a change would move an existing vector: an index built
 * by another version is refused rather than silently mixed. */
#define EMBED_HASH_VERSION 1
#define EMBED_DEFAULT_DIM 512
#define EMBED_MIN_DIM 64
#define EMBED_MAX_DIM 4096

/*
 * Which embedder made a vector. Two vectors are comparable only when all
 * three fields are equal; an index stores them and refuses any other.
 */
struct embed_spec {
	char name[32];
	unsigned dim;           /* floats per vector */
	unsigned version;
};

/* The built-in embedder with dim dimensions (a power of two between
 * EMBED_MIN_DIM and EMBED_MAX_DIM); false when dim is not one. */
bool embed_hash_spec(unsigned dim, struct embed_spec *out) SCRIM_MUSTCHECK;

/* True when this build can compute vectors for spec. */
bool embed_supported(const struct embed_spec *spec);

/* "scrim-hash/512 v1", for messages. */
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

#endif
