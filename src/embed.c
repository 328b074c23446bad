/*
 * embed.c - the built-in hashing embedder (see embed.h). A text becomes a
 * bag of features: each word (ASCII lower-cased, split at non-alphanumeric
 * bytes and at camelCase humps, stop words dropped), each pair of adjacent
 * kept words, and each character trigram of a kept word with its
 * boundaries marked. Every feature is hashed to one dimension and a sign
 * (signed hashing cancels collisions on average instead of piling them
 * up), weighted by its kind and by 1 + ln(term frequency), and the vector
 * is normalised to unit length. No state, no allocation shared between
 * calls: any thread may call it.
 */
#include "embed.h"

#include "alloc.h"
#include "digest.h"
#include "embedapi.h"

#include <openssl/crypto.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Weights by feature kind. Words carry meaning; bigrams catch phrases
 * ("reverse proxy" is not "proxy" plus "reverse"); trigrams catch
 * morphology, typos and identifiers, so they are many and each is light.
 * A word's trigrams share one budget so that long words do not drown
 * short ones. */
#define W_WORD 1.0f
#define W_BIGRAM 0.7f
#define W_TRIGRAM_PER_WORD 0.9f

/* Features longer than this are truncated: base64 blobs and minified code
 * would otherwise make one "word" per kilobyte. */
#define EMBED_MAX_WORD 48

/* Seeds that keep the three feature kinds apart in the hash space. */
#define SEED_WORD 0x9e3779b97f4a7c15ULL
#define SEED_BIGRAM 0xc2b2ae3d27d4eb4fULL
#define SEED_TRIGRAM 0x165667b19e3779f9ULL

/* English function words: in a question they say nothing about which
 * passage answers it ("how do I ..."), and in a document they would make
 * every vector alike. The lexical side (FTS5) ranks them down by IDF on
 * its own; this side has no corpus statistics, so it drops them. The list
 * is short on purpose: particles such as "over", "down", "up" and "out"
 * carry meaning in technical text ("fail over", "shut down"), and a
 * longer list (NLTK's) lowered recall on the test questions. Sorted for
 * bsearch. */
static const char *const stopwords[] = {
	"a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as",
	"at", "be", "been", "being", "but", "by", "can", "could", "did", "do",
	"does", "doing", "for", "from", "had", "has", "have", "having", "he", "her",
	"here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it",
	"its", "just", "me", "my", "of", "on", "or", "our", "she", "should", "so",
	"some", "such", "than", "that", "the", "their", "them", "then", "there",
	"these", "they", "this", "those", "to", "too", "us", "was", "we", "were",
	"what", "when", "where", "which", "while", "who", "whom", "why", "will",
	"with", "would", "you", "your",
};

static int
cmp_word(const void *key, const void *elem)
{
	return strcmp((const char *)key, *(const char *const *)elem);
}

bool
embed_is_stopword(const char *w, size_t n)
{
	char tmp[16];

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, w, n);
	tmp[n] = '\0';
	return bsearch(tmp, stopwords, SCRIM_ARRAY_LEN(stopwords),
	               sizeof(stopwords[0]), cmp_word) != NULL;
}

bool
embed_hash_spec(unsigned dim, struct embed_spec *out)
{
	if (dim < EMBED_MIN_DIM || dim > EMBED_MAX_DIM || (dim & (dim - 1)))
		return false;
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", EMBED_HASH_NAME);
	out->dim = dim;
	out->version = EMBED_HASH_VERSION;
	return true;
}

bool
embed_is_hash(const struct embed_spec *spec)
{
	return strcmp(spec->name, EMBED_HASH_NAME) == 0;
}

bool
embed_supported(const struct embed_spec *spec)
{
	struct embed_spec want;

	return embed_hash_spec(spec->dim, &want) &&
	       strcmp(spec->name, want.name) == 0 &&
	       spec->version == want.version;
}

bool
embed_spec_equal(const struct embed_spec *a, const struct embed_spec *b)
{
	return strcmp(a->name, b->name) == 0 &&
	       strcmp(a->model, b->model) == 0 && a->dim == b->dim &&
	       a->version == b->version;
}

void
embed_spec_format(const struct embed_spec *spec, char *out, size_t len)
{
	if (embed_is_hash(spec) || spec->model[0] == '\0')
		snprintf(out, len, "%s/%u v%u", spec->name, spec->dim,
		         spec->version);
	else if (spec->dim == 0)
		snprintf(out, len, "%s:%s", spec->name, spec->model);
	else
		snprintf(out, len, "%s:%s/%u", spec->name, spec->model,
		         spec->dim);
}

/* ---- hashing ---------------------------------------------------------------- */

/* splitmix64's finaliser: FNV alone leaves the low bits, which pick the
 * dimension, poorly mixed for short inputs. */
static uint64_t
mix64(uint64_t h)
{
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return h;
}

