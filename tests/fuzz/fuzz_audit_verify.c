/*
 * fuzz_audit_verify.c - the audit chain verifier. At start the driver
 * seals, with a fixed key and the writer's own auditchain_seal, a valid
 * chain of seven records over two epochs: a genesis "open" checkpoint,
 * requests, an "epoch" checkpoint that moves the key on, a request, a
 * tombstone, a "close" checkpoint. Each input then builds one file to verify:
 *  - first byte even: the rest of the input is the file, as is;
 *  - first byte odd: the original chain, changed by the edits the rest
 *    of the input spells, 4 bytes each (op, position in 2 bytes, arg):
 *    flip bits, delete, insert, overwrite, swap two bytes, truncate,
 *    duplicate a range, swap a line with the next, delete a line.
 * The file is verified as `scrim audit verify` walks one (the bounded
 * line reader from a real fd, a file must open with a checkpoint, the
 * last line must end with a newline, an empty file fails). Beyond "no
 * crash": an accepted file must be whole lines of the original chain,
 * one run of them (cutting whole records off the end is undetectable by
 * design, RELIABILITY §4; so is starting at a later checkpoint, which
 * verify reports as not genesis). When the verifier says genesis, the
 * run must start at the original's first byte. So no edit to the bytes
 * of the records kept, and no reordering, deletion or insertion inside
 * the run, is ever accepted.
 */
#include "fuzz.h"

#include "auditchain.h"
#include "buf.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_OPS 16
#define MAX_FILE ((size_t)64 << 10)

static const unsigned char key0[AUDITCHAIN_KEY_LEN] = {
	0x5c, 0x72, 0x69, 0x6d, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x61,
	0x75, 0x64, 0x69, 0x74, 0x2d, 0x6b, 0x65, 0x79, 0x2d, 0x30, 0x31,
	0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62,
};

static struct buf chain; /* the original, sealed once */

/* Append body (no closing brace) and seal it into chain. */
static void
seal_one(struct auditchain_state *st, const unsigned char *key,
         const char *body)
{
	size_t mark = chain.len;

	if (!buf_add(&chain, body, strlen(body)) ||
	    !auditchain_seal(&chain, mark, st, key)) {
		fprintf(stderr, "fuzz_audit_verify: cannot seal the chain\n");
		abort();
	}
}

static void
seal_checkpoint(struct auditchain_state *st, const unsigned char *key,
                const char *event)
{
	char hex[2 * AUDITCHAIN_MAC_LEN + 1], body[512];

	auditchain_hex(st->mac, AUDITCHAIN_MAC_LEN, hex);
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"ts\":\"2026-01-01T00:00:00.000Z\","
	         "\"event\":\"%s\",\"boot\":\"fuzz\",\"version\":\"0\","
	         "\"prev_seq\":%" PRIu64 ",\"prev_mac\":\"%s\"",
	         event, st->seq, hex);
	seal_one(st, key, body);
}

static void
build_chain(void)
{
	struct auditchain_state st;
	unsigned char key[AUDITCHAIN_KEY_LEN];
	memset(&st, 0, sizeof(st));
	memcpy(key, key0, sizeof(key));
	buf_init(&chain, MAX_FILE);
	seal_checkpoint(&st, key, "open");
	seal_one(&st, key,
	         "{\"type\":\"request\",\"ts\":\"2026-01-01T00:00:01.000Z\","
	         "\"key_id\":\"k1\",\"status\":200,\"spans\":[\"EMAIL\"]");
	seal_one(&st, key,
	         "{\"type\":\"request\",\"ts\":\"2026-01-01T00:00:02.000Z\","
	         "\"key_id\":\"k2\",\"status\":502,\"note\":\"a \\\"q\\\" \\u00e9\"");
	/* As the writer's chain_roll: the next epoch's key, count reset. */
	auditchain_key_next(key);
	st.epoch++;
	st.count = 0;
	seal_checkpoint(&st, key, "epoch");
	seal_one(&st, key,
	         "{\"type\":\"request\",\"ts\":\"2026-01-01T00:15:03.000Z\","
	         "\"key_id\":\"k1\",\"status\":200,\"tokens\":{\"in\":12,\"out\":3}");
	seal_one(&st, key,
	         "{\"type\":\"tombstone\",\"ts\":\"2026-01-01T00:15:04.000Z\","
	         "\"key_id\":\"k2\",\"removed\":1");
	seal_checkpoint(&st, key, "close");
	OPENSSL_cleanse(key, sizeof(key));
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	build_chain();
	/* The seed corpus holds a copy (0x00 + the chain): this prints it. */
	if (getenv("FUZZ_AUDIT_DUMP") != NULL)
		fwrite(chain.p, 1, chain.len, stdout);
	return 0;
}

/* ---- the edits ----------------------------------------------------------- */

/* Where the line holding pos starts, and ends (after its newline). */
static size_t
line_start(const struct buf *f, size_t pos)
{
	while (pos > 0 && f->p[pos - 1] != '\n')
		pos--;
	return pos;
}

static size_t
line_end(const struct buf *f, size_t pos)
{
	const char *nl = memchr(f->p + pos, '\n', f->len - pos);

	return nl != NULL ? (size_t)(nl - f->p) + 1 : f->len;
}

