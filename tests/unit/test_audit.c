/*
 * test_audit.c - the audit log end to end on temporary files: records
 * written through audit_open/audit_write/audit_close verify; every kind of
 * tampering is caught at the right line (one byte edited, a line deleted,
 * two lines swapped, a line cut short, files spliced, an old record
 * re-sealed with a later epoch's key); rotation links files; forget
 * re-seals with a tombstone; a full disk (/dev/full, RLIMIT_FSIZE) makes
 * the log unhealthy and loses nothing once it recovers, even with room
 * for only part of what is queued. Opened with an event loop, the loop
 * appends at the end of its turns while the writer thread fsyncs and
 * reopens, and the chain still verifies.
 */
#include "audit.h"
#include "auditchain.h"
#include "buf.h"
#include "config.h"
#include "harness.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[] = "/tmp/scrim-test-audit-XXXXXX";
static char keypath[256];

/* ---- helpers ----------------------------------------------------------- */

static char *
path_in(const char *name)
{
	static char p[8][512];
	static int next;
	char *s = p[next++ % 8];

	snprintf(s, sizeof(p[0]), "%s/%s", dir, name);
	return s;
}

static void
make_cfg(struct scrim_config *c, const char *file)
{
	memset(c, 0, sizeof(*c));
	c->audit_on = true;
	c->audit_file = (char *)file;
	c->audit_key_file = keypath;
	c->audit_fsync = 2; /* never: the tests are about the chain */
	c->audit_fsync_interval_ms = 1000;
	c->audit_block = 0;
	c->audit_client_address = 1;
	c->audit_queue = 10000;
	c->state_dir = dir;
}

static void
fill(struct audit_record *r, int i, const char *key_id)
{
	static const struct audit_count red[] = {
		{"email", 2}, {"iban", 1}, {"email", 1}};
	static const struct audit_count rules[] = {{"contact.email", 3}};
	static const char *const ctx[] = {"doc-1#3", "doc-\"2\"#1"};
	static char id[32];

	memset(r, 0, sizeof(*r));
	snprintf(id, sizeof(id), "req-%06d", i);
	/* 100 ms apart: records 9 on fall in the next second, which the
	 * cached text of the second must follow. */
	r->time_ms = 1700000000123ULL + (uint64_t)i * 100;
	r->request_id = id;
	r->key_id = key_id;
	/* Addresses alternate, past the last-address cache. */
	r->client_addr = i % 2 ? "198.51.100.200:1234" : "203.0.113.77:5555";
	r->way_in = "base_url";
	r->method = "POST";
	r->path = "/v1/chat/completions?user=someone@example.com";
	r->provider = "openai";
	r->model = "gpt-4o-mini\xff"; /* invalid UTF-8 must not break JSON */
	r->status = 200;
	r->decision = "forwarded";
	r->bytes_in = 1234;
	r->bytes_out = 5678;
	r->tokens_in = 100;
	r->tokens_out = -1;
	r->cost_usd = 0.000123;
	r->redactions = red;
	r->nredactions = SCRIM_ARRAY_LEN(red);
	r->rules = rules;
	r->nrules = SCRIM_ARRAY_LEN(rules);
	r->context_ids = ctx;
	r->ncontext = SCRIM_ARRAY_LEN(ctx);
	r->ms_total = 42;
	r->ms_upstream = 40;
	r->us_scrub = 300;
}

static void
write_n(struct audit *a, int from, int n, const char *key_id)
{
	struct audit_record r;

	for (int i = from; i < from + n; i++) {
		fill(&r, i, key_id);
		CHECK(audit_write(a, &r), "audit_write %d accepted", i);
	}
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Poll the stats until cond holds or 10 s pass. */
#define WAIT_FOR(a, st, cond)                                                  \
	do {                                                                   \
		for (int w_ = 0; w_ < 2000; w_++) {                            \
			audit_get_stats((a), &(st));                           \
			if (cond)                                              \
				break;                                         \
			sleep_ms(5);                                           \
		}                                                              \
	} while (0)

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	if (fread(p, 1, (size_t)n, f) != (size_t)n)
		n = 0;
	p[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return p;
}

static void
spit(const char *path, const char *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return;
	if (fwrite(p, 1, n, f) != n)
		fprintf(stderr, "short write to %s\n", path);
	fclose(f);
}

static void
copy_file(const char *from, const char *to)
{
	size_t n;
	char *p = slurp(from, &n);

	if (p != NULL)
		spit(to, p, n);
	free(p);
}

/* Offset of line k (from 1) in p, or (size_t)-1. */
static size_t
line_at(const char *p, size_t n, int k)
{
	size_t off = 0;

	for (int i = 1; i < k; i++) {
		const char *nl = memchr(p + off, '\n', n - off);
		if (nl == NULL)
			return (size_t)-1;
		off = (size_t)(nl - p) + 1;
	}
	return off < n ? off : (size_t)-1;
}

static size_t
count_of(const char *p, const char *needle)
{
	size_t c = 0;

	for (const char *q = p; (q = strstr(q, needle)) != NULL; q++)
		c++;
	return c;
}

static char out[16384];

/* Run `scrim audit ARGS...` and keep what it printed on stdout. */
static int
run(const char *first, ...)
{
	char *argv[32];
	int argc = 0, rc, saved;
	FILE *tmp = tmpfile();
	va_list ap;
	size_t n;

	va_start(ap, first);
	for (const char *s = first; s != NULL && argc < 31;
	     s = va_arg(ap, const char *))
		argv[argc++] = (char *)s;
	va_end(ap);
	argv[argc] = NULL;
	fflush(stdout);
	saved = dup(1);
	dup2(fileno(tmp), 1);
	rc = audit_cmd(argc, argv);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, sizeof(out) - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
	return rc;
}

/* Verify files and expect a break reported as "NAME:LINE:" with why. */
static void
expect_broken(const char *what, const char *file, const char *name, int line,
              const char *why)
{
	char where[600];
	int rc = run("verify", "--key", keypath, file, NULL);

	snprintf(where, sizeof(where), "%s:%d: ", name, line);
	CHECK(rc == 1, "%s: verify exits 1 (got %d)", what, rc);
	CHECK(strstr(out, where) != NULL && strstr(out, why) != NULL,
	      "%s: want '%s' ... '%s', got: %s", what, where, why, out);
}

/* ---- tests ------------------------------------------------------------- */

static void
test_write_verify(void)
{
	struct scrim_config c;
	struct audit_stats st;
	struct audit *a;
	char err[256], want[64];
	const char *f = path_in("basic.jsonl");
	size_t n;
	char *text;
	int rc;

	make_cfg(&c, f);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "audit_open: %s", err);
	if (a == NULL)
		return;
	write_n(a, 0, 20, "alice");
	WAIT_FOR(a, st, st.written == 20);
	CHECK(st.written == 20 && st.failed == 0 && st.dropped == 0,
	      "20 written (%" PRIu64 "/%" PRIu64 "/%" PRIu64 ")", st.written,
	      st.failed, st.dropped);
	CHECK(audit_healthy(a), "healthy");
	audit_close(a);

	rc = run("verify", "--key", keypath, f, NULL);
	CHECK(rc == 0 && strstr(out, "OK: 22 records in 1 file") != NULL,
	      "verify OK with open + 20 + close: %s", out);
	CHECK(strstr(out, "genesis") != NULL, "starts at genesis: %s", out);
	CHECK(strstr(out, "(close)") != NULL, "ends with close: %s", out);

	text = slurp(f, &n);
	CHECK(text != NULL && strncmp(text, "{\"type\":\"checkpoint\"", 20) == 0,
	      "the file starts with a checkpoint");
	if (text == NULL)
		return;
	CHECK(strstr(text, "\"event\":\"open\"") != NULL, "open checkpoint");
	CHECK(strstr(text, "\"client\":\"203.0.113.0\"") != NULL &&
	          strstr(text, "\"client\":\"198.51.100.0\"") != NULL,
	      "client truncated to /24");
	CHECK(count_of(text, "\"client\":\"198.51.100.0\"") == 10,
	      "each record its own client");
	CHECK(strstr(text, "203.0.113.77") == NULL &&
	          strstr(text, ":5555") == NULL,
	      "neither the full address nor the port");
	CHECK(strstr(text, "example.com") == NULL &&
	          strstr(text, "\"path\":\"/v1/chat/completions\"") != NULL,
	      "query string never written");
	CHECK(strstr(text, "gpt-4o-mini\\ufffd") != NULL,
	      "invalid UTF-8 replaced");
	CHECK(strstr(text, "\"redactions\":{\"email\":3,\"iban\":1}") != NULL,
	      "duplicate counts merged");
	CHECK(strstr(text, "\"doc-\\\"2\\\"#1\"") != NULL, "ids escaped");
	CHECK(strstr(text, "\"tokens_out\":null") != NULL, "unknown -> null");
	CHECK(strstr(text, "\"cost_usd\":0.000123") != NULL, "cost");
	CHECK(strstr(text, "\"time\":\"2023-11-14T22:13:20.123Z\"") != NULL &&
	          strstr(text, "\"time\":\"2023-11-14T22:13:20.923Z\"") != NULL &&
	          strstr(text, "\"time\":\"2023-11-14T22:13:21.023Z\"") != NULL &&
	          strstr(text, "\"time\":\"2023-11-14T22:13:22.023Z\"") != NULL,
	      "RFC 3339 time with ms, across seconds");
	CHECK(strstr(text, "scrubbed_request") == NULL, "no bodies by default");
	free(text);

	/* A restart appends to the same file and the chain goes on. */
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "reopen after restart: %s", err);
	if (a == NULL)
		return;
	write_n(a, 20, 5, "bob");
	audit_close(a);
	rc = run("verify", "--key", keypath, f, NULL);
	CHECK(rc == 0 && strstr(out, "OK: 29 records in 1 file") != NULL,
	      "restart continues the chain: %s", out);
	snprintf(want, sizeof(want), "end: seq 29 epoch 1");
	CHECK(strstr(out, want) != NULL, "a run starts a new epoch: %s", out);
}