static uint64_t
hash_bytes(uint64_t seed, const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return mix64(h);
}

/* ---- the feature table: counts repeats so weights grow sub-linearly --------- */

struct feat {
	uint64_t key;           /* 0 = empty slot */
	float w;                /* weight of one occurrence */
	uint32_t tf;
};

struct feats {
	struct feat *v;
	size_t cap;             /* power of two */
	size_t n;
	float *out;             /* the vector, for overflow */
	unsigned mask;          /* dim - 1 */
};

static void
vec_add(float *out, unsigned mask, uint64_t key, float w)
{
	/* Low bits pick the dimension, the top bit the sign. */
	out[key & mask] += (key >> 63) ? -w : w;
}

static void
feat_add(struct feats *f, uint64_t key, float w)
{
	size_t i;

	if (key == 0)
		key = 1;
	/* Past 3/4 full, probing gets long: count no more repeats. */
	if (f->n * 4 >= f->cap * 3) {
		vec_add(f->out, f->mask, key, w);
		return;
	}
	for (i = key & (f->cap - 1);; i = (i + 1) & (f->cap - 1)) {
		if (f->v[i].key == key) {
			f->v[i].tf++;
			return;
		}
		if (f->v[i].key == 0)
			break;
	}
	f->v[i].key = key;
	f->v[i].w = w;
	f->v[i].tf = 1;
	f->n++;
}

/* 1 + ln(tf), without libm: a repeated term counts, but ten repeats are
 * worth about three and a half occurrences, not ten. */
static float
tf_weight(uint32_t tf)
{
	static const float t[] = {
		0.0f,       1.0f,       1.6931472f, 2.0986123f, 2.3862944f,
		2.6094379f, 2.7917595f, 2.9459102f, 3.0794415f, 3.1972246f,
		3.3025851f, 3.3978953f, 3.4849066f, 3.5649493f, 3.6390573f,
		3.7080502f, 3.7725887f,
	};
	return tf < SCRIM_ARRAY_LEN(t) ? t[tf] : t[SCRIM_ARRAY_LEN(t) - 1];
}

/* Square root by Newton's method, so that the library needs no libm. The
 * seed halves the exponent; six steps reach full double precision. */
static double
sqrt_pos(double x)
{
	uint64_t bits;
	double r;

	if (!(x > 0))
		return 0;
	memcpy(&bits, &x, sizeof(bits));
	bits = (bits >> 1) + (0x3ffULL << 51);
	memcpy(&r, &bits, sizeof(r));
	for (int i = 0; i < 6; i++)
		r = 0.5 * (r + x / r);
	return r;
}

/* ---- words ------------------------------------------------------------------ */

static bool
is_word_byte(unsigned char c)
{
	/* Bytes of multi-byte UTF-8 sequences count as letters: words in
	 * other scripts stay whole (though their case is not folded). */
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c >= 0x80;
}

static void
add_trigrams(struct feats *f, const char *w, size_t n)
{
	char t[EMBED_MAX_WORD + 2];
	size_t ntri;
	float wt;

	if (n < 3)
		return; /* the word feature says it all */
	/* "^word$": the boundaries make prefixes and suffixes features of
	 * their own ("^con", "ing$"). */
	t[0] = '^';
	memcpy(t + 1, w, n);
	t[n + 1] = '$';
	ntri = n; /* (n + 2) - 2 */
	wt = W_TRIGRAM_PER_WORD / (float)sqrt_pos((double)ntri);
	for (size_t i = 0; i < ntri; i++)
		feat_add(f, hash_bytes(SEED_TRIGRAM, t + i, 3), wt);
}

