/*
 * scrub.c - the detection engine (see scrub.h).
 *
 * Speed comes from anchors: a rule names what must be near any match (an
 * '@', a run of N digits, a keyword) and its regex only runs in windows
 * around those spots. Finding the spots is one memchr or table scan per
 * string, shared by the rules with the same anchor, so text without
 * candidates is scanned a handful of times at memory speed instead of
 * once per rule by a regex.
 *
 * Safety comes from failing closed: any PCRE2 error, limit or allocation
 * failure ends the search with -1, and callers refuse the request.
 */
#include "scrub.h"

#include "alloc.h"
#include "vault.h"

#include <openssl/crypto.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
/* SSE2 is in every x86-64; SCRIM_NO_SIMD builds the byte-at-a-time paths
 * alone, which the unit tests also run (tests/unit/CMakeLists.txt). */
#if defined(__SSE2__) && !defined(SCRIM_NO_SIMD)
#define SCRIM_SIMD 1
#include <emmintrin.h>
#endif
/* AVX2 where the CPU has it, chosen at run time (the build targets plain
 * x86-64): the anchor passes read every byte of every text, 32 at a
 * time instead of 16. SCRIM_NO_AVX2 builds the SSE2 paths alone, which
 * the unit tests also run. */
#if defined(SCRIM_SIMD) && defined(__x86_64__) && defined(__GNUC__) && \
    !defined(SCRIM_NO_AVX2)
#define SCRIM_AVX2 1
#include <immintrin.h>
#define AVX2_FN __attribute__((target("avx2")))
#endif

#define SCRUB_THRESHOLD 0.5
#define SCRUB_CONTEXT_BONUS 0.2
#define SCRUB_NEGATIVE_MALUS 0.4
#define SCRUB_MAX_HITS 1000000

void
scrub_hits_init(struct scrub_hits *h)
{
	memset(h, 0, sizeof(*h));
}

void
scrub_hits_reset(struct scrub_hits *h)
{
	h->n = 0;
}

void
scrub_hits_free(struct scrub_hits *h)
{
	free(h->v);
	memset(h, 0, sizeof(*h));
}

static bool
hits_add(struct scrub_hits *h, size_t start, size_t end, const struct rule *r,
         double score)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		struct scrub_hit *v;
		if (cap > SCRUB_MAX_HITS)
			return false;
		v = realloc(h->v, cap * sizeof(*v));
		if (v == NULL)
			return false;
		h->v = v;
		h->cap = cap;
	}
	h->v[h->n].start = start;
	h->v[h->n].end = end;
	h->v[h->n].rule = r;
	h->v[h->n].score = score;
	h->n++;
	return true;
}

#ifdef SCRIM_AVX2
/*
 * UTF-8 validation 32 bytes at a time, by the lookup method of Keiser
 * and Lemire ("Validating UTF-8 in less than one instruction per byte",
 * 2021): each byte's error classes come from three 16-entry tables
 * indexed by the nibbles of it and of the byte before, and sequences too
 * long or too short from the bytes two and three back. Text in other
 * scripts has a multi-byte character every few bytes, where the byte
 * loop below takes a branch per character. Whole blocks only: the caller
 * checks the rest byte by byte, starting at a character boundary.
 */
#define U8_TOO_SHORT (1 << 0)
#define U8_TOO_LONG (1 << 1)
#define U8_OVERLONG_3 (1 << 2)
#define U8_TOO_LARGE (1 << 3)
#define U8_SURROGATE (1 << 4)
#define U8_OVERLONG_2 (1 << 5)
/* One bit for two classes: after F0 an overlong 4-byte form, after F5
 * and up a code point past U+10FFFF. The lead's low nibble (t2) tells
 * them apart; in t1 and t3 an entry with one has both, and names only
 * U8_TOO_LARGE_1000. */
#define U8_TOO_LARGE_1000 (1 << 6)
#define U8_OVERLONG_4 (1 << 6)
#define U8_TWO_CONTS (1 << 7)
#define U8_CARRY (U8_TOO_SHORT | U8_TOO_LONG | U8_TWO_CONTS)

static inline __attribute__((always_inline)) AVX2_FN __m256i
u8_prev(__m256i in, __m256i prev_in, int k)
{
	/* The block shifted right by k bytes, the previous block's last k
	 * bytes coming in (alignr works within 128-bit lanes). */
	__m256i joined = _mm256_permute2x128_si256(prev_in, in, 0x21);
	switch (k) {
	case 1:
		return _mm256_alignr_epi8(in, joined, 15);
	case 2:
		return _mm256_alignr_epi8(in, joined, 14);
	default:
		return _mm256_alignr_epi8(in, joined, 13);
	}
}

static AVX2_FN bool
utf8_blocks_avx2(const unsigned char *p, size_t n, size_t *ip)
{
	const __m256i t1 = _mm256_setr_epi8(
	    U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG,
	    U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TWO_CONTS, U8_TWO_CONTS,
	    U8_TWO_CONTS, U8_TWO_CONTS, U8_TOO_SHORT | U8_OVERLONG_2, U8_TOO_SHORT,
	    U8_TOO_SHORT | U8_OVERLONG_3 | U8_SURROGATE,
	    U8_TOO_SHORT | U8_TOO_LARGE | U8_TOO_LARGE_1000,
	    U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG,
	    U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TWO_CONTS, U8_TWO_CONTS,
	    U8_TWO_CONTS, U8_TWO_CONTS, U8_TOO_SHORT | U8_OVERLONG_2, U8_TOO_SHORT,
	    U8_TOO_SHORT | U8_OVERLONG_3 | U8_SURROGATE,
	    U8_TOO_SHORT | U8_TOO_LARGE | U8_TOO_LARGE_1000);
#define U8_L (U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000)
	const __m256i t2 = _mm256_setr_epi8(
	    U8_CARRY | U8_OVERLONG_3 | U8_OVERLONG_2 | U8_OVERLONG_4,
	    U8_CARRY | U8_OVERLONG_2, U8_CARRY, U8_CARRY, U8_CARRY | U8_TOO_LARGE,
	    U8_L, U8_L, U8_L, U8_L, U8_L, U8_L, U8_L, U8_L, U8_L | U8_SURROGATE,
	    U8_L, U8_L,
	    U8_CARRY | U8_OVERLONG_3 | U8_OVERLONG_2 | U8_OVERLONG_4,
	    U8_CARRY | U8_OVERLONG_2, U8_CARRY, U8_CARRY, U8_CARRY | U8_TOO_LARGE,
	    U8_L, U8_L, U8_L, U8_L, U8_L, U8_L, U8_L, U8_L, U8_L | U8_SURROGATE,
	    U8_L, U8_L);
#undef U8_L
#define U8_C (U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS)
	const __m256i t3 = _mm256_setr_epi8(
	    U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT,
	    U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT,
	    U8_C | U8_OVERLONG_3 | U8_TOO_LARGE_1000,
	    U8_C | U8_OVERLONG_3 | U8_TOO_LARGE, U8_C | U8_SURROGATE | U8_TOO_LARGE,
	    U8_C | U8_SURROGATE | U8_TOO_LARGE, U8_TOO_SHORT, U8_TOO_SHORT,
	    U8_TOO_SHORT, U8_TOO_SHORT,
	    U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT,
	    U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT,
	    U8_C | U8_OVERLONG_3 | U8_TOO_LARGE_1000,
	    U8_C | U8_OVERLONG_3 | U8_TOO_LARGE, U8_C | U8_SURROGATE | U8_TOO_LARGE,
	    U8_C | U8_SURROGATE | U8_TOO_LARGE, U8_TOO_SHORT, U8_TOO_SHORT,
	    U8_TOO_SHORT, U8_TOO_SHORT);
#undef U8_C
	const __m256i low4 = _mm256_set1_epi8(0x0f);
	/* Bytes that leave a character open at the end of a block: a 4-byte
	 * lead in the last 3, a 3-byte lead in the last 2, any lead last. */
	const __m256i open_max = _mm256_setr_epi8(
	    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, (char)(0xf0 - 1),
	    (char)(0xe0 - 1), (char)(0xc0 - 1));
	__m256i prev_in = _mm256_setzero_si256();
	__m256i err = _mm256_setzero_si256(), open = _mm256_setzero_si256();
	size_t i = *ip;

	for (; i + 32 <= n; i += 32) {
		__m256i in = _mm256_loadu_si256((const __m256i *)(const void *)(p + i));
		__m256i p1, sc, p2, p3, must;
		if (_mm256_movemask_epi8(in) == 0) {
			/* ASCII: only a character left open before it is wrong. */
			err = _mm256_or_si256(err, open);
			open = _mm256_setzero_si256();
			prev_in = in;
			continue;
		}
		p1 = u8_prev(in, prev_in, 1);
		/* The error classes of (byte before, byte), by nibbles. */
		sc = _mm256_and_si256(
		    _mm256_and_si256(
		        _mm256_shuffle_epi8(
		            t1, _mm256_and_si256(_mm256_srli_epi16(p1, 4), low4)),
		        _mm256_shuffle_epi8(t2, _mm256_and_si256(p1, low4))),
		    _mm256_shuffle_epi8(
		        t3, _mm256_and_si256(_mm256_srli_epi16(in, 4), low4)));
		p2 = u8_prev(in, prev_in, 2);
		p3 = u8_prev(in, prev_in, 3);
		/* Third bytes (after 111_____) and fourth (after 1111____)
		 * must be continuations: 0x80 where they are. */
		must = _mm256_or_si256(
		    _mm256_subs_epu8(p2, _mm256_set1_epi8((char)(0xe0 - 0x80))),
		    _mm256_subs_epu8(p3, _mm256_set1_epi8((char)(0xf0 - 0x80))));
		must = _mm256_and_si256(must, _mm256_set1_epi8((char)0x80));
		err = _mm256_or_si256(err, _mm256_xor_si256(must, sc));
		open = _mm256_subs_epu8(in, open_max);
		prev_in = in;
	}
	if (!_mm256_testz_si256(err, err))
		return false;
	/* A character open at the last block's end: back up to its lead, for
	 * the byte loop to check it whole. */
	if (!_mm256_testz_si256(open, open) || i < n) {
		while (i > *ip && i > 0 && (p[i - 1] & 0xc0) == 0x80)
			i--;
		if (i > *ip && p[i - 1] >= 0xc0)
			i--;
	}
	*ip = i;
	return true;
}
#endif