static void
test_client_modes_and_bodies(void)
{
	struct scrim_config c;
	struct audit_record r;
	struct audit *a;
	char err[256];
	const char *f = path_in("modes.jsonl");
	size_t n;
	char *text;

	make_cfg(&c, f);
	c.audit_client_address = 0;
	c.audit_store_bodies = 1;
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	fill(&r, 1, "k");
	r.client_addr = "[2001:db8:abcd:12::1]:443";
	r.scrubbed_request = "{\"messages\":[{\"content\":\"hi <EMAIL_1>\"}]}";
	r.scrubbed_request_len = strlen(r.scrubbed_request);
	CHECK(audit_write(a, &r), "full address");
	audit_close(a);
	c.audit_client_address = 1;
	c.audit_store_bodies = 0;
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	CHECK(audit_write(a, &r), "truncated v6");
	r.client_addr = "::ffff:198.51.100.9";
	CHECK(audit_write(a, &r), "truncated mapped v4");
	audit_close(a);
	c.audit_client_address = 2;
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	CHECK(audit_write(a, &r), "no address");
	audit_close(a);

	text = slurp(f, &n);
	if (text == NULL)
		return;
	CHECK(strstr(text, "\"client\":\"[2001:db8:abcd:12::1]:443\"") != NULL,
	      "full keeps the address as received");
	CHECK(strstr(text, "\"client\":\"2001:db8:abcd::\"") != NULL,
	      "v6 truncated to /48");
	CHECK(strstr(text, "\"client\":\"198.51.100.0\"") != NULL,
	      "mapped v4 truncated to /24");
	CHECK(count_of(text, "\"client\"") == 3, "none leaves it out");
	CHECK(count_of(text, "\"scrubbed_request\"") == 1 &&
	          strstr(text, "hi <EMAIL_1>") != NULL,
	      "scrubbed body only with store_scrubbed_body");
	free(text);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0, "verifies: %s", out);
}

/* A 12-record file to damage: open checkpoint, 10 records, close. */
static const char *
make_victim(void)
{
	struct scrim_config c;
	struct audit *a;
	char err[256];
	const char *f = path_in("victim.jsonl");

	unlink(f);
	unlink(path_in("victim.jsonl.anchor"));
	make_cfg(&c, f);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open victim: %s", err);
	if (a != NULL) {
		write_n(a, 0, 10, "alice");
		audit_close(a);
	}
	return f;
}