static void
extract(struct feats *f, const char *s, size_t n)
{
	char w[EMBED_MAX_WORD];
	uint64_t prev = 0;      /* hash of the previous kept word; 0 none */
	size_t i = 0;

	while (i < n) {
		size_t wn = 0;
		uint64_t h;

		while (i < n && !is_word_byte((unsigned char)s[i]))
			i++;
		if (i >= n)
			break;
		for (; i < n && is_word_byte((unsigned char)s[i]); i++) {
			unsigned char c = (unsigned char)s[i];

			/* camelCase: a capital after a small letter starts a
			 * new word (maxBodySize -> max body size). */
			if (wn > 0 && c >= 'A' && c <= 'Z' && s[i - 1] >= 'a' &&
			    s[i - 1] <= 'z')
				break;
			if (wn < sizeof(w))
				w[wn++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
		}
		if (embed_is_stopword(w, wn))
			continue;
		h = hash_bytes(SEED_WORD, w, wn);
		feat_add(f, h, W_WORD);
		if (prev != 0)
			feat_add(f, mix64(prev * 31 + h + SEED_BIGRAM), W_BIGRAM);
		prev = h;
		add_trigrams(f, w, wn);
	}
}

void
embed_text(const struct embed_spec *spec, const char *s, size_t n,
           float *out)
{
	struct feats f;
	double norm = 0;
	size_t want = 64;

	memset(out, 0, sizeof(float) * spec->dim);
	/* About two features per input byte at most; beyond 64k slots the
	 * rest are added without counting repeats (feat_add). */
	while (want < 2 * n + 16 && want < 65536)
		want *= 2;
	f.v = xcalloc(want, sizeof(*f.v));
	f.cap = want;
	f.n = 0;
	f.out = out;
	f.mask = spec->dim - 1;
	extract(&f, s, n);
	for (size_t i = 0; i < f.cap; i++)
		if (f.v[i].key != 0)
			vec_add(out, f.mask, f.v[i].key,
			        f.v[i].w * tf_weight(f.v[i].tf));
	free(f.v);
	for (unsigned d = 0; d < spec->dim; d++)
		norm += (double)out[d] * out[d];
	if (norm > 0) {
		float inv = (float)(1.0 / sqrt_pos(norm));
		for (unsigned d = 0; d < spec->dim; d++)
			out[d] *= inv;
	}
}

/* ---- struct embedder ---------------------------------------------------- */

struct embedder {
	struct embed_spec spec; /* an endpoint's dim is 0 until known */
	struct embedapi *api;   /* NULL: the built-in embedder */
	/* The last single text an endpoint embedded, by its SHA-256 (not
	 * the text: a prompt is kept no longer than its request), and its
	 * vector: a request searching several indexes with one endpoint
	 * asks it once. */
	bool have_last;
	unsigned char last_sha[32];
	float *last_vec;
};

struct embedder *
embedder_new(const struct embed_conf *c)
{
	struct embedder *e = xcalloc(1, sizeof(*e));

	if (c->kind == EMBED_BUILTIN) {
		/* config.c checked dim; a bad one gets the default. */
		if (!embed_hash_spec(c->dim, &e->spec) &&
		    !embed_hash_spec(EMBED_DEFAULT_DIM, &e->spec))
			abort();
		return e;
	}
	snprintf(e->spec.name, sizeof(e->spec.name), "%s", EMBED_OPENAI_NAME);
	snprintf(e->spec.model, sizeof(e->spec.model), "%s", c->model);
	e->api = embedapi_new(c->url, c->model, c->api_key, c->timeout_ms,
	                      c->batch, c->verbose_errors);
	return e;
}

void
embedder_free(struct embedder *e)
{
	if (e == NULL)
		return;
	embedapi_free(e->api);
	if (e->last_vec != NULL)
		OPENSSL_cleanse(e->last_vec, sizeof(float) * e->spec.dim);
	free(e->last_vec);
	free(e);
}

bool
embedder_is_builtin(const struct embedder *e)
{
	return e->api == NULL;
}

int
embedder_spec(struct embedder *e, bool probe, struct embed_spec *out,
              char *err, size_t errlen)
{
	if (e->api != NULL && e->spec.dim == 0 && probe) {
		/* Any text will do: only the answer's length is wanted. */
		static const char *const text[] = {"dimension probe"};
		const size_t len[] = {15};
		float *v = xmalloc(sizeof(float) * EMBED_MAX_DIM);
		unsigned dim = 0;
		int rc = embedapi_run(e->api, text, len, 1, v, &dim, err, errlen);

		free(v);
		if (rc < 0)
			return -1;
		e->spec.dim = dim;
	}
	*out = e->spec;
	return 0;
}

void
embedder_expect_dim(struct embedder *e, unsigned dim)
{
	if (e->spec.dim == 0)
		e->spec.dim = dim;
}

int
embedder_run(struct embedder *e, const char *const *texts, const size_t *lens,
             size_t n, float *out, char *err, size_t errlen)
{
	unsigned char sha[32];
	bool hashed;
	unsigned dim = e->spec.dim;

	if (e->api == NULL) {
		for (size_t i = 0; i < n; i++)
			embed_text(&e->spec, texts[i], lens[i], out + i * dim);
		return 0;
	}
	if (dim == 0) {
		snprintf(err, errlen, "embedder: the dimension is not known yet");
		return -1;
	}
	/* The last text's vector is kept, keyed by the text's hash. */
	hashed = n == 1 && digest_sha256(texts[0], lens[0], sha);
	if (hashed) {
		if (e->have_last && CRYPTO_memcmp(sha, e->last_sha, 32) == 0) {
			memcpy(out, e->last_vec, sizeof(float) * dim);
			return 0;
		}
	}
	if (embedapi_run(e->api, texts, lens, n, out, &dim, err, errlen) < 0)
		return -1;
	if (hashed) {
		if (e->last_vec == NULL)
			e->last_vec = xmalloc(sizeof(float) * dim);
		memcpy(e->last_vec, out, sizeof(float) * dim);
		memcpy(e->last_sha, sha, 32);
		e->have_last = true;
	}
	return 0;
}