bool
scrub_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

#ifdef SCRIM_AVX2
	if (__builtin_cpu_supports("avx2") && !utf8_blocks_avx2(p, n, &i))
		return false;
#endif
	while (i < n) {
		unsigned char c;
		uint64_t w;
#ifdef SCRIM_SIMD
		/* ASCII 32 bytes at a time (no byte has its top bit), and
		 * straight to the next byte that has it: text in other
		 * scripts mixes the two every few bytes. */
		if (i + 32 <= n) {
			__m128i a = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
			__m128i b =
			    _mm_loadu_si128((const __m128i *)(const void *)(p + i + 16));
			uint32_t m = (uint32_t)_mm_movemask_epi8(a) |
			             (uint32_t)_mm_movemask_epi8(b) << 16;
			if (m == 0) {
				i += 32;
				continue;
			}
			i += (size_t)__builtin_ctz(m);
		}
#endif
		c = p[i];
		/* ASCII runs eight bytes at a time. */
		if (i + 8 <= n) {
			memcpy(&w, p + i, 8);
			if ((w & 0x8080808080808080ULL) == 0) {
				i += 8;
				continue;
			}
		}
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t need;
		unsigned char lo = 0x80, hi = 0xbf;
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			if (c == 0xe0)
				lo = 0xa0;
			if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			if (c == 0xf0)
				lo = 0x90;
			if (c == 0xf4)
				hi = 0x8f;
		} else {
			return false;
		}
		if (n - i <= need || p[i + 1] < lo || p[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= need; k++)
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
		i += need + 1;
	}
	return true;
}

/* ------------------------- windows -------------------------------- */

/* 32-bit offsets, as struct digit_run: a text can hold a window per
 * number. */
struct window {
	uint32_t start, end;
	uint32_t last; /* the end of the last anchor in it, minus one */
};

struct windows {
	struct window *v;
	size_t n, cap;
};

static bool
win_push(struct windows *w, size_t start, size_t end, size_t last)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		struct window *v = realloc(w->v, cap * sizeof(*v));
		if (v == NULL)
			return false;
		w->v = v;
		w->cap = cap;
	}
	w->v[w->n].start = (uint32_t)start;
	w->v[w->n].end = (uint32_t)end;
	w->v[w->n].last = (uint32_t)last;
	w->n++;
	return true;
}

static bool
win_add(struct windows *w, const char *s, size_t n, size_t a_start,
        size_t a_end, const struct rule *r)
{
	size_t ws = a_start > r->win_before ? a_start - r->win_before : 0;
	size_t we = a_end + r->win_after < n ? a_end + r->win_after : n;

	/* Windows start and end on character boundaries: PCRE2 runs with
	 * NO_UTF_CHECK and must never see half a character. */
	while (ws > 0 && ((unsigned char)s[ws] & 0xc0) == 0x80)
		ws--;
	while (we < n && ((unsigned char)s[we] & 0xc0) == 0x80)
		we++;
	/* Merge with the previous window when in order; anchors found out of
	 * order (several words) are sorted and merged by win_normalise. */
	if (w->n > 0 && ws >= w->v[w->n - 1].start && ws <= w->v[w->n - 1].end) {
		if (we > w->v[w->n - 1].end)
			w->v[w->n - 1].end = (uint32_t)we;
		if (a_end - 1 > w->v[w->n - 1].last)
			w->v[w->n - 1].last = (uint32_t)(a_end - 1);
		return true;
	}
	return win_push(w, ws, we, a_end > a_start ? a_end - 1 : a_start);
}