static void
test_tampering(void)
{
	const char *orig = make_victim(), *t = path_in("t.jsonl");
	size_t n, l7, l8, l9, len;
	char *p, *q, *seqp;

	p = slurp(orig, &n);
	if (p == NULL)
		return;
	CHECK(run("verify", "--key", keypath, orig, NULL) == 0,
	      "the victim verifies: %s", out);
	l7 = line_at(p, n, 7);
	l8 = line_at(p, n, 8);
	l9 = line_at(p, n, 9);

	/* One byte edited inside a value. */
	q = malloc(n);
	memcpy(q, p, n);
	q[l7 + (size_t)(strstr(p + l7, "forwarded") - (p + l7))] = 'F';
	spit(t, q, n);
	expect_broken("byte edited", t, t, 7, "edited");

	/* One byte edited in the seq number. */
	memcpy(q, p, n);
	seqp = strstr(p + l7, ",\"seq\":");
	q[(size_t)(seqp - p) + 7] = '9';
	spit(t, q, n);
	expect_broken("seq edited", t, t, 7, "edited");

	/* Line 7 deleted. */
	memcpy(q, p, l7);
	memcpy(q + l7, p + l8, n - l8);
	spit(t, q, n - (l8 - l7));
	expect_broken("line deleted", t, t, 7, "deleted");

	/* Lines 7 and 8 swapped. */
	memcpy(q, p, l7);
	memcpy(q + l7, p + l8, l9 - l8);
	memcpy(q + l7 + (l9 - l8), p + l7, l8 - l7);
	memcpy(q + l9, p + l9, n - l9);
	spit(t, q, n);
	expect_broken("lines swapped", t, t, 7, "out of order");

	/* Cut in the middle of line 7. */
	spit(t, p, l7 + 40);
	expect_broken("cut mid-line", t, t, 7, "truncated");

	/* The first line (checkpoint) deleted. */
	len = line_at(p, n, 2);
	spit(t, p + len, n - len);
	expect_broken("head deleted", t, t, 1, "checkpoint");

	/* The last line dropped whole: undetectable from the file alone,
	 * but verify prints where the chain ends so it can be anchored. */
	len = line_at(p, n, 12);
	spit(t, p, len);
	CHECK(run("verify", "--key", keypath, t, NULL) == 0 &&
	          strstr(out, "end: seq 11 ") != NULL &&
	          strstr(out, "not a \"close\" checkpoint") != NULL,
	      "tail cut: OK, says where it ends and that it did not close: %s",
	      out);
	free(q);
	free(p);
}

/* An attacker holding a later epoch's key re-seals an old record. */
static void
test_epoch_binding(void)
{
	struct scrim_config c;
	struct auditchain_keyring kr;
	struct auditchain_state st;
	struct auditchain_line l;
	unsigned char key0[AUDITCHAIN_KEY_LEN];
	struct audit *a;
	struct buf b, forged;
	char err[256], hex[2 * AUDITCHAIN_MAC_LEN + 1];
	const char *f = path_in("epochs.jsonl"), *t = path_in("forged.jsonl");
	const char *why;
	size_t n, off = 0;
	char *p;
	int line = 0;

	make_cfg(&c, f);
	/* Three runs: epochs 0, 1 and 2. */
	for (int run_no = 0; run_no < 3; run_no++) {
		a = audit_open(&c, NULL, err, sizeof(err));
		CHECK(a != NULL, "open: %s", err);
		if (a == NULL)
			return;
		write_n(a, run_no * 3, 3, "alice");
		audit_close(a);
	}
	CHECK(auditchain_key_load(keypath, false, key0, err, sizeof(err)),
	      "key: %s", err);
	auditchain_keyring_init(&kr, key0);
	CHECK(auditchain_keyring_seek(&kr, 2), "epoch 2 key");
	p = slurp(f, &n);
	if (p == NULL)
		return;
	buf_init(&b, 1 << 20);
	buf_init(&forged, 1 << 22);
	memset(&st, 0, sizeof(st));
	while (off < n) {
		const char *s = p + off;
		size_t len = (size_t)((char *)memchr(s, '\n', n - off) - s);

		line++;
		CHECK(auditchain_parse(s, len, &l, &why), "parse: %s", why);
		if (line < 3) {
			CHECK(buf_add(&forged, s, len + 1), "copy");
			auditchain_after(&l, &st);
		} else {
			/* Same content, re-sealed with the stolen key. */
			buf_reset(&b);
			CHECK(buf_add(&b, s, l.core_len), "core");
			if (l.type == AUDITCHAIN_CHECKPOINT) {
				auditchain_hex(st.mac, AUDITCHAIN_MAC_LEN, hex);
				CHECK(buf_addf(&b,
				               ",\"prev_seq\":%" PRIu64
				               ",\"prev_mac\":\"%s\"",
				               st.seq, hex),
				      "prev");
			}
			st.epoch = 2;
			CHECK(auditchain_seal(&b, 0, &st, kr.key), "seal");
			CHECK(buf_add(&forged, b.p, b.len), "append");
		}
		off += len + 1;
	}
	spit(t, forged.p, forged.len);
	expect_broken("re-sealed with a later key", t, t, 3, "epoch jumps");
	auditchain_keyring_wipe(&kr);
	buf_free(&b);
	buf_free(&forged);
	free(p);
}

/* Two files through rotation: audit.jsonl.1 then audit.jsonl. */
static void
make_rotated(const char *cur, const char *old, const char *k1,
             const char *k2)
{
	struct scrim_config c;
	struct audit_stats st;
	struct audit *a;
	char err[256];

	unlink(cur);
	unlink(old);
	make_cfg(&c, cur);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	write_n(a, 0, 3, k1);
	write_n(a, 3, 3, k2);
	WAIT_FOR(a, st, st.written == 6);
	/* What logrotate does, then SIGHUP; wait until the writer made the
	 * new file, so which records land where is known. */
	CHECK(rename(cur, old) == 0, "rename");
	audit_reopen(a);
	for (int i = 0; i < 2000 && access(cur, F_OK) != 0; i++)
		sleep_ms(5);
	write_n(a, 6, 3, k1);
	write_n(a, 9, 3, k2);
	audit_close(a);
}

static void
test_rotation_and_splice(void)
{
	const char *cur = path_in("rot.jsonl"), *old = path_in("rot.jsonl.1");
	size_t n;
	char *p;

	make_rotated(cur, old, "alice", "bob");
	CHECK(run("verify", "--key", keypath, old, cur, NULL) == 0 &&
	          strstr(out, "OK: 16 records in 2 files") != NULL,
	      "rotated pair verifies: %s", out);
	p = slurp(cur, &n);
	CHECK(p != NULL && strncmp(p, "{\"type\":\"checkpoint\"", 20) == 0 &&
	          strstr(p, "\"event\":\"reopen\"") != NULL,
	      "the new file starts with a reopen checkpoint");
	free(p);
	p = slurp(old, &n);
	CHECK(p != NULL && strstr(p, "\"event\":\"rotate\"") != NULL,
	      "the old file ends with a rotate checkpoint");
	free(p);
	CHECK(run("verify", "--key", keypath, cur, NULL) == 0 &&
	          strstr(out, "continuing a file not given") != NULL,
	      "the new file alone verifies, unlinked: %s", out);

	/* Spliced in the wrong order. */
	CHECK(run("verify", "--key", keypath, cur, old, NULL) == 1 &&
	          strstr(out, "rot.jsonl.1:1: checkpoint link broken") != NULL,
	      "wrong order caught at the second file's first line: %s", out);
	/* A file missing from the middle: old, old again. */
	CHECK(run("verify", "--key", keypath, old, old, NULL) == 1 &&
	          strstr(out, "rot.jsonl.1:1: checkpoint link broken") != NULL,
	      "a repeated file is caught: %s", out);
}

