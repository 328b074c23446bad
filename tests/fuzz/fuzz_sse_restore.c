/*
 * fuzz_sse_restore.c - the restorer on a provider's answer. A vault holds
 * three placeholders (made once, with a fixed secret, so the committed
 * corpus can spell them); the first input byte picks where the answer is
 * split, the rest is the answer. Beyond "no crash, no leak": the answer
 * restored as an SSE stream, and as a whole answer, gives the same
 * verdict and the same bytes however it arrives: at once, in two pieces
 * cut at two different places, and (small answers) a byte at a time.
 */
#include "fuzz.h"

#include "buf.h"
#include "restore.h"
#include "vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WHOLE (1024 * 1024)
#define MAX_OUT (8 * 1024 * 1024)
#define BYTEWISE_MAX 512

static struct vault *vault;

struct outcome {
	bool ok;
	struct buf out;
};

/* Feed in[0..n) cut at cuts[] (ascending), or a byte at a time. */
static void
run(enum restore_mode mode, const char *in, size_t n, const size_t *cuts,
    size_t ncuts, bool bytewise, struct outcome *o)
{
	struct restore *r = restore_new(vault, mode, MAX_WHOLE);
	size_t from = 0;

	o->ok = true;
	buf_init(&o->out, MAX_OUT);
	if (bytewise) {
		for (size_t i = 0; i < n && o->ok; i++)
			o->ok = restore_feed(r, in + i, 1, &o->out);
	} else {
		for (size_t k = 0; k <= ncuts && o->ok; k++) {
			size_t to = k < ncuts ? cuts[k] : n;
			o->ok = restore_feed(r, in + from, to - from, &o->out);
			from = to;
		}
	}
	if (o->ok)
		o->ok = restore_finish(r, &o->out);
	restore_free(r);
}

static void
same(const struct outcome *a, const struct outcome *b, const char *mode,
     const char *how)
{
	FUZZ_CHECK(a->ok == b->ok, "%s, %s: restored %s, at once %s", mode, how,
	           b->ok ? "ok" : "failed", a->ok ? "ok" : "failed");
	if (!a->ok)
		return; /* what went out before the failure may differ */
	FUZZ_CHECK(a->out.len == b->out.len &&
	           (a->out.len == 0 ||
	            memcmp(a->out.p, b->out.p, a->out.len) == 0),
	           "%s, %s: output differs (%zu bytes, at once %zu)", mode, how,
	           b->out.len, a->out.len);
}

static void
check_mode(enum restore_mode mode, const char *in, size_t n, size_t cut1,
           size_t cut2)
{
	const char *name = mode == RESTORE_SSE ? "SSE" : "whole";
	struct outcome once, one, two;

	run(mode, in, n, NULL, 0, false, &once);
	run(mode, in, n, &cut1, 1, false, &one);
	same(&once, &one, name, "first cut");
	run(mode, in, n, &cut2, 1, false, &two);
	same(&once, &two, name, "second cut");
	buf_wipe(&one.out);
	buf_wipe(&two.out);
	if (n <= BYTEWISE_MAX) {
		struct outcome bytes;
		run(mode, in, n, NULL, 0, true, &bytes);
		same(&once, &bytes, name, "a byte at a time");
		buf_wipe(&bytes.out);
	}
	buf_wipe(&once.out);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const struct {
		const char *type, *value;
	} values[] = {
		{"EMAIL", "jane.doe@example.com"},
		{"PHONE", "+1 415 555 2671"},
		{"IBAN", "DE89 3704 0044 0532 0130 00"},
	};
	unsigned char secret[32];

	(void)argc;
	(void)argv;
	fuzz_quiet();
	memset(secret, 0x42, sizeof(secret));
	vault = vault_new();
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		const struct vault_entry *e =
		    vault_put(vault, secret, "fuzz", values[i].type, values[i].value,
		              strlen(values[i].value));
		if (e == NULL) {
			fprintf(stderr, "fuzz_sse_restore: vault_put failed\n");
			abort();
		}
		/* SCRIM_FUZZ_CORES=1 prints them, to write corpus files. */
		if (getenv("SCRIM_FUZZ_CORES") != NULL)
			fprintf(stderr, "%.*s\n", (int)e->core_len, e->core);
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in;
	size_t n, cut1, cut2;

	if (size < 1)
		return 0;
	in = (const char *)data + 1;
	n = size - 1;
	cut1 = data[0] % (n + 1);
	cut2 = (cut1 + 1 + n / 2) % (n + 1);
	check_mode(RESTORE_SSE, in, n, cut1, cut2);
	check_mode(RESTORE_WHOLE, in, n, cut1, cut2);
	return 0;
}