static int
win_cmp(const void *a, const void *b)
{
	const struct window *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Merge after out-of-order additions (several words). */
static void
win_normalise(struct windows *w)
{
	size_t o = 0;

	bool sorted = true;

	if (w->n < 2)
		return;
	/* Mostly in order already (one pass found them all): no sort. */
	for (size_t i = 1; i < w->n && sorted; i++)
		sorted = w->v[i - 1].start <= w->v[i].start;
	if (!sorted)
		qsort(w->v, w->n, sizeof(*w->v), win_cmp);
	for (size_t i = 1; i < w->n; i++) {
		if (w->v[i].start <= w->v[o].end) {
			if (w->v[i].end > w->v[o].end)
				w->v[o].end = w->v[i].end;
			if (w->v[i].last > w->v[o].last)
				w->v[o].last = w->v[i].last;
		} else {
			w->v[++o] = w->v[i];
		}
	}
	w->n = o + 1;
}

static const unsigned char num_sep[256] = {
	[' '] = 1, ['-'] = 1, ['.'] = 1, ['('] = 1, [')'] = 1, ['+'] = 1,
	['/'] = 1,
};

/* For context words, only ASCII letters and digits join a word: "_" and
 * other scripts are boundaries ("routing_number", "こんにちは。Lot"). */
static bool
word_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

static const unsigned char fold[256] = {
#define F4(b) (b), (b) + 1, (b) + 2, (b) + 3
#define F16(b) F4(b), F4((b) + 4), F4((b) + 8), F4((b) + 12)
	F16(0), F16(16), F16(32), F16(48),
	/* 'A'..'Z' fold to 'a'..'z' */
	64, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n',
	'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 91, 92, 93,
	94, 95,
	F16(96), F16(112), F16(128), F16(144), F16(160), F16(176), F16(192),
	F16(208), F16(224), F16(240),
#undef F16
#undef F4
};

static const unsigned char alnum_tab[256] = {
#define R10(b) [(b)] = 1, [(b) + 1] = 1, [(b) + 2] = 1, [(b) + 3] = 1, \
	[(b) + 4] = 1, [(b) + 5] = 1, [(b) + 6] = 1, [(b) + 7] = 1, \
	[(b) + 8] = 1, [(b) + 9] = 1
	R10('0'),
	R10('A'), R10('K'), ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	R10('a'), R10('k'), ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
#undef R10
};

/* Does ref's entry stand at s[at..]? The first four bytes were compared
 * through head; the rest here, folded or exact. */
static bool
ref_matches(const struct word_ref *ref, const unsigned char *u, size_t n,
            size_t at)
{
	size_t wl = ref->len, j;
	const unsigned char *t = (const unsigned char *)ref->text;

	if (ref->flags & WORD_FOLD) {
		for (j = 4; j < wl && fold[u[at + j]] == fold[t[j]]; j++)
			;
	} else {
		for (j = 4; j < wl && u[at + j] == t[j]; j++)
			;
	}
	if (j < wl)
		return false;
	return !(ref->flags & WORD_RIGHT) || at + wl >= n || !alnum_tab[u[at + wl]];
}

/* The four bytes at u + at, folded or not, zero past the end. */
static inline uint32_t
head_at(const unsigned char *u, size_t n, size_t at, bool folded)
{
	uint32_t h = 0;

	if (at + 4 <= n) {
		memcpy(&h, u + at, 4);
		if (folded) {
			/* ASCII 'A'..'Z' to lower case, four at a time: the
			 * high bit of each byte of lo and hi brackets the
			 * range; bytes from 0x80 up are left alone. */
			uint32_t x = h & 0x7f7f7f7fu;
			uint32_t lo = x + 0x3f3f3f3fu; /* >= 'A' sets bit 7 */
			uint32_t hi = x + 0x25252525u; /* > 'Z' sets bit 7 */
			h |= (lo & ~hi & ~h & 0x80808080u) >> 2;
		}
		return h;
	}
	for (size_t b = 0; b < 4 && at + b < n; b++)
		h |= (uint32_t)(folded ? fold[u[at + b]] : u[at + b]) << (8 * b);
	return h;
}

/* Letters folded, digits kept, anything else 0: word_hash3's alphabet. */
static const unsigned char cls_tab[256] = {
#define C10(b) [(b)] = (b), [(b) + 1] = (b) + 1, [(b) + 2] = (b) + 2, \
	[(b) + 3] = (b) + 3, [(b) + 4] = (b) + 4, [(b) + 5] = (b) + 5, \
	[(b) + 6] = (b) + 6, [(b) + 7] = (b) + 7, [(b) + 8] = (b) + 8, \
	[(b) + 9] = (b) + 9
#define U10(b) [(b)] = (b) + 32, [(b) + 1] = (b) + 33, [(b) + 2] = (b) + 34, \
	[(b) + 3] = (b) + 35, [(b) + 4] = (b) + 36, [(b) + 5] = (b) + 37, \
	[(b) + 6] = (b) + 38, [(b) + 7] = (b) + 39, [(b) + 8] = (b) + 40, \
	[(b) + 9] = (b) + 41
	C10('0'), C10('a'), C10('k'), U10('A'), U10('K'),
	['u'] = 'u', ['v'] = 'v', ['w'] = 'w', ['x'] = 'x', ['y'] = 'y',
	['z'] = 'z', ['U'] = 'u', ['V'] = 'v', ['W'] = 'w', ['X'] = 'x',
	['Y'] = 'y', ['Z'] = 'z',
#undef U10
#undef C10
};

/* A near word is kept as where it stands (no window: see near_filter);
 * an anchor, as the window around it. wins[0 .. nrules) are the rules'
 * windows, wins[nrules ..) their near words. */
static void scratch_touch(struct ruleset *rs, struct windows *wins,
                          size_t idx);
static void scratch_normalise(struct ruleset *rs);

static bool
anchor_add(struct ruleset *rs, struct windows *wins, const struct word_ref *ref,
           const unsigned char *u, size_t n, size_t at)
{
	size_t idx = ref->flags & WORD_NEAR ? rs->nrules + ref->rule : ref->rule;

	if (wins[idx].n == 0)
		scratch_touch(rs, wins, idx);
	if (!(ref->flags & WORD_NEAR))
		return win_add(&wins[idx], (const char *)u, n, at, at + ref->len,
		               &rs->rules[ref->rule]);
	return win_push(&wins[idx], at, at + ref->len, at);
}

/* Could an entry of the words index start at i (i + 1 < n)? A filter
 * on the first four bytes, which turns away "that" for "thanks" and
 * "provide" for "prof". */
static inline bool
word_maybe(const struct word_index *wi, const unsigned char *u, size_t n,
           size_t i)
{
	unsigned h = word_hash4(cls_tab[u[i]], cls_tab[u[i + 1]],
	                        i + 2 < n ? cls_tab[u[i + 2]] : 0,
	                        i + 3 < n ? cls_tab[u[i + 3]] : 0);
	return (wi->bits[h >> 6] >> (h & 63)) & 1;
}

/* A word start that passed the filter: add a window for each entry of
 * the index that stands there. */
static bool
word_at(struct ruleset *rs, const unsigned char *u, size_t n, size_t i,
        struct windows *wins, long only)
{
	const struct word_index *wi = &rs->words;
	unsigned key = (unsigned)fold[u[i]] << 8 | fold[u[i + 1]];
	uint32_t head = head_at(u, n, i, true);

	for (uint32_t k = wi->start[key]; k < wi->start[key + 1]; k++) {
		const struct word_ref *ref = &wi->refs[k];
		if ((head & ref->mask) != ref->head || ref->len > n - i ||
		    (only >= 0 && ref->rule != (uint32_t)only) ||
		    !ref_matches(ref, u, n, i))
			continue;
		if (!anchor_add(rs, wins, ref, u, n, i))
			return false;
	}
	return true;
}

#ifdef SCRIM_SIMD
/* Which of the 16 bytes at p are ASCII letters or digits, as bits, and
 * the 16 bytes in word_hash4's alphabet (cls_tab) at c. Signed compares:
 * bytes from 0x80 up are negative, so in neither range. */
static inline __attribute__((always_inline)) unsigned
alnum16_cls(const unsigned char *p, unsigned char *c)
{
	__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i l = _mm_or_si128(x, _mm_set1_epi8(0x20));
	__m128i d = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
	                          _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
	__m128i a = _mm_and_si128(_mm_cmpgt_epi8(l, _mm_set1_epi8('a' - 1)),
	                          _mm_cmplt_epi8(l, _mm_set1_epi8('z' + 1)));
	_mm_storeu_si128((__m128i *)(void *)c,
	                 _mm_or_si128(_mm_and_si128(d, x), _mm_and_si128(a, l)));
	return (unsigned)_mm_movemask_epi8(_mm_or_si128(d, a));
}

static inline __attribute__((always_inline)) unsigned
alnum16(const unsigned char *p)
{
	unsigned char c[16]; /* not read: the compiler drops the store */

	return alnum16_cls(p, c);
}

static inline __attribute__((always_inline)) uint64_t
alnum64_sse2(const unsigned char *p)
{
	return (uint64_t)alnum16(p) | (uint64_t)alnum16(p + 16) << 16 |
	       (uint64_t)alnum16(p + 32) << 32 | (uint64_t)alnum16(p + 48) << 48;
}

static inline __attribute__((always_inline)) uint64_t
alnum64_cls_sse2(const unsigned char *p, unsigned char *c)
{
	return (uint64_t)alnum16_cls(p, c) |
	       (uint64_t)alnum16_cls(p + 16, c + 16) << 16 |
	       (uint64_t)alnum16_cls(p + 32, c + 32) << 32 |
	       (uint64_t)alnum16_cls(p + 48, c + 48) << 48;
}
#endif

#ifdef SCRIM_AVX2
static inline __attribute__((always_inline)) AVX2_FN uint32_t
alnum32_cls(const unsigned char *p, unsigned char *c)
{
	__m256i x = _mm256_loadu_si256((const __m256i *)(const void *)p);
	__m256i l = _mm256_or_si256(x, _mm256_set1_epi8(0x20));
	__m256i d = _mm256_and_si256(_mm256_cmpgt_epi8(x, _mm256_set1_epi8('0' - 1)),
	                             _mm256_cmpgt_epi8(_mm256_set1_epi8('9' + 1), x));
	__m256i a = _mm256_and_si256(_mm256_cmpgt_epi8(l, _mm256_set1_epi8('a' - 1)),
	                             _mm256_cmpgt_epi8(_mm256_set1_epi8('z' + 1), l));
	_mm256_storeu_si256((__m256i *)(void *)c,
	                    _mm256_or_si256(_mm256_and_si256(d, x),
	                                    _mm256_and_si256(a, l)));
	return (uint32_t)_mm256_movemask_epi8(_mm256_or_si256(d, a));
}

static inline __attribute__((always_inline)) AVX2_FN uint64_t
alnum64_avx2(const unsigned char *p)
{
	unsigned char c[64]; /* not read: the compiler drops the stores */

	return (uint64_t)alnum32_cls(p, c) |
	       (uint64_t)alnum32_cls(p + 32, c + 32) << 32;
}

static inline __attribute__((always_inline)) AVX2_FN uint64_t
alnum64_cls_avx2(const unsigned char *p, unsigned char *c)
{
	return (uint64_t)alnum32_cls(p, c) |
	       (uint64_t)alnum32_cls(p + 32, c + 32) << 32;
}
#endif

#ifdef SCRIM_SIMD
/* The word starts of 64-byte blocks, from the letters-and-digits mask
 * (SSE2 or AVX2: the loop is inlined into each). The same vectors give
 * the block in word_hash4's alphabet, so the filter of each word start
 * is one load and a multiply instead of four table lookups. */
static inline __attribute__((always_inline)) bool
words_blocks(struct ruleset *rs, const unsigned char *u, size_t n,
             struct windows *wins, long only, size_t *ip, bool *prevp,
             uint64_t (*alnum64_cls)(const unsigned char *, unsigned char *))
{
	const struct word_index *wi = &rs->words;
	unsigned char c[64 + 4];
	size_t i = *ip;
	bool prev = *prevp;

	for (; i + 64 < n; i += 64) {
		uint64_t m = alnum64_cls(u + i, c);
		uint64_t starts = m & ~(m << 1 | (uint64_t)prev);
		prev = m >> 63;
		if (starts == 0)
			continue;
		/* The three bytes after the block, for its last starts;
		 * i + 64 < n, so the first is there. */
		c[64] = cls_tab[u[i + 64]];
		c[65] = i + 65 < n ? cls_tab[u[i + 65]] : 0;
		c[66] = i + 66 < n ? cls_tab[u[i + 66]] : 0;
		while (starts != 0) {
			size_t b = (size_t)__builtin_ctzll(starts);
			uint32_t x;
			unsigned h;
			memcpy(&x, c + b, 4); /* x86: little-endian */
			h = word_hash4_word(x);
			if (((wi->bits[h >> 6] >> (h & 63)) & 1) &&
			    !word_at(rs, u, n, i + b, wins, only))
				return false;
			starts &= starts - 1;
		}
	}
	*ip = i;
	*prevp = prev;
	return true;
}

static bool
words_sse2(struct ruleset *rs, const unsigned char *u, size_t n,
           struct windows *wins, long only, size_t *ip, bool *prevp)
{
	return words_blocks(rs, u, n, wins, only, ip, prevp, alnum64_cls_sse2);
}
#endif

#ifdef SCRIM_AVX2
static AVX2_FN bool
words_avx2(struct ruleset *rs, const unsigned char *u, size_t n,
           struct windows *wins, long only, size_t *ip, bool *prevp)
{
	return words_blocks(rs, u, n, wins, only, ip, prevp, alnum64_cls_avx2);
}
#endif

/*
 * The anchors at word starts. A word starts at a letter or digit after a
 * byte that is not one (so after '_', '-', '\'' or any non-ASCII byte),
 * as the rules' own look-behinds want. With SSE2 or AVX2, 64 bytes at a
 * time: a mask of letters and digits, shifted against itself, gives the
 * word starts as bits, and only those are looked up (one in five or six
 * bytes of prose).
 */
static bool
words_pass(struct ruleset *rs, const char *s, size_t n, struct windows *wins,
           long only)
{
	const unsigned char *u = (const unsigned char *)s;
	bool prev = false; /* the byte before i is a letter or digit */
	size_t i = 0;

	if (rs->words.nrefs == 0 || n < 2)
		return true;
#ifdef SCRIM_AVX2
	if (__builtin_cpu_supports("avx2")) {
		if (!words_avx2(rs, u, n, wins, only, &i, &prev))
			return false;
	} else
#endif
#ifdef SCRIM_SIMD
	if (!words_sse2(rs, u, n, wins, only, &i, &prev))
		return false;
#endif
	for (; i + 1 < n; i++) {
		bool cur = alnum_tab[u[i]];
		if (cur && !prev && word_maybe(&rs->words, u, n, i) &&
		    !word_at(rs, u, n, i, wins, only))
			return false;
		prev = cur;
	}
	return true;
}

/* The entries under one pair key whose key byte may be the byte at i. */
static bool
spot_refs(struct ruleset *rs, const unsigned char *u, size_t n, size_t i,
          struct windows *wins, long only, unsigned key)
{
	const struct word_index *wi = &rs->spots;

	for (uint32_t k = wi->start[key]; k < wi->start[key + 1]; k++) {
		const struct word_ref *ref = &wi->refs[k];
		size_t at;
		if (i < ref->off)
			continue;
		at = i - ref->off;
		if (ref->len > n - at ||
		    (head_at(u, n, at, ref->flags & WORD_FOLD) & ref->mask) !=
		        ref->head ||
		    (only >= 0 && ref->rule != (uint32_t)only) ||
		    !ref_matches(ref, u, n, at))
			continue;
		if (!anchor_add(rs, wins, ref, u, n, at))
			return false;
	}
	return true;
}

/* A key byte at i: the entries keyed by the pair it ends (the byte before
 * and it) and by the pair it starts. The pairs' bits first: ':' ends
 * many field names, but '":' of JSON none. */
static bool
spot_at(struct ruleset *rs, const unsigned char *u, size_t n, size_t i,
        struct windows *wins, long only)
{
	const struct word_index *wi = &rs->spots;
	unsigned before = i > 0 ? (unsigned)u[i - 1] << 8 | u[i] : 0;
	unsigned after = i + 1 < n ? (unsigned)u[i] << 8 | u[i + 1] : 0;
	bool b = i > 0 && ((wi->bits[before >> 6] >> (before & 63)) & 1);
	bool a = i + 1 < n && ((wi->bits_after[after >> 6] >> (after & 63)) & 1);

	if (b && !spot_refs(rs, u, n, i, wins, only, before))
		return false;
	/* The two keys may meet (SPOT_AFTER): their entries once. */
	if (a && !(b && SPOT_AFTER(after) == before) &&
	    !spot_refs(rs, u, n, i, wins, only, SPOT_AFTER(after)))
		return false;
	return true;
}

#ifdef SCRIM_AVX2
/* The key bytes 32 at a time, whatever their number: each byte's two
 * nibbles look up a bit set in the tables of rules.h (vpshufb). */
static AVX2_FN bool
spots_avx2(struct ruleset *rs, const unsigned char *u, size_t n,
           struct windows *wins, long only, size_t *ip)
{
	const struct word_index *wi = &rs->spots;
	__m256i lo_t = _mm256_broadcastsi128_si256(
	    _mm_loadu_si128((const __m128i *)(const void *)wi->nib_lo));
	__m256i hi_t = _mm256_broadcastsi128_si256(
	    _mm_loadu_si128((const __m128i *)(const void *)wi->nib_hi));
	__m256i low4 = _mm256_set1_epi8(0x0f);
	size_t i = *ip;

	for (; i + 32 <= n; i += 32) {
		__m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(u + i));
		__m256i lo = _mm256_and_si256(x, low4);
		__m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low4);
		__m256i b = _mm256_and_si256(_mm256_shuffle_epi8(lo_t, lo),
		                             _mm256_shuffle_epi8(hi_t, hi));
		uint32_t m = ~(uint32_t)_mm256_movemask_epi8(
		    _mm256_cmpeq_epi8(b, _mm256_setzero_si256()));
		while (m != 0) {
			if (!spot_at(rs, u, n, i + (size_t)__builtin_ctz(m), wins, only))
				return false;
			m &= m - 1;
		}
	}
	*ip = i;
	return true;
}
#endif

