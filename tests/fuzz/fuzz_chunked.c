/*
 * fuzz_chunked.c - the chunked request body decoder. The first byte picks
 * where the stream is split in two, the second the decoded-size cap; the
 * rest is the body as the client sent it. Beyond "no crash":
 *  - every byte handed to emit lies in the input fed so far and before
 *    what the decoder says it consumed (it never reads past the end);
 *  - the decoded size never passes the cap, and equals the decoder's own
 *    count;
 *  - fed at once, in two parts, or a byte at a time, the stream gives the
 *    same verdict, the same consumed count and the same output;
 *  - a body the decoder calls complete decodes, by a plain reference
 *    reading of the same bytes, to exactly what it emitted: no chunk gave
 *    more or fewer bytes than its size line declared.
 */
#include "fuzz.h"

#include "http.h"

#include <stdlib.h>
#include <string.h>

#define BYTEWISE_MAX 2048

static const size_t caps[] = {0, 1, 7, 64, 4096, SIZE_MAX};

struct sink {
	const char *lo, *hi; /* the bytes of the current feed */
	char *out;           /* decoded bytes; never more than the input */
	size_t len, room;
};

static void
emit(void *arg, const char *p, size_t n)
{
	struct sink *s = arg;

	FUZZ_CHECK(p >= s->lo && n <= (size_t)(s->hi - p),
	           "emit of %zu bytes outside the bytes fed", n);
	FUZZ_CHECK(n <= s->room - s->len, "decoded more than the input (%zu)",
	           s->room);
	if (n > 0)
		memcpy(s->out + s->len, p, n);
	s->len += n;
}

struct run {
	enum http_chunk_result r;
	size_t consumed;
	struct sink sink;
	struct http_chunked c;
};

static void
run_init(struct run *run, size_t n)
{
	memset(run, 0, sizeof(*run));
	run->sink.room = n;
	run->sink.out = malloc(n ? n : 1);
	FUZZ_CHECK(run->sink.out != NULL, "malloc %zu", n);
	run->r = HTTP_CHUNK_MORE;
}

/* Feed in[from..to) unless the decoder already stopped. */
static void
run_feed(struct run *run, const char *in, size_t from, size_t to, size_t cap)
{
	size_t used = 0;

	if (run->r != HTTP_CHUNK_MORE || from == to)
		return;
	run->sink.lo = in + from;
	run->sink.hi = in + to;
	run->r = http_chunked_feed(&run->c, in + from, to - from, &used, cap,
	                           emit, &run->sink);
	FUZZ_CHECK(used <= to - from, "consumed %zu of %zu", used, to - from);
	if (run->r == HTTP_CHUNK_MORE)
		FUZZ_CHECK(used == to - from, "MORE after %zu of %zu", used,
		           to - from);
	run->consumed += used;
	FUZZ_CHECK(run->sink.len <= cap, "decoded %zu past the cap %zu",
	           run->sink.len, cap);
	FUZZ_CHECK(run->c.total == run->sink.len, "total %zu, emitted %zu",
	           run->c.total, run->sink.len);
	/* Emitted bytes come from what was consumed. */
	FUZZ_CHECK(run->sink.len <= run->consumed, "emitted %zu of %zu consumed",
	           run->sink.len, run->consumed);
}

static void
run_same(const struct run *a, const struct run *b, const char *how)
{
	FUZZ_CHECK(a->r == b->r, "%s: verdict %d, at once %d", how, (int)b->r,
	           (int)a->r);
	FUZZ_CHECK(a->consumed == b->consumed, "%s: consumed %zu, at once %zu",
	           how, b->consumed, a->consumed);
	FUZZ_CHECK(a->sink.len == b->sink.len &&
	           (a->sink.len == 0 ||
	            memcmp(a->sink.out, b->sink.out, a->sink.len) == 0),
	           "%s: output differs", how);
}

static int
hex(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
		return (ch | 0x20) - 'a' + 10;
	return -1;
}

/* Find CRLF at or after i; the offset just past it, or 0. */
static size_t
past_crlf(const char *in, size_t n, size_t i)
{
	for (; i + 1 < n; i++)
		if (in[i] == '\r')
			return in[i + 1] == '\n' ? i + 2 : 0;
	return 0;
}

/*
 * The reference reading of a complete chunked body in[0..n): size lines
 * (hex, then anything up to CRLF), that many bytes and CRLF, then trailer
 * lines up to an empty one, which must end exactly at n. Lenient about
 * what the decoder refuses; it only has to agree on what it accepts.
 */
static bool
reference(const char *in, size_t n, char *out, size_t *out_len)
{
	size_t i = 0, o = 0;

	for (;;) {
		uint64_t size = 0;
		unsigned digits = 0;
		int v;

		while (i < n && (v = hex(in[i])) >= 0) {
			if (++digits > 16)
				return false;
			size = size << 4 | (uint64_t)v;
			i++;
		}
		if (digits == 0 || (i = past_crlf(in, n, i)) == 0)
			return false;
		if (size == 0)
			break;
		if (size > n - i || n - i - size < 2)
			return false;
		memcpy(out + o, in + i, (size_t)size);
		o += (size_t)size;
		i += (size_t)size;
		if (in[i] != '\r' || in[i + 1] != '\n')
			return false;
		i += 2;
	}
	for (;;) {
		size_t start = i;
		if ((i = past_crlf(in, n, i)) == 0)
			return false;
		if (i - start == 2)
			break;
	}
	*out_len = o;
	return i == n;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run once, two, bytes;
	const char *in;
	size_t n, cut, cap;

	if (size < 2)
		return 0;
	in = (const char *)data + 2;
	n = size - 2;
	cut = data[0] % (n + 1);
	cap = caps[data[1] % (sizeof(caps) / sizeof(caps[0]))];

	run_init(&once, n);
	run_feed(&once, in, 0, n, cap);

	run_init(&two, n);
	run_feed(&two, in, 0, cut, cap);
	run_feed(&two, in, cut, n, cap);
	run_same(&once, &two, "two parts");

	if (n <= BYTEWISE_MAX) {
		run_init(&bytes, n);
		for (size_t i = 0; i < n; i++)
			run_feed(&bytes, in, i, i + 1, cap);
		run_same(&once, &bytes, "byte at a time");
		free(bytes.sink.out);
	}

	if (once.r == HTTP_CHUNK_DONE) {
		char *ref = malloc(n ? n : 1);
		size_t ref_len = 0;
		FUZZ_CHECK(ref != NULL, "malloc %zu", n);
		FUZZ_CHECK(reference(in, once.consumed, ref, &ref_len),
		           "a body the decoder accepted (%zu bytes) is not chunked "
		           "framing", once.consumed);
		FUZZ_CHECK(ref_len == once.sink.len &&
		           (ref_len == 0 ||
		            memcmp(ref, once.sink.out, ref_len) == 0),
		           "decoded %zu bytes, the size lines declare %zu",
		           once.sink.len, ref_len);
		free(ref);
	}
	free(once.sink.out);
	free(two.sink.out);
	return 0;
}