static void
test_forget(void)
{
	struct scrim_config c;
	struct audit *a;
	char err[256];
	const char *cur = path_in("fg.jsonl"), *old = path_in("fg.jsonl.1");
	const char *t = path_in("fg-tampered.jsonl");
	size_t n;
	char *p;
	int rc;

	make_rotated(cur, old, "alice", "bob");

	/* The live file is locked by the writer. */
	make_cfg(&c, cur);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	rc = run("forget", "--key-id", "alice", "--key", keypath, old, cur, NULL);
	CHECK(rc == 1, "forget refuses the file scrim writes (%d)", rc);
	audit_close(a);

	/* Only the rotated file: the live one is untouched and still links
	 * through the tombstone's resume point. */
	rc = run("forget", "--key-id", "alice", "--key", keypath, old, NULL);
	CHECK(rc == 0 && strstr(out, "forgot 3 records") != NULL,
	      "forget in the rotated file: %s", out);
	p = slurp(old, &n);
	CHECK(p != NULL && strstr(p, "\"key_id\":\"alice\"") == NULL &&
	          strstr(p, "\"key_id\":\"bob\"") != NULL &&
	          strstr(p, "\"type\":\"tombstone\"") != NULL &&
	          strstr(p, "alice") == NULL,
	      "alice gone, bob kept, tombstone without the id");
	free(p);
	rc = run("verify", "--key", keypath, old, cur, NULL);
	CHECK(rc == 0 && strstr(out, "1 tombstone") != NULL &&
	          strstr(out, "tombstone at") != NULL &&
	          strstr(out, "3 records of key hash") != NULL,
	      "verify passes and shows the tombstone: %s", out);

	/* Now both files, scrim stopped; then scrim starts again on the
	 * rewritten file, after the tombstone. */
	rc = run("forget", "--key-id", "bob", "--key", keypath, old, cur, NULL);
	CHECK(rc == 0 && strstr(out, "forgot 6 records") != NULL,
	      "forget across both files: %s", out);
	rc = run("verify", "--key", keypath, old, cur, NULL);
	CHECK(rc == 0 && strstr(out, "2 tombstones") != NULL,
	      "both tombstones verify: %s", out);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "scrim starts after a forget: %s", err);
	if (a != NULL) {
		write_n(a, 100, 2, "carol");
		audit_close(a);
	}
	rc = run("verify", "--key", keypath, old, cur, NULL);
	CHECK(rc == 0, "the chain goes on after the tombstone: %s", out);
	rc = run("forget", "--key-id", "nobody", "--key", keypath, old, cur, NULL);
	CHECK(rc == 0 && strstr(out, "nothing changed") != NULL,
	      "an unknown id changes nothing: %s", out);

	/* A broken chain is never re-sealed. */
	copy_file(cur, t);
	p = slurp(t, &n);
	if (p != NULL) {
		char *v = strstr(p, "carol");
		if (v != NULL)
			v[0] = 'C';
		spit(t, p, n);
	}
	free(p);
	rc = run("forget", "--key-id", "carol", "--key", keypath, t, NULL);
	CHECK(rc == 1 && strstr(out, "do not verify") != NULL,
	      "forget refuses a tampered file: %s", out);
}

/*
 * /dev/full: every write fails with ENOSPC until the path works again.
 * on_failure = continue: the queue keeps 16, the rest is dropped and
 * counted exactly, and the next checkpoint says how many.
 */
static void
test_full_disk_continue(void)
{
	struct scrim_config c;
	struct audit_stats st;
	struct audit *a;
	char err[256];
	const char *f = path_in("full.jsonl");
	struct audit_record r;
	size_t n;
	char *p;
	int accepted = 0;

	unlink(f);
	CHECK(symlink("/dev/full", f) == 0, "symlink: %s", strerror(errno));
	make_cfg(&c, f);
	c.audit_block = 1;
	c.audit_queue = 16;
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open on /dev/full: %s", err);
	if (a == NULL)
		return;
	for (int i = 0; i < 20; i++) {
		CHECK(audit_admit(a), "continue admits every request");
		fill(&r, i, "alice");
		accepted += audit_write(a, &r);
	}
	CHECK(accepted == 16, "the queue holds 16 (%d)", accepted);
	WAIT_FOR(a, st, st.failed >= 2 && !audit_healthy(a));
	CHECK(st.failed >= 2 && st.written == 0 && st.dropped == 4 &&
	          st.queued == 16 && st.refused == 0,
	      "failures counted, nothing written, 16 queued, 4 dropped (%" PRIu64
	      "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 ")",
	      st.written, st.failed, st.queued, st.dropped);
	CHECK(!audit_healthy(a), "unhealthy while the disk is full");

	/* The operator makes room (here: a real file) and sends SIGHUP. */
	unlink(f);
	audit_reopen(a);
	WAIT_FOR(a, st, st.written == 16 && audit_healthy(a));
	CHECK(st.written == 16 && audit_healthy(a) && st.queued == 0,
	      "all 16 accepted records written after recovery (%" PRIu64 ")",
	      st.written);
	audit_close(a);
	p = slurp(f, &n);
	CHECK(p != NULL && count_of(p, "\"type\":\"request\"") == 16,
	      "16 records in the file");
	CHECK(p != NULL && count_of(p, "\"dropped\":4,") == 1 &&
	          count_of(p, "\"refused\":") == 0,
	      "one checkpoint says 4 were dropped");
	free(p);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0, "verifies: %s", out);
}

/*
 * The same disk under on_failure = block: once writes fail new requests
 * are refused (counted, no record), and the records of requests already
 * admitted are kept past the queue's cap, so none is lost.
 */