/*
 * The anchors that may stand anywhere (literals, "*part" words): the
 * pass stops only at the key bytes, found 32 at a time with AVX2, 16 at
 * a time with SSE2 when there are at most 16 of them, else one byte at
 * a time.
 */
static bool
spots_pass(struct ruleset *rs, const char *s, size_t n, struct windows *wins,
           long only)
{
	const struct word_index *wi = &rs->spots;
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	if (wi->nrefs == 0)
		return true;
#ifdef SCRIM_AVX2
	if (__builtin_cpu_supports("avx2")) {
		if (!spots_avx2(rs, u, n, wins, only, &i))
			return false;
	} else
#endif
#ifdef SCRIM_SIMD
	if (wi->nrare <= sizeof(wi->rare)) {
		__m128i set[sizeof(wi->rare)];
		for (unsigned r = 0; r < wi->nrare; r++)
			set[r] = _mm_set1_epi8((char)wi->rare[r]);
		for (; i + 16 <= n; i += 16) {
			__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(u + i));
			__m128i hit = _mm_cmpeq_epi8(x, set[0]);
			unsigned m;
			for (unsigned r = 1; r < wi->nrare; r++)
				hit = _mm_or_si128(hit, _mm_cmpeq_epi8(x, set[r]));
			m = (unsigned)_mm_movemask_epi8(hit);
			while (m != 0) {
				if (!spot_at(rs, u, n, i + (size_t)__builtin_ctz(m), wins,
				             only))
					return false;
				m &= m - 1;
			}
		}
	}
#endif
	for (; i < n; i++)
		if (((wi->keybytes[u[i] >> 6] >> (u[i] & 63)) & 1) &&
		    !spot_at(rs, u, n, i, wins, only))
			return false;
	return true;
}

static bool
anchor_pass(struct ruleset *rs, const char *s, size_t n, struct windows *wins,
            long only)
{
	if (!words_pass(rs, s, n, wins, only) || !spots_pass(rs, s, n, wins, only))
		return false;
	/* Two passes, and spots found at offsets within their entries: put
	 * each rule's windows back in order. */
	if (only < 0) {
		scratch_normalise(rs);
		return true;
	}
	for (size_t r = 0; r < 2 * rs->nrules; r++)
		if (wins[r].n > 1)
			win_normalise(&wins[r]);
	return true;
}