static void
swap_lines(struct buf *f, size_t pos)
{
	size_t a = line_start(f, pos), b = line_end(f, pos), c;
	char *tmp;

	if (b >= f->len)
		return;
	c = line_end(f, b);
	tmp = malloc(b - a);
	if (tmp == NULL)
		abort();
	/* [a,b) [b,c) -> [b,c) [a,b) */
	memcpy(tmp, f->p + a, b - a);
	memmove(f->p + a, f->p + b, c - b);
	memcpy(f->p + a + (c - b), tmp, b - a);
	free(tmp);
}

static void
apply_ops(struct buf *f, const uint8_t *ops, size_t n)
{
	for (size_t k = 0; k + 4 <= n && k / 4 < MAX_OPS; k += 4) {
		uint8_t op = ops[k] % 9, arg = ops[k + 3];
		size_t pos = (size_t)ops[k + 1] << 8 | ops[k + 2];
		size_t len = f->len;

		if (len == 0 && op != 2)
			continue;
		if (len > 0)
			pos %= len;
		switch (op) {
		case 0: /* flip the bits of arg (or bit 0) at pos */
			f->p[pos] ^= (char)(arg ? arg : 1);
			break;
		case 1: { /* delete arg + 1 bytes at pos */
			size_t d = (size_t)arg + 1;

			if (d > len - pos)
				d = len - pos;
			memmove(f->p + pos, f->p + pos + d, len - pos - d);
			f->len -= d;
			break;
		}
		case 2: /* insert the byte arg at pos */
			if (f->len + 1 > MAX_FILE || !buf_reserve(f, 1))
				break;
			if (len > 0)
				memmove(f->p + pos + 1, f->p + pos, len - pos);
			f->p[len > 0 ? pos : 0] = (char)arg;
			f->len++;
			break;
		case 3: /* overwrite with arg */
			f->p[pos] = (char)arg;
			break;
		case 4: { /* swap the bytes at pos and pos + arg */
			size_t q = (pos + arg) % len;
			char c = f->p[pos];

			f->p[pos] = f->p[q];
			f->p[q] = c;
			break;
		}
		case 5: /* truncate at pos */
			f->len = pos;
			break;
		case 6: { /* duplicate arg + 1 bytes from pos, at their end */
			size_t d = (size_t)arg + 1;

			if (d > len - pos)
				d = len - pos;
			if (f->len + d > MAX_FILE || !buf_reserve(f, d))
				break;
			memmove(f->p + pos + 2 * d, f->p + pos + d, len - pos - d);
			memcpy(f->p + pos + d, f->p + pos, d);
			f->len += d;
			break;
		}
		case 7: /* swap the line holding pos with the next one */
			swap_lines(f, pos);
			break;
		case 8: { /* delete the line holding pos */
			size_t a = line_start(f, pos), b = line_end(f, pos);

			memmove(f->p + a, f->p + b, len - b);
			f->len -= b - a;
			break;
		}
		}
	}
}

/* ---- verifying a file as `scrim audit verify` does ---------------------- */

/* true when the verifier accepts every line; *genesis as it said. */
static bool
verify_file(const char *path, bool *genesis)
{
	struct auditchain_verifier v;
	struct auditchain_reader r;
	const char *s;
	size_t n;
	bool nl, first = true, ok = true;
	int rc, fd = open(path, O_RDONLY | O_CLOEXEC);

	FUZZ_CHECK(fd >= 0, "cannot open %s", path);
	auditchain_verifier_init(&v, key0);
	auditchain_reader_init(&r, fd);
	while ((rc = auditchain_reader_next(&r, &s, &n, &nl)) == 1) {
		FUZZ_CHECK(s >= r.buf && n <= r.len, "a line outside the buffer");
		if (!nl || !auditchain_verifier_feed(&v, s, n, first)) {
			ok = false;
			break;
		}
		first = false;
	}
	if (rc < 0 || first)
		ok = false;
	*genesis = v.started && v.genesis;
	auditchain_reader_free(&r);
	auditchain_verifier_wipe(&v);
	close(fd);
	return ok;
}

/* Is f[0..n) one run of whole lines of the chain; at its start? */
static bool
whole_lines(const char *f, size_t n, bool *at_start)
{
	const char *c = chain.p;
	size_t cn = chain.len;

	*at_start = false;
	if (n == 0 || f[n - 1] != '\n')
		return false;
	for (size_t a = 0; a + n <= cn; a++) {
		if (a > 0 && c[a - 1] != '\n')
			continue;
		if (memcmp(c + a, f, n) == 0) {
			*at_start = a == 0;
			return true;
		}
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf f;
	const char *path;
	bool accepted, genesis, run, at_start;

	if (size == 0 || size > MAX_FILE)
		return 0;
	buf_init(&f, MAX_FILE);
	if ((data[0] & 1) == 0) {
		if (!buf_add(&f, data + 1, size - 1))
			abort();
	} else {
		if (!buf_add(&f, chain.p, chain.len))
			abort();
		apply_ops(&f, data + 1, size - 1);
	}
	path = fuzz_write_file("audit.jsonl", (const uint8_t *)f.p, f.len);
	accepted = verify_file(path, &genesis);
	run = whole_lines(f.p, f.len, &at_start);
	if (accepted) {
		FUZZ_CHECK(run, "a changed chain of %zu bytes was accepted "
		                "(the original has %zu)",
		           f.len, chain.len);
		FUZZ_CHECK(!genesis || at_start,
		           "accepted as genesis, but not from the chain's start");
	}
	/* And the other way: the untouched chain, and any prefix of whole
	 * records, must pass. */
	if (run && at_start)
		FUZZ_CHECK(accepted, "a valid prefix of %zu bytes was refused",
		           f.len);
	buf_free(&f);
	return 0;
}