static void
test_full_disk_block(void)
{
	struct scrim_config c;
	struct audit_stats st;
	struct audit *a;
	char err[256];
	const char *f = path_in("fullb.jsonl");
	struct audit_record r;
	size_t n;
	char *p;
	int admitted = 0, accepted = 0;

	/* Opened on a working file, so the 24 admissions below cannot race
	 * the writer's first failure; then the disk "fills" (the file
	 * becomes /dev/full and the log is reopened). */
	unlink(f);
	make_cfg(&c, f);
	c.audit_block = 0;
	c.audit_queue = 16;
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	/* 24 requests in flight, admitted before anything failed. */
	for (int i = 0; i < 24; i++)
		admitted += audit_admit(a);
	CHECK(admitted == 24, "admitted while healthy (%d)", admitted);
	unlink(f);
	CHECK(symlink("/dev/full", f) == 0, "symlink: %s", strerror(errno));
	audit_reopen(a);
	WAIT_FOR(a, st, st.failed >= 1 && !audit_healthy(a));
	for (int i = 0; i < 24; i++) {
		fill(&r, i, "alice");
		accepted += audit_write(a, &r);
	}
	CHECK(accepted == 24, "all 24 queued, past the cap of 16 (%d)",
	      accepted);
	WAIT_FOR(a, st, st.failed >= 1 && !audit_healthy(a));
	admitted = 0;
	for (int i = 0; i < 7; i++)
		admitted += audit_admit(a);
	audit_get_stats(a, &st);
	CHECK(admitted == 0 && st.refused == 7 && st.dropped == 0 &&
	          st.queued == 24,
	      "new requests refused and counted, nothing dropped (%d/%" PRIu64
	      "/%" PRIu64 "/%" PRIu64 ")",
	      admitted, st.refused, st.dropped, st.queued);

	unlink(f);
	audit_reopen(a);
	WAIT_FOR(a, st, st.written == 24 && audit_healthy(a));
	CHECK(st.written == 24 && audit_healthy(a), "all 24 written (%" PRIu64
	      ")", st.written);
	audit_close(a);
	p = slurp(f, &n);
	CHECK(p != NULL && count_of(p, "\"type\":\"request\"") == 24,
	      "24 records in the file");
	CHECK(p != NULL && count_of(p, "\"refused\":7,") == 1 &&
	          count_of(p, "\"dropped\":") == 0,
	      "one checkpoint says 7 were refused");
	free(p);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0, "verifies: %s", out);
}

/* RLIMIT_FSIZE: a write stops short mid-batch; the torn part is cut. */
static void
test_short_write(void)
{
	struct scrim_config c;
	struct audit_stats st;
	struct rlimit old, lim;
	struct stat sb;
	struct audit *a;
	char err[256];
	const char *f = path_in("fsize.jsonl");
	size_t n;
	char *p;

	unlink(f);
	make_cfg(&c, f);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	write_n(a, 0, 5, "alice");
	WAIT_FOR(a, st, st.written == 5);
	CHECK(stat(f, &sb) == 0, "stat");
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)sb.st_size + 1000;
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
	write_n(a, 5, 20, "alice");
	WAIT_FOR(a, st, st.failed >= 1);
	CHECK(st.failed >= 1 && !audit_healthy(a), "short write noticed");
	CHECK(st.written < 25, "not all written under the limit");
	p = slurp(f, &n);
	CHECK(p != NULL && n > 0 && p[n - 1] == '\n',
	      "no torn line left behind (%zu bytes)", n);
	free(p);
	setrlimit(RLIMIT_FSIZE, &old);
	WAIT_FOR(a, st, st.written == 25 && audit_healthy(a));
	CHECK(st.written == 25 && audit_healthy(a), "recovered, all 25 written");
	audit_close(a);
	signal(SIGXFSZ, SIG_DFL);
	p = slurp(f, &n);
	CHECK(p != NULL && count_of(p, "\"type\":\"request\"") == 25,
	      "25 records, none twice");
	free(p);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0, "verifies: %s", out);
}

/*
 * Room for part of the queue only (a disk that stays nearly full after a
 * cleanup): the records that fit go out in smaller batches, instead of
 * the same whole batch failing again and again.
 */
static void
test_partial_room(void)
{
	struct scrim_config c;
	struct audit_stats st;
	struct rlimit old, lim;
	struct stat sb;
	struct audit *a;
	char err[256];
	const char *f = path_in("partial.jsonl");
	size_t n;
	char *p;

	unlink(f);
	make_cfg(&c, f);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	write_n(a, 0, 5, "alice");
	WAIT_FOR(a, st, st.written == 5);
	CHECK(stat(f, &sb) == 0, "stat");
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)sb.st_size + 100; /* not even one record */
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
	write_n(a, 5, 60, "alice"); /* about 40 KiB */
	WAIT_FOR(a, st, st.failed >= 3);
	CHECK(st.written == 5 && !audit_healthy(a), "the disk is full (%" PRIu64
	      " written)", st.written);
	lim.rlim_cur = (rlim_t)sb.st_size + 16 * 1024; /* room for some */
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
	WAIT_FOR(a, st, st.written > 5);
	CHECK(st.written > 5 && st.written < 65,
	      "the records that fit are written (%" PRIu64 " of 65)", st.written);
	setrlimit(RLIMIT_FSIZE, &old);
	WAIT_FOR(a, st, st.written == 65 && audit_healthy(a));
	CHECK(st.written == 65 && audit_healthy(a), "recovered, all 65 written");
	audit_close(a);
	signal(SIGXFSZ, SIG_DFL);
	p = slurp(f, &n);
	CHECK(p != NULL && count_of(p, "\"type\":\"request\"") == 65,
	      "65 records, none twice");
	free(p);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0, "verifies: %s", out);
}

static void
test_keys(void)
{
	struct scrim_config c;
	struct audit *a;
	char err[256], other[300];
	const char *f = make_victim();
	FILE *k;

	/* A key others can read is refused. */
	chmod(keypath, 0644);
	make_cfg(&c, f);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a == NULL && strstr(err, "chmod 600") != NULL,
	      "0644 key refused: %s", err);
	audit_close(a);
	CHECK(run("verify", "--key", keypath, f, NULL) == 1,
	      "verify refuses it too");
	chmod(keypath, 0600);

	/* Another key: verify names the likely cause; the writer will not
	 * continue a chain it cannot check. */
	snprintf(other, sizeof(other), "%s/other.key", dir);
	k = fopen(other, "w");
	if (k == NULL)
		return;
	fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
	      k);
	fclose(k);
	chmod(other, 0600);
	CHECK(run("verify", "--key", other, f, NULL) == 1 &&
	          strstr(out, ":1: MAC mismatch on the first record: wrong key") !=
	              NULL,
	      "wrong key: %s", out);
	c.audit_key_file = other;
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a == NULL && strstr(err, "does not verify") != NULL,
	      "writer refuses a file sealed with another key: %s", err);
	audit_close(a);

	/* A second writer on the same file is refused. */
	make_cfg(&c, f);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "first writer: %s", err);
	{
		struct audit *b = audit_open(&c, NULL, err, sizeof(err));
		CHECK(b == NULL && strstr(err, "locked") != NULL,
		      "second writer refused: %s", err);
		audit_close(b);
	}
	audit_close(a);
}

/* A torn last line (power loss) is cut at the next start and noted. */
static void
test_torn_restart(void)
{
	struct scrim_config c;
	struct audit *a;
	char err[256];
	const char *f = make_victim();
	FILE *fp = fopen(f, "a");

	if (fp == NULL)
		return;
	fputs("{\"type\":\"request\",\"time\":\"2023", fp);
	fclose(fp);
	CHECK(run("verify", "--key", keypath, f, NULL) == 1 &&
	          strstr(out, ":13: truncated") != NULL,
	      "torn line seen: %s", out);
	make_cfg(&c, f);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open cuts the torn line: %s", err);
	audit_close(a);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0, "verifies: %s", out);
	{
		size_t n;
		char *p = slurp(f, &n);
		CHECK(p != NULL && strstr(p, "partial last line") != NULL,
		      "the cut is noted in the chain");
		free(p);
	}
}