/* Runs of digits, found once per text and shared by the digit rules.
 * 32-bit offsets (scrub_find refuses texts of 4 GiB and more): a text
 * dense with numbers has hundreds of thousands of runs, and this is
 * half the memory to write and walk. */
struct digit_run {
	uint32_t start, end;
	uint32_t digits;
};

struct digit_runs {
	struct digit_run *v;
	size_t n, cap;
	/* The runs of at least rs->big_digits digits again: most digit
	 * rules want long runs (phones, cards), and text full of short
	 * numbers would have each of them walk every run. */
	struct digit_run *big;
	size_t nbig, capbig;
	bool done;
};

/*
 * The first digit at or after i (n if none), eight bytes at a time: with
 * t = x ^ "00000000" a digit is a byte below 10, and "has a byte below
 * 10" is the classic has-less bit trick (exact as to whether there is
 * one; the byte loop then finds it). Prose is mostly letters, and this
 * scan touches every byte of every request.
 */
static size_t
skip_to_digit(const char *s, size_t i, size_t n)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = ones * 0x80;

#ifdef SCRIM_SIMD
	while (i + 16 <= n) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
		unsigned m = (unsigned)_mm_movemask_epi8(
		    _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
		                  _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1))));
		if (m != 0)
			return i + (size_t)__builtin_ctz(m);
		i += 16;
	}
#endif
	while (i + 8 <= n) {
		uint64_t x, t;
		memcpy(&x, s + i, 8);
		t = x ^ (ones * '0');
		if (((t - ones * 10) & ~t & highs) != 0)
			break;
		i += 8;
	}
	while (i < n && (unsigned char)(s[i] - '0') > 9)
		i++;
	return i;
}

static bool
run_push(struct digit_run **v, size_t *n, size_t *cap,
         const struct digit_run *d)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		struct digit_run *nv = realloc(*v, c * sizeof(*nv));
		if (nv == NULL)
			return false;
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = *d;
	return true;
}

static bool
find_digit_runs(struct digit_runs *dr, const char *s, size_t n,
                unsigned min_digits, unsigned big_digits)
{
	size_t i = 0;

	dr->done = true;
	while (i < n) {
		size_t start, last;
		unsigned digits = 0, gap = 0;
		/* Skip to the next digit: most text has few. */
		i = skip_to_digit(s, i, n);
		if (i >= n)
			break;
		start = last = i;
		for (; i < n; i++) {
			unsigned char c = (unsigned char)s[i];
			if (c >= '0' && c <= '9') {
				digits++;
				last = i;
				gap = 0;
			} else if (num_sep[c] && ++gap <= 2) {
				continue;
			} else {
				break;
			}
		}
		if (digits < min_digits)
			continue; /* no digit rule wants so short a run */
		{
			struct digit_run d = {(uint32_t)start, (uint32_t)(last + 1),
			                      digits};
			if (!run_push(&dr->v, &dr->n, &dr->cap, &d) ||
			    (digits >= big_digits &&
			     !run_push(&dr->big, &dr->nbig, &dr->capbig, &d)))
				return false;
		}
	}
	return true;
}

#ifdef SCRIM_SIMD
/* The blocks of token_windows, as words_blocks: one loop, inlined with
 * the SSE2 and the AVX2 mask. */
static inline __attribute__((always_inline)) bool
token_blocks(struct windows *w, const char *s, size_t n, const struct rule *r,
             size_t *ip, size_t *runp, bool *inp,
             uint64_t (*alnum64)(const unsigned char *))
{
	const unsigned char *u = (const unsigned char *)s;
	size_t want = r->anchor_digits, i = *ip, run = *runp;
	bool in = *inp;

	for (; i + 64 <= n; i += 64) {
		uint64_t m = alnum64(u + i);
		uint64_t inner, x;
		size_t len;

		if (in) { /* a run from the blocks before */
			size_t b;
			if (~m == 0)
				continue;
			b = (size_t)__builtin_ctzll(~m);
			if (i + b - run >= want && !win_add(w, s, n, run, i + b, r))
				return false;
			in = false;
			m &= ~0ULL << b;
		}
		if (m == ~0ULL) {
			in = true;
			run = i;
			continue;
		}
		inner = m;
		if (m >> 63) { /* a run going on into the next block */
			size_t t = (size_t)__builtin_clzll(~m);
			in = true;
			run = i + 64 - t;
			inner = m & (~0ULL >> t);
		}
		/* Any run of want or more among the rest? x keeps the bits
		 * that start want ones in a row. */
		x = want <= 63 ? inner : 0;
		for (len = 1; x != 0 && len * 2 <= want; len *= 2)
			x &= x >> len;
		if (x != 0 && len < want)
			x &= x >> (want - len);
		while (x != 0 && inner != 0) {
			size_t a = (size_t)__builtin_ctzll(inner);
			size_t e = a + (size_t)__builtin_ctzll(~(inner >> a));
			if (e - a >= want && !win_add(w, s, n, i + a, i + e, r))
				return false;
			inner &= ~0ULL << e;
		}
	}
	*ip = i;
	*runp = run;
	*inp = in;
	return true;
}

static bool
token_sse2(struct windows *w, const char *s, size_t n, const struct rule *r,
           size_t *ip, size_t *runp, bool *inp)
{
	return token_blocks(w, s, n, r, ip, runp, inp, alnum64_sse2);
}
#endif

#ifdef SCRIM_AVX2
static AVX2_FN bool
token_avx2(struct windows *w, const char *s, size_t n, const struct rule *r,
           size_t *ip, size_t *runp, bool *inp)
{
	return token_blocks(w, s, n, r, ip, runp, inp, alnum64_avx2);
}
#endif

/*
 * Long runs of ASCII letters and digits (keys, wallet addresses): the
 * windows of a token anchor. With SSE2 or AVX2, 64 bytes of letter-and-digit
 * mask at a time: prose is short words, and a block with no run long
 * enough is passed over by looking at where its runs start and end.
 */
static bool
token_windows(struct windows *w, const char *s, size_t n, const struct rule *r)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t want = r->anchor_digits, i = 0, run = 0; /* run: its start */
	bool in = false;

	if (want == 0)
		return true;
#ifdef SCRIM_AVX2
	if (__builtin_cpu_supports("avx2")) {
		if (!token_avx2(w, s, n, r, &i, &run, &in))
			return false;
	} else
#endif
#ifdef SCRIM_SIMD
	if (!token_sse2(w, s, n, r, &i, &run, &in))
		return false;
#endif
	for (; i < n; i++) {
		bool cur = alnum_tab[u[i]];
		if (cur && !in)
			run = i;
		else if (!cur && in && i - run >= want && !win_add(w, s, n, run, i, r))
			return false;
		in = cur;
	}
	if (in && n - run >= want && !win_add(w, s, n, run, n, r))
		return false;
	return true;
}

/* Does the text before at, past spaces and tabs, end with one of the
 * entries (folded)? A street word before a house number: checked at
 * each digit run, it keeps an address rule off the numbers of prose. */
static bool
follows_one(const char *s, size_t at, const struct rule *r)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t e = at;
	unsigned key;

	while (e > 0 && (u[e - 1] == ' ' || u[e - 1] == '\t'))
		e--;
	if (e < 2)
		return false;
	/* The last two bytes first: most numbers of prose follow a word
	 * that ends like no entry. */
	key = (unsigned)fold[u[e - 2]] << 8 | fold[u[e - 1]];
	if (!((r->follows_tail[key >> 6] >> (key & 63)) & 1))
		return false;
	for (size_t k = 0; k < r->nfollows; k++) {
		const unsigned char *t = (const unsigned char *)r->follows[k];
		size_t wl = r->follows_len[k], j = 0;
		if (r->follows_key[k] != key || wl > e)
			continue;
		while (j < wl - 2 && fold[u[e - wl + j]] == t[j])
			j++;
		if (j == wl - 2)
			return true;
	}
	return false;
}