/* More records than an epoch holds: the key moves on mid-run. */
static void
test_epoch_roll(void)
{
	struct scrim_config c;
	struct audit_stats st;
	struct audit *a;
	char err[256];
	const char *f = path_in("many.jsonl");
	int total = AUDITCHAIN_EPOCH_RECORDS + 50;

	make_cfg(&c, f);
	c.audit_queue = 100000;
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	if (a == NULL)
		return;
	for (int i = 0; i < total; i++) {
		struct audit_record r;
		fill(&r, i, "k");
		if (!audit_write(a, &r))
			CHECK(false, "write %d", i);
	}
	WAIT_FOR(a, st, st.written == (uint64_t)total);
	audit_close(a);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0 &&
	          strstr(out, " epoch 1 mac") != NULL,
	      "verifies across the epoch change: %s", out);
}

/* The anchor: rotation while scrim is stopped still links; an end cut
 * while it was stopped shows at the next start. */
static void
test_anchor(void)
{
	struct scrim_config c;
	struct audit *a;
	char err[256];
	const char *cur = path_in("anc.jsonl"), *old = path_in("anc.jsonl.1");
	size_t n, cut;
	char *p;

	make_cfg(&c, cur);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open: %s", err);
	write_n(a, 0, 4, "k");
	audit_close(a);
	/* logrotate ran while scrim was stopped. */
	CHECK(rename(cur, old) == 0, "rename");
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open on a fresh file: %s", err);
	write_n(a, 4, 4, "k");
	audit_close(a);
	CHECK(run("verify", "--key", keypath, old, cur, NULL) == 0 &&
	          strstr(out, "OK: 12 records in 2 files") != NULL,
	      "the new file links to the rotated one: %s", out);

	/* Someone cuts the last two records while scrim is stopped. */
	p = slurp(cur, &n);
	if (p == NULL)
		return;
	cut = line_at(p, n, 5);
	spit(cur, p, cut);
	free(p);
	a = audit_open(&c, NULL, err, sizeof(err));
	CHECK(a != NULL, "open after the cut: %s", err);
	audit_close(a);
	CHECK(run("verify", "--key", keypath, old, cur, NULL) == 1 &&
	          strstr(out, "anc.jsonl:5: checkpoint link broken") != NULL,
	      "the cut shows at the next start's checkpoint: %s", out);
	p = slurp(cur, &n);
	CHECK(p != NULL && strstr(p, "the file ended at seq 10, 12 had been "
	                             "written") != NULL,
	      "and the checkpoint says what happened");
	free(p);
}

/* fsync = always and interval go through the same chain. */
static void
test_fsync_policies(void)
{
	struct scrim_config c;
	struct audit_stats st;
	struct audit *a;
	char err[256];
	const char *f = path_in("sync.jsonl");

	make_cfg(&c, f);
	for (long mode = 0; mode <= 1; mode++) {
		c.audit_fsync = mode;
		c.audit_fsync_interval_ms = 10;
		a = audit_open(&c, NULL, err, sizeof(err));
		CHECK(a != NULL, "open: %s", err);
		if (a == NULL)
			return;
		write_n(a, 0, 50, "k");
		WAIT_FOR(a, st, st.written == 50);
		CHECK(st.written == 50 && st.failed == 0, "fsync %ld: written",
		      mode);
		sleep_ms(30);
		audit_close(a);
	}
	CHECK(run("verify", "--key", keypath, f, NULL) == 0 &&
	          strstr(out, "OK: 104 records") != NULL,
	      "verifies: %s", out);
}

/* Branch coverage (RELIABILITY L1): every way auditchain_parse refuses a
 * line, the key file's refusals, and hex that is not lower case. */
static void
test_chain_branches(void)
{
	char m[65], body[600], path[300], err[256];
	unsigned char key[AUDITCHAIN_KEY_LEN], mac[AUDITCHAIN_MAC_LEN];
	struct auditchain_line l;
	const char *why;
	FILE *f;

	memset(m, 'a', 64);
	m[64] = '\0';
#define PARSE_BAD(txt, what)                                                   \
	do {                                                                   \
		why = NULL;                                                    \
		CHECK(!auditchain_parse(txt, strlen(txt), &l, &why) &&         \
		          why != NULL, "refused: %s", what);                   \
	} while (0)
	PARSE_BAD("", "empty");
	PARSE_BAD("{\"type\":\"request\"", "no closing brace");
	snprintf(body, sizeof(body), "{\"type\":\"request\",\"mac\":\"%s\"}", m);
	PARSE_BAD(body, "no seq and epoch");
	snprintf(body, sizeof(body), "{\"type\":\"request\",\"max\":\"%s\"}", m);
	PARSE_BAD(body, "mac misspelt");
	snprintf(body, sizeof(body), "{\"type\":\"request\",\"mac\":\"%.63sA\"}", m);
	PARSE_BAD(body, "upper-case hex in the mac");
	snprintf(body, sizeof(body), "{\"type\":\"request\",\"mac\":\"%.63sg\"}", m);
	PARSE_BAD(body, "not hex in the mac");
	snprintf(body, sizeof(body), "{\"type\":\"request\",\"mac\":\"%s}", m);
	PARSE_BAD(body, "mac without its closing quote");
	snprintf(body, sizeof(body),
	         "{\"type\":\"request\",\"seq\":1,\"epoch\":,\"mac\":\"%s\"}", m);
	PARSE_BAD(body, "epoch without digits");
	snprintf(body, sizeof(body),
	         "{\"type\":\"request\",\"seq\":1,\"epoch\":12345678901234567890,"
	         "\"mac\":\"%s\"}", m);
	PARSE_BAD(body, "epoch of 20 digits");
	snprintf(body, sizeof(body),
	         "{\"type\":\"request\",\"seq\":1,\"epochs\":1,\"mac\":\"%s\"}", m);
	PARSE_BAD(body, "epoch misspelt");
	snprintf(body, sizeof(body), "\"seq\":1,\"epoch\":1,\"mac\":\"%s\"}", m);
	PARSE_BAD(body, "too short for a seq");
	snprintf(body, sizeof(body),
	         "{\"kind\":\"request\",\"seq\":1,\"epoch\":1,\"mac\":\"%s\"}", m);
	PARSE_BAD(body, "no type first");
	snprintf(body, sizeof(body),
	         "{\"type\":\"request,\"seq\":1,\"epoch\":1,\"mac\":\"%s\"}", m);
	why = NULL;
	CHECK(auditchain_parse(body, strlen(body), &l, &why) ||
	          why != NULL, "a type that runs on is parsed or refused");
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"seq\":1,\"epoch\":1,\"mac\":\"%s\"}", m);
	PARSE_BAD(body, "checkpoint without prev");
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"prev_mac\":\"%s\",\"seq\":1,"
	         "\"epoch\":1,\"mac\":\"%s\"}", m, m);
	PARSE_BAD(body, "checkpoint without prev_seq");
	snprintf(body, sizeof(body),
	         "{\"type\":\"tombstone\",\"resume_seq\":1,\"resume_epoch\":1,"
	         "\"resume_mac\":\"%s\",\"seq\":1,\"epoch\":1,\"mac\":\"%s\"}", m, m);
	PARSE_BAD(body, "tombstone resume without its count");
	snprintf(body, sizeof(body),
	         "{\"type\":\"tombstone\",\"seq\":1,\"epoch\":1,\"mac\":\"%s\"}", m);
	CHECK(auditchain_parse(body, strlen(body), &l, &why) && !l.has_resume,
	      "tombstone without a resume point");
	snprintf(body, sizeof(body),
	         "{\"type\":\"note\",\"x\":1,\"seq\":7,\"epoch\":2,\"mac\":\"%s\"}", m);
	CHECK(auditchain_parse(body, strlen(body), &l, &why) &&
	          l.type == AUDITCHAIN_OTHER && l.seq == 7 && l.epoch == 2,
	      "unknown type parses as other");
#undef PARSE_BAD

	CHECK(auditchain_unhex(m, 32, mac), "lower-case hex");
	m[5] = 'A';
	CHECK(!auditchain_unhex(m, 32, mac), "upper case refused");

	/* Key files: missing, wrong length, not hex, open to others, a
	 * directory. */
	snprintf(path, sizeof(path), "%s/branch.key", dir);
	unlink(path);
	CHECK(!auditchain_key_load(path, false, key, err, sizeof(err)),
	      "missing key without create");
	f = fopen(path, "w");
	if (f != NULL) {
		fputs("abcd\n", f);
		fclose(f);
	}
	chmod(path, 0600);
	CHECK(!auditchain_key_load(path, false, key, err, sizeof(err)),
	      "short key");
	f = fopen(path, "w");
	if (f != NULL) {
		memset(m, 'z', 64);
		fprintf(f, "%s \t\r\n", m);
		fclose(f);
	}
	CHECK(!auditchain_key_load(path, false, key, err, sizeof(err)),
	      "key not hex");
	f = fopen(path, "w");
	if (f != NULL) {
		memset(m, 'b', 64);
		fprintf(f, "%s\n", m);
		fclose(f);
	}
	CHECK(auditchain_key_load(path, false, key, err, sizeof(err)),
	      "good key with a newline: %s", err);
	chmod(path, 0644);
	CHECK(!auditchain_key_load(path, false, key, err, sizeof(err)),
	      "key readable by others");
	unlink(path);
	snprintf(path, sizeof(path), "%s/branch.keydir", dir);
	mkdir(path, 0700);
	CHECK(!auditchain_key_load(path, false, key, err, sizeof(err)),
	      "a directory is not a key");
	rmdir(path);
	snprintf(path, sizeof(path), "%s/no/such/dir/key", dir);
	CHECK(!auditchain_key_load(path, true, key, err, sizeof(err)),
	      "key cannot be created");
}

/* Seal body under st and key; the line (no newline) in a static buffer. */
static const char *
sealed(const char *body, struct auditchain_state *st,
       const unsigned char key[AUDITCHAIN_KEY_LEN], size_t *n)
{
	static char line[2048];
	struct buf b;

	buf_init(&b, 1 << 16);
	if (!buf_add(&b, body, strlen(body)) || !auditchain_seal(&b, 0, st, key))
		abort();
	*n = b.len - 1;
	memcpy(line, b.p, *n);
	line[*n] = '\0';
	buf_free(&b);
	return line;
}

/* The verifier's refusals, one chain per fault, built with seal. */
static void
test_verifier_branches(void)
{
	unsigned char k0[AUDITCHAIN_KEY_LEN], other[AUDITCHAIN_KEY_LEN];
	struct auditchain_keyring kr;
	struct auditchain_verifier v;
	struct auditchain_state st, saved;
	char genesis[300], zeros[65];
	const char *ln;
	size_t n;

	memset(k0, 3, sizeof(k0));
	memset(other, 4, sizeof(other));
	memset(zeros, '0', 64);
	zeros[64] = '\0';
	snprintf(genesis, sizeof(genesis),
	         "{\"type\":\"checkpoint\",\"prev_seq\":0,\"prev_mac\":\"%s\"",
	         zeros);

#define FEED(first, want, what)                                                \
	CHECK(!auditchain_verifier_feed(&v, ln, n, first) && v.fault == want,  \
	      "%s: fault %d (%s)", what, (int)v.fault, v.why)

	/* Sealed, but not JSON inside. */
	auditchain_verifier_init(&v, k0);
	memset(&st, 0, sizeof(st));
	ln = sealed("{\"type\":\"checkpoint\",\"x\":tru,\"prev_seq\":0,"
	            "\"prev_mac\":\"" "0000000000000000000000000000000000000000"
	            "000000000000000000000000\"", &st, k0, &n);
	FEED(true, AUDITCHAIN_FAULT_FORMAT, "not JSON");
	auditchain_verifier_wipe(&v);

	/* The first record is not a checkpoint. */
	auditchain_verifier_init(&v, k0);
	memset(&st, 0, sizeof(st));
	ln = sealed("{\"type\":\"request\"", &st, k0, &n);
	FEED(false, AUDITCHAIN_FAULT_START, "first not a checkpoint");
	FEED(true, AUDITCHAIN_FAULT_START, "file not opening with a checkpoint");
	auditchain_verifier_wipe(&v);

	/* A genesis checkpoint outside epoch 0. */
	auditchain_verifier_init(&v, k0);
	memset(&st, 0, sizeof(st));
	st.epoch = 1;
	ln = sealed(genesis, &st, k0, &n);
	FEED(true, AUDITCHAIN_FAULT_EPOCH, "genesis in epoch 1");
	auditchain_verifier_wipe(&v);

	/* The wrong key on the first record. */
	auditchain_verifier_init(&v, other);
	memset(&st, 0, sizeof(st));
	ln = sealed(genesis, &st, k0, &n);
	FEED(true, AUDITCHAIN_FAULT_MAC, "wrong key");
	auditchain_verifier_wipe(&v);

	/* A good start, then each fault after it. */
	auditchain_verifier_init(&v, k0);
	memset(&st, 0, sizeof(st));
	ln = sealed(genesis, &st, k0, &n);
	CHECK(auditchain_verifier_feed(&v, ln, n, true), "genesis: %s", v.why);
	saved = st;
	st.seq++;
	ln = sealed("{\"type\":\"request\"", &st, k0, &n);
	FEED(false, AUDITCHAIN_FAULT_SEQ, "a seq skipped");
	CHECK(v.expect_seq == 2 && v.found_seq == 3, "seq numbers reported");
	st = saved;
	st.epoch = 2;
	auditchain_keyring_init(&kr, k0);
	CHECK(auditchain_keyring_seek(&kr, 2), "epoch 2");
	ln = sealed("{\"type\":\"request\"", &st, kr.key, &n);
	FEED(false, AUDITCHAIN_FAULT_EPOCH, "epoch jumps by 2");
	st = saved;
	st.epoch = (uint64_t)1 << 40;
	ln = sealed("{\"type\":\"request\"", &st, k0, &n);
	FEED(false, AUDITCHAIN_FAULT_EPOCH, "implausible epoch");
	st = saved;
	ln = sealed("{\"type\":\"checkpoint\",\"prev_seq\":5,\"prev_mac\":"
	            "\"0000000000000000000000000000000000000000000000000000000000"
	            "000000\"", &st, k0, &n);
	FEED(false, AUDITCHAIN_FAULT_LINK, "checkpoint naming another record");
	FEED(true, AUDITCHAIN_FAULT_LINK, "file continuing another chain");
	st = saved;
	ln = sealed("{\"type\":\"request\"", &st, other, &n);
	FEED(false, AUDITCHAIN_FAULT_MAC, "a record sealed with another key");
	/* Into epoch 1, then back to 0. */
	st = saved;
	st.epoch = 1;
	auditchain_keyring_init(&kr, k0);
	CHECK(auditchain_keyring_seek(&kr, 1), "epoch 1");
	ln = sealed("{\"type\":\"request\"", &st, kr.key, &n);
	CHECK(auditchain_verifier_feed(&v, ln, n, false), "epoch 1: %s", v.why);
	st.epoch = 0;
	ln = sealed("{\"type\":\"request\"", &st, k0, &n);
	FEED(false, AUDITCHAIN_FAULT_EPOCH, "epoch backwards");
	CHECK(!auditchain_keyring_seek(&kr, 0), "a keyring does not go back");
	auditchain_keyring_wipe(&kr);
	auditchain_verifier_wipe(&v);
#undef FEED
}