static bool
windows_for(const struct ruleset *rs, struct windows *w, const char *s,
            size_t n, const struct rule *r, struct digit_runs *dr,
            const struct windows *near)
{
	if (r->anchor == ANCHOR_WORDS)
		return true; /* filled by anchor_pass */
	if (r->anchor != ANCHOR_LITERALS)
		w->n = 0; /* literals keep what anchor_pass found */
	if (r->anchor == ANCHOR_DIGITS) {
		size_t j = 0, nr;
		const struct digit_run *runs;
		if (!dr->done &&
		    !find_digit_runs(dr, s, n, rs->min_digits, rs->big_digits))
			return false;
		runs = r->anchor_digits >= rs->big_digits ? dr->big : dr->v;
		nr = r->anchor_digits >= rs->big_digits ? dr->nbig : dr->n;
		for (size_t k = 0; k < nr; k++) {
			const struct digit_run *d = &runs[k];
			if (d->digits < r->anchor_digits)
				continue;
			if (r->anchor_prev_set) {
				unsigned char b = d->start > 0
				                      ? (unsigned char)s[d->start - 1]
				                      : 0;
				if (d->start == 0 ||
				    !((r->anchor_prev[b >> 6] >> (b & 63)) & 1))
					continue;
			}
			if (r->nfollows > 0 && !follows_one(s, d->start, r))
				continue;
			/* With near words, a run no near word reaches makes no
			 * window at all (near_filter would drop it anyway; on
			 * text full of numbers, most of them). */
			if (r->nnear_words > 0) {
				size_t ws = d->start > r->win_before
				                ? d->start - r->win_before
				                : 0;
				size_t we = d->end + r->win_after;
				while (j < near->n && near->v[j].end <= ws)
					j++;
				if (j == near->n)
					break;
				if (near->v[j].start >= we)
					continue;
			}
			if (!win_add(w, s, n, d->start, d->end, r))
				return false;
		}
		return true;
	}
	switch (r->anchor) {
	case ANCHOR_ANY:
		return win_add(w, s, n, 0, n, r);
	case ANCHOR_CHAR: {
		const char *p = s, *e = s + n;
		const char c = (char)r->anchor_char;
		for (;;) {
			/* memchr to the next one, but runs of it ("....",
			 * "----") byte by byte: a call per byte of them cost
			 * more than the rule itself. */
			if (p < e && *p != c)
				p = memchr(p, c, (size_t)(e - p));
			if (p == NULL || p >= e)
				break;
			unsigned char nx = p + 1 < e ? (unsigned char)p[1] : 0;
			if ((!r->anchor_next_set ||
			     (p + 1 < e &&
			      (r->anchor_next[nx >> 6] & (1ULL << (nx & 63))))) &&
			    !win_add(w, s, n, (size_t)(p - s), (size_t)(p - s) + 1, r))
				return false;
			p++;
		}
		return true;
	}
	case ANCHOR_DIGITS:
		return true; /* handled above */
	case ANCHOR_TOKEN:
		return token_windows(w, s, n, r);
	case ANCHOR_WORDS:
		return true;
	case ANCHOR_LITERALS:
		/* Longer literals come from spots_pass; one-byte ones here. */
		if (!r->short_literals)
			return true; /* in order: anchor_pass normalised them */
		for (size_t k = 0; k < r->nanchor_words; k++) {
			const char *wd = r->anchor_words[k];
			size_t wl = strlen(wd), off = 0;
			if (wl >= 2)
				continue;
			for (;;) {
				const char *p = memmem(s + off, n - off, wd, wl);
				if (p == NULL)
					break;
				off = (size_t)(p - s);
				if (!win_add(w, s, n, off, off + wl, r))
					return false;
				off += wl;
			}
		}
		win_normalise(w);
		return true;
	}
	return true;
}

/* ------------------------- scoring -------------------------------- */

/* A context word (whole word, folded) in the bytes around a value. One
 * pass over them, stopping only at the first bytes of the words: a rule
 * has tens of them, and each used to be searched for on its own. */
static bool
near_word(const char *s, size_t n, size_t start, size_t end, unsigned window,
          char *const *words, size_t nwords)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t a = start > window ? start - window : 0;
	size_t b = end + 24 < n ? end + 24 : n;
	uint64_t first[4] = {0, 0, 0, 0};

	for (size_t k = 0; k < nwords; k++) {
		unsigned char c = (unsigned char)words[k][0];
		first[c >> 6] |= 1ULL << (c & 63);
	}
	for (size_t i = a; i < b; i++) {
		unsigned char c = fold[u[i]];
		if (!((first[c >> 6] >> (c & 63)) & 1))
			continue;
		for (size_t k = 0; k < nwords; k++) {
			const unsigned char *w = (const unsigned char *)words[k];
			size_t wl, j = 1;
			if (w[0] != c)
				continue;
			wl = strlen(words[k]);
			if (wl > b - i)
				continue;
			while (j < wl && fold[u[i + j]] == w[j])
				j++;
			if (j < wl)
				continue;
			/* Whole words only: "card" must not fire on "discard". */
			if ((i == 0 || !word_char(u[i - 1]) || !word_char(w[0])) &&
			    (i + wl >= n || !word_char(u[i + wl]) ||
			     !word_char(w[wl - 1])))
				return true;
		}
	}
	return false;
}

static int
match_error(int rc, const struct rule *r, char *err, size_t errlen)
{
	PCRE2_UCHAR msg[128];

	pcre2_get_error_message(rc, msg, sizeof(msg));
	snprintf(err, errlen, "rule %s: %s", r->id, (const char *)msg);
	return -1;
}

/*
 * near = words ...: keep only the windows that one of the words overlaps
 * (both lists in order of start; a word that ends before a window ends
 * before every later one). An address needs its number and its street
 * word; text full of numbers, or of words like "way" and "place", has
 * many of either and few windows with both.
 */
static void
near_filter(struct windows *w, const struct windows *near)
{
	size_t o = 0, j = 0;

	for (size_t k = 0; k < w->n; k++) {
		while (j < near->n && near->v[j].end <= w->v[k].start)
			j++;
		if (j < near->n && near->v[j].start < w->v[k].end)
			w->v[o++] = w->v[k];
	}
	w->n = o;
}

static int
run_rule(struct ruleset *rs, const struct rule *r, const char *s, size_t n,
         struct windows *w, const struct windows *near, struct digit_runs *dr,
         struct scrub_hits *out, char *err, size_t errlen)
{
	if (!windows_for(rs, w, s, n, r, dr, near)) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (r->nnear_words > 0)
		near_filter(w, near);
	for (size_t k = 0; k < w->n; k++) {
		size_t off = w->v[k].start, end = w->v[k].end;

		/* A rule whose matches overlap their anchors need not be tried
		 * from past the last anchor of the window: a window is mostly
		 * what may follow its anchors, and the regex would otherwise
		 * try to start at every byte of it. */
		pcre2_set_offset_limit(rs->mctx,
		                       r->inside ? w->v[k].last : PCRE2_UNSET);
		while (off < end && (!r->inside || off <= w->v[k].last)) {
			/* pcre2_jit_match: the JIT's own entry, without
			 * pcre2_match's checks (the subject was validated once,
			 * the offsets are ours); it is most of the cost of the
			 * many short windows of digit anchors. */
			int rc = rs->jit ? pcre2_jit_match(r->code, (PCRE2_SPTR)s, end,
			                                   off, 0, rs->md, rs->mctx)
			                 : pcre2_match(r->code, (PCRE2_SPTR)s, end, off,
			                               PCRE2_NO_UTF_CHECK, rs->md,
			                               rs->mctx);
			PCRE2_SIZE *ov;
			size_t ms, me, vs, ve;
			double score;

			if (rc == PCRE2_ERROR_NOMATCH)
				break;
			if (rc < 0)
				return match_error(rc, r, err, errlen);
			ov = pcre2_get_ovector_pointer(rs->md);
			ms = ov[0];
			me = ov[1];
			vs = ms;
			ve = me;
			if (r->value_group > 0 && (uint32_t)rc > r->value_group &&
			    ov[2 * r->value_group] != PCRE2_UNSET) {
				vs = ov[2 * r->value_group];
				ve = ov[2 * r->value_group + 1];
			}
			/* Next attempt after this match; one character on when
			 * it was empty. */
			off = me > ms ? me : me + 1;
			while (off < end && ((unsigned char)s[off] & 0xc0) == 0x80)
				off++;
			if (ve <= vs)
				continue;
			if (r->validator && !r->validator(s + vs, ve - vs))
				continue;
			score = r->score;
			if (r->ncontext > 0) {
				if (near_word(s, n, vs, ve, r->context_window, r->context,
				              r->ncontext))
					score += SCRUB_CONTEXT_BONUS;
				else if (r->context_required)
					continue;
			}
			if (r->nnegative > 0 &&
			    near_word(s, n, vs, ve, r->context_window, r->negative,
			              r->nnegative))
				score -= SCRUB_NEGATIVE_MALUS;
			if (score > 1.0)
				score = 1.0;
			if (score < SCRUB_THRESHOLD)
				continue;
			if (!hits_add(out, vs, ve, r, score)) {
				snprintf(err, errlen, "too many hits");
				return -1;
			}
		}
	}
	return 0;
}

int
scrub_find_rule(struct ruleset *rs, const struct rule *r, const char *s,
                size_t n, struct scrub_hits *out, char *err, size_t errlen)
{
	struct windows w = {NULL, 0, 0};
	struct windows near = {NULL, 0, 0};
	struct digit_runs dr = {NULL, 0, 0, NULL, 0, 0, false};
	int rc;

	if (n >= UINT32_MAX) { /* struct digit_run */
		snprintf(err, errlen, "text too large (4 GiB or more)");
		return -1;
	}
	if (r->anchor == ANCHOR_WORDS || r->anchor == ANCHOR_LITERALS ||
	    r->nnear_words > 0) {
		struct windows *wins = calloc(2 * rs->nrules, sizeof(*wins));
		long idx = (long)(r - rs->rules);
		if (wins == NULL || !anchor_pass(rs, s, n, wins, idx)) {
			if (wins != NULL) {
				free(wins[idx].v);
				free(wins[rs->nrules + (size_t)idx].v);
			}
			free(wins);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		w = wins[idx];
		near = wins[rs->nrules + (size_t)idx];
		free(wins);
	}
	rc = run_rule(rs, r, s, n, &w, &near, &dr, out, err, errlen);
	free(w.v);
	free(near.v);
	free(dr.v);
	free(dr.big);
	return rc;
}

static int
hit_priority(const void *a, const void *b)
{
	const struct scrub_hit *x = a, *y = b;
	bool xa = x->rule->action == ACT_ALLOW, ya = y->rule->action == ACT_ALLOW;

	if (xa != ya)
		return xa ? -1 : 1;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	if (x->end - x->start != y->end - y->start)
		return x->end - x->start > y->end - y->start ? -1 : 1;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return strcmp(x->rule->id, y->rule->id);
}

static int
hit_type_position(const void *a, const void *b)
{
	const struct scrub_hit *x = a, *y = b;
	int c = strcmp(x->rule->type, y->rule->type);

	if (c != 0)
		return c;
	return x->start < y->start ? -1 : x->start > y->start;
}

static int
hit_position(const void *a, const void *b)
{
	const struct scrub_hit *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * One cluster of overlapping hits (v[0..cnt), by position), resolved in
 * place; returns how many are kept, by position, or -1 (no memory).
 *
 * Two rules that see the same entity type in overlapping spans ("+1 415
 * 555 2671" and "415 555 2671") saw one entity: keep the union, so no
 * part of it is left behind, under the rule that would have won the
 * overlap (allow first, then the score). Even when their actions
 * differ: kept apart, the loser of the overlap was dropped whole and
 * the bytes only it covered stayed in the clear. Then greedy by
 * priority: a byte belongs to at most one hit.
 */
static size_t
resolve_cluster(struct scrub_hit *v, size_t cnt)
{
	unsigned char local[512], *taken = local;
	size_t base = v[0].start, span = 0, kept = 0;

	qsort(v, cnt, sizeof(*v), hit_type_position);
	for (size_t i = 1; i < cnt; i++) {
		struct scrub_hit *a = &v[kept], *b = &v[i];
		if (strcmp(a->rule->type, b->rule->type) == 0 && b->start < a->end) {
			bool aa = a->rule->action == ACT_ALLOW;
			bool ba = b->rule->action == ACT_ALLOW;
			if (b->end > a->end)
				a->end = b->end;
			if (aa != ba ? ba : b->score > a->score) {
				a->score = b->score;
				a->rule = b->rule;
			}
			continue;
		}
		v[++kept] = *b;
	}
	cnt = kept + 1;
	kept = 0;

	for (size_t i = 0; i < cnt; i++) {
		if (v[i].start < base)
			base = v[i].start;
		if (v[i].end > span)
			span = v[i].end;
	}
	span -= base;
	if (span / 8 + 1 > sizeof(local)) {
		taken = calloc(span / 8 + 1, 1);
		if (taken == NULL)
			return (size_t)-1;
	} else {
		memset(local, 0, span / 8 + 1);
	}
	qsort(v, cnt, sizeof(*v), hit_priority);
	for (size_t i = 0; i < cnt; i++) {
		struct scrub_hit *h = &v[i];
		bool free_span = true;
		for (size_t b = h->start - base; b < h->end - base && free_span; b++)
			free_span = !(taken[b / 8] & (1u << (b % 8)));
		if (!free_span)
			continue;
		for (size_t b = h->start - base; b < h->end - base; b++)
			taken[b / 8] |= (unsigned char)(1u << (b % 8));
		v[kept++] = *h;
	}
	if (taken != local)
		free(taken);
	qsort(v, kept, sizeof(*v), hit_position);
	return kept;
}

/*
 * What scrub_find needs for one text, kept with the ruleset for the next
 * one: a request's body is a dozen short strings, and allocating,
 * zeroing and freeing a hundred window lists for each cost more than
 * scanning most of them. Lists that grew large are given back after
 * each text, so one large body does not stay in memory.
 */
#define SCRATCH_KEEP 256 /* entries a list may keep between texts */

struct scratch {
	struct windows *wins; /* 2 * nrules: each rule's windows, near words */
	size_t nwins;
	/* The lists of wins that anchor_pass made non-empty: a string holds
	 * the anchors of a few rules, and going over all 2 * nrules lists
	 * to sort and empty them cost more than the string's own scan. */
	uint32_t *touched;
	size_t ntouched;
	struct windows w;     /* the current rule's, when not indexed */
	struct digit_runs dr;
	/* Which of the protocol's own words (inert_words) these rules find
	 * nothing in, known after the first text: a chat body holds a role
	 * per message, and each cost a pass of every rule. */
	uint32_t inert;
	bool inert_known;
};

/* Role names and other values the chat APIs define (never user text). */
static const char *const inert_words[] = {
    "system", "user", "assistant", "tool", "developer", "function",
    "model", "text", "auto", "none", "required", "stop", "length",
    "tool_calls", "image_url", "input_text", "output_text", "message",
};

void
scrub_scratch_free(void *scratch)
{
	struct scratch *sc = scratch;

	if (sc == NULL)
		return;
	for (size_t i = 0; i < sc->nwins; i++)
		free(sc->wins[i].v);
	free(sc->wins);
	free(sc->touched);
	free(sc->w.v);
	free(sc->dr.v);
	free(sc->dr.big);
	free(sc);
}

static void
scratch_list_trim(struct windows *w)
{
	w->n = 0;
	if (w->cap > SCRATCH_KEEP) {
		free(w->v);
		w->v = NULL;
		w->cap = 0;
	}
}

/* Empty again, and no larger than SCRATCH_KEEP a list. */
/* Marks wins[idx], about to get its first entry, for scratch_reset (a
 * no-op for the lists of scrub_find_rule, which are its own). */
static void
scratch_touch(struct ruleset *rs, struct windows *wins, size_t idx)
{
	struct scratch *sc = rs->scrub_scratch;

	if (sc != NULL && wins == sc->wins && sc->ntouched < sc->nwins)
		sc->touched[sc->ntouched++] = (uint32_t)idx;
}

/* win_normalise on the lists anchor_pass filled for scrub_find. */
static void
scratch_normalise(struct ruleset *rs)
{
	struct scratch *sc = rs->scrub_scratch;

	for (size_t k = 0; k < sc->ntouched; k++)
		if (sc->wins[sc->touched[k]].n > 1)
			win_normalise(&sc->wins[sc->touched[k]]);
}

static void
scratch_reset(struct scratch *sc)
{
	for (size_t k = 0; k < sc->ntouched; k++)
		scratch_list_trim(&sc->wins[sc->touched[k]]);
	sc->ntouched = 0;
	scratch_list_trim(&sc->w);
	sc->dr.n = sc->dr.nbig = 0;
	sc->dr.done = false;
	if (sc->dr.cap > SCRATCH_KEEP) {
		free(sc->dr.v);
		sc->dr.v = NULL;
		sc->dr.cap = 0;
	}
	if (sc->dr.capbig > SCRATCH_KEEP) {
		free(sc->dr.big);
		sc->dr.big = NULL;
		sc->dr.capbig = 0;
	}
}

static struct scratch *
scratch_of(struct ruleset *rs)
{
	struct scratch *sc = rs->scrub_scratch;

	if (sc != NULL)
		return sc;
	sc = calloc(1, sizeof(*sc));
	if (sc == NULL)
		return NULL;
	sc->nwins = rs->nrules ? 2 * rs->nrules : 1;
	sc->wins = calloc(sc->nwins, sizeof(*sc->wins));
	sc->touched = calloc(sc->nwins, sizeof(*sc->touched));
	if (sc->wins == NULL || sc->touched == NULL) {
		free(sc->wins);
		free(sc->touched);
		free(sc);
		return NULL;
	}
	rs->scrub_scratch = sc;
	return sc;
}

static int
inert_index(const char *s, size_t n)
{
	if (n > 11)
		return -1;
	for (size_t k = 0; k < SCRIM_ARRAY_LEN(inert_words); k++)
		if (strlen(inert_words[k]) == n && memcmp(inert_words[k], s, n) == 0)
			return (int)k;
	return -1;
}

/* The inert words these rules find nothing in: found by scrubbing each
 * once, so no rule pack can be wrong about it. */
static void
inert_learn(struct ruleset *rs, struct scratch *sc)
{
	struct scrub_hits h;
	char err[64];
	uint32_t inert = 0;

	sc->inert_known = true; /* scrub_find below runs every rule */
	scrub_hits_init(&h);
	for (size_t k = 0; k < SCRIM_ARRAY_LEN(inert_words); k++)
		if (scrub_find(rs, inert_words[k], strlen(inert_words[k]), &h, err,
		               sizeof(err)) == 0 &&
		    h.n == 0)
			inert |= 1u << k;
	scrub_hits_free(&h);
	sc->inert = inert;
}

int
scrub_find(struct ruleset *rs, const char *s, size_t n, struct scrub_hits *out,
           char *err, size_t errlen)
{
	struct scratch *sc;
	size_t kept = 0;
	int rc = 0;

	out->n = 0;
	if (n >= UINT32_MAX) { /* struct digit_run */
		snprintf(err, errlen, "text too large (4 GiB or more)");
		return -1;
	}
	/* Role names, short ids, one-word answers: no rule can match. */
	if (n < rs->min_length)
		return 0;
	sc = scratch_of(rs);
	if (sc == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (!sc->inert_known)
		inert_learn(rs, sc);
	if (sc->inert != 0) {
		int k = inert_index(s, n);
		if (k >= 0 && (sc->inert >> k) & 1)
			return 0;
	}
	if (!anchor_pass(rs, s, n, sc->wins, -1)) {
		snprintf(err, errlen, "out of memory");
		rc = -1;
	}
	for (size_t i = 0; i < rs->nrules && rc == 0; i++) {
		const struct rule *r = &rs->rules[i];
		bool indexed = r->anchor == ANCHOR_WORDS ||
		               r->anchor == ANCHOR_LITERALS;
		/* No anchor of the rule in the text (most rules, most texts). */
		if (n < r->min_length)
			continue;
		if (indexed && sc->wins[i].n == 0) {
			if (!r->short_literals)
				continue;
			scratch_touch(rs, sc->wins, i); /* windows_for may fill it */
		}
		rc = run_rule(rs, r, s, n, indexed ? &sc->wins[i] : &sc->w,
		              &sc->wins[rs->nrules + i], &sc->dr, out, err, errlen);
	}
	scratch_reset(sc);
	if (rc != 0 || out->n < 2)
		return rc;

	/* Hits interact only with the hits they overlap: sorted by
	 * position, the text falls into clusters of spans that overlap one
	 * another, most of them one hit long, and each is resolved alone.
	 * (A bitmap of taken bytes for the whole text cost a page per few
	 * kilobytes and two sorts of every hit.) glibc's qsort is a merge
	 * sort, so hits that start together stay in rule order, as the
	 * tie-breaks below expect. */
	qsort(out->v, out->n, sizeof(*out->v), hit_position);
	for (size_t i = 0; i < out->n;) {
		size_t j = i + 1, end = out->v[i].end, m;
		while (j < out->n && out->v[j].start < end) {
			if (out->v[j].end > end)
				end = out->v[j].end;
			j++;
		}
		m = j - i == 1 ? 1 : resolve_cluster(out->v + i, j - i);
		if (m == (size_t)-1) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		memmove(out->v + kept, out->v + i, m * sizeof(*out->v));
		kept += m;
		i = j;
	}
	out->n = kept;
	return 0;
}

/* ------------------------- rewriting ------------------------------ */

static bool
is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z');
}

static bool
keyed_hex(const unsigned char secret[32], const char *type, const char *v,
          size_t vn, char *out, size_t hexlen)
{
	static const char hx[] = "0123456789abcdef";
	const char *parts[3] = {"hash", type, v};
	size_t lens[3] = {4, strlen(type), vn};
	unsigned char mac[32];

	if (!vault_hmac(secret, parts, lens, 3, mac))
		return false;
	for (size_t i = 0; i < hexlen; i++)
		out[i] = hx[(mac[i / 2] >> (i % 2 ? 0 : 4)) & 15];
	out[hexlen] = '\0';
	OPENSSL_cleanse(mac, sizeof(mac));
	return true;
}

static enum scrub_action
effective(const struct scrub_ctx *ctx, const struct rule *r)
{
	for (size_t i = 0; i < ctx->noverrides; i++)
		if (strcmp(ctx->overrides[i].match, r->type) == 0 ||
		    fnmatch(ctx->overrides[i].match, r->id, 0) == 0)
			return ctx->overrides[i].action;
	return r->action;
}

static bool
apply_one(struct scrub_ctx *ctx, const char *v, size_t vn,
          const struct rule *r, enum scrub_action act, struct buf *out)
{
	switch (act) {
	case ACT_ALLOW:
		ctx->stats.allowed++;
		return buf_add(out, v, vn);
	case ACT_REDACT:
		return buf_addc(out, '[') && buf_add(out, r->type, strlen(r->type)) &&
		       buf_addc(out, ']');
	case ACT_MASK: {
		size_t alnum = 0, seen = 0, tail;
		for (size_t i = 0; i < vn; i++)
			alnum += is_alnum((unsigned char)v[i]);
		/* The last 4 letters or digits, but never more than half of
		 * them: "a@b.io" kept whole would not be masked at all. */
		tail = alnum / 2 < 4 ? alnum / 2 : 4;
		for (size_t i = 0; i < vn; i++) {
			unsigned char c = (unsigned char)v[i];
			bool keep = !is_alnum(c) || seen++ >= alnum - tail;
			/* Non-ASCII bytes are masked whole, one '*' per byte
			 * would split characters: keep them out of the output. */
			if (c >= 0x80)
				continue;
			if (!buf_addc(out, (char)(keep ? c : '*')))
				return false;
		}
		return true;
	}
	case ACT_HASH: {
		char hex[13];
		return keyed_hex(ctx->secret, r->type, v, vn, hex, 12) &&
		       buf_add(out, r->type, strlen(r->type)) && buf_addc(out, '-') &&
		       buf_add(out, hex, 12);
	}
	case ACT_TOKENIZE:
	case ACT_BLOCK:
	case ACT_LOCAL:
	default: {
		const struct vault_entry *e;
		if (ctx->vault == NULL) /* no restore possible: redact */
			return buf_addc(out, '[') &&
			       buf_add(out, r->type, strlen(r->type)) &&
			       buf_addc(out, ']');
		e = vault_put(ctx->vault, ctx->secret,
		              ctx->key_id ? ctx->key_id : "", r->type, v, vn);
		return e != NULL && buf_addc(out, '<') &&
		       buf_add(out, e->core, e->core_len) && buf_addc(out, '>');
	}
	}
}

static void
count(struct scrub_count *v, size_t *n, const char *name)
{
	/* Names are the rules' own strings: the same pointer first (every
	 * hit of a rule), then equal text (rules sharing a type). */
	for (size_t i = 0; i < *n; i++)
		if (v[i].name == name) {
			v[i].count++;
			return;
		}
	for (size_t i = 0; i < *n; i++)
		if (strcmp(v[i].name, name) == 0) {
			v[i].count++;
			return;
		}
	if (*n < SCRUB_MAX_COUNTS) {
		v[*n].name = name;
		v[*n].count = 1;
		(*n)++;
	}
}

bool
scrub_apply(struct scrub_ctx *ctx, const char *s, size_t n,
            const struct scrub_hits *hits, struct buf *out)
{
	size_t at = 0;

	for (size_t i = 0; i < hits->n; i++) {
		const struct scrub_hit *h = &hits->v[i];
		const struct rule *r = h->rule;
		enum scrub_action act = effective(ctx, r);

		ctx->stats.by_action[act]++;
		if (act == ACT_BLOCK && ctx->stats.block == NULL)
			ctx->stats.block = r;
		if (act == ACT_LOCAL && ctx->stats.local == NULL)
			ctx->stats.local = r;
		if (!buf_add(out, s + at, h->start - at) ||
		    !apply_one(ctx, s + h->start, h->end - h->start, r, act, out))
			return false;
		if (act != ACT_ALLOW) {
			ctx->stats.replaced++;
			count(ctx->stats.types, &ctx->stats.ntypes, r->type);
		}
		count(ctx->stats.rules, &ctx->stats.nrules, r->id);
		at = h->end;
	}
	return buf_add(out, s + at, n - at);
}