/* With a loop: the records of a turn are in the file when the turn ends,
 * the writer thread not woken for them; with its fsyncs and reopens
 * between the loop's appends, nothing is lost or sealed twice. */
static void
test_loop_appends(void)
{
	struct event_base *base = event_base_new();
	struct scrim_config c;
	struct audit_stats st;
	struct audit *a;
	char err[256], want[64];
	const char *f = path_in("loop.jsonl");
	uint64_t before;
	int total = 0, prompt = 0, first;

	CHECK(base != NULL, "event_base_new");
	if (base == NULL)
		return;
	make_cfg(&c, f);
	a = audit_open(&c, base, err, sizeof(err));
	CHECK(a != NULL, "audit_open with a loop: %s", err);
	if (a == NULL) {
		event_base_free(base);
		return;
	}
	/* The thread may take the open checkpoint and the first record. */
	write_n(a, total++, 1, "loop");
	event_base_loop(base, EVLOOP_NONBLOCK);
	WAIT_FOR(a, st, st.written == 1);
	sleep_ms(10); /* its nap, if it wrote */
	for (int turn = 0; turn < 100; turn++) {
		audit_get_stats(a, &st);
		before = st.written;
		write_n(a, total, 3, "loop");
		total += 3;
		event_base_loop(base, EVLOOP_NONBLOCK);
		audit_get_stats(a, &st);
		prompt += st.written == before + 3 && st.queued == 0;
	}
	/* Unless a write was slow (a machine so busy that it took 5 ms):
	 * then the thread takes over, as it should. */
	audit_get_stats(a, &st);
	CHECK(prompt == 100 || st.slow > 0,
	      "each turn's records written by its end (%d/100)", prompt);
	/* More than one append takes: the rest in later callbacks. */
	write_n(a, total, 600, "loop");
	total += 600;
	event_base_loop(base, EVLOOP_NONBLOCK);
	audit_get_stats(a, &st);
	CHECK((st.written == (uint64_t)total && st.queued == 0) || st.slow > 0,
	      "600 in one turn written by its end (%" PRIu64 ")", st.written);
	WAIT_FOR(a, st, st.written == (uint64_t)total);
	CHECK(st.written == (uint64_t)total, "all %d written", total);
	audit_close(a);

	/* fsync every 2 ms and a reopen now and then, on the thread, while
	 * the loop appends. */
	c.audit_fsync = 1;
	c.audit_fsync_interval_ms = 2;
	first = total;
	a = audit_open(&c, base, err, sizeof(err));
	CHECK(a != NULL, "audit_open again: %s", err);
	if (a == NULL) {
		event_base_free(base);
		return;
	}
	for (int turn = 0; turn < 3000; turn++) {
		write_n(a, total, 1 + turn % 4, "loop");
		total += 1 + turn % 4;
		if (turn % 500 == 250)
			audit_reopen(a);
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (turn % 100 == 0)
			sleep_ms(1);
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	WAIT_FOR(a, st, st.written == (uint64_t)(total - first));
	CHECK(st.written == (uint64_t)(total - first) && st.failed == 0 &&
	          st.dropped == 0,
	      "all %d written (%" PRIu64 "/%" PRIu64 "/%" PRIu64 ")",
	      total - first, st.written, st.failed, st.dropped);
	audit_close(a);
	event_base_free(base);
	CHECK(run("verify", "--key", keypath, f, NULL) == 0,
	      "verifies: %s", out);
	/* Records, an open and a close checkpoint per run, and a rotate and
	 * a reopen checkpoint per reopen. */
	snprintf(want, sizeof(want), "OK: %d records", total + 4 + 6 * 2);
	CHECK(strstr(out, want) != NULL, "want '%s': %s", want, out);
}

int
main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(keypath, sizeof(keypath), "%s/audit.key", dir);
	test_write_verify();
	{
		struct stat sb;
		CHECK(stat(keypath, &sb) == 0 && (sb.st_mode & 0777) == 0600,
		      "the key is created 0600");
	}
	test_client_modes_and_bodies();
	test_tampering();
	test_epoch_binding();
	test_rotation_and_splice();
	test_forget();
	test_full_disk_continue();
	test_full_disk_block();
	test_short_write();
	test_partial_room();
	test_keys();
	test_torn_restart();
	test_epoch_roll();
	test_anchor();
	test_fsync_policies();
	test_loop_appends();
	test_chain_branches();
	test_verifier_branches();
	if (harness_failed == 0) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return harness_done();
}
