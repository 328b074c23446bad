/*
 * test_torture.c - curl-style malloc torture (RELIABILITY.md section 8,
 * L1): the HTTP head parser, the chunked decoder, the audit line reader
 * and a JSON body scrubbed then restored run with allocation N failing,
 * for N = 1, 2, ... until an operation completes with no failure
 * injected. Each run must end in a clean error or in exactly the output
 * of an undisturbed run; never a crash, never success with other output.
 * Leaks are ASan's (LeakSanitizer) to find: ctest runs this binary in the
 * SCRIM_SANITIZE build too.
 *
 * How failures are injected: the link wraps malloc, calloc and realloc
 * (-Wl,--wrap, see CMakeLists.txt), which reroutes every call made from
 * scrim's own objects, and from nowhere else: production code carries no
 * hook, and allocations inside libc, PCRE2, jansson and OpenSSL are not
 * counted (they are out of scope here). The x* allocators of alloc.c
 * abort on failure by design (alloc.h: fixed bookkeeping, not
 * client-sized), so they are wrapped too, and an allocation made while
 * one of them runs is passed through uncounted: the torture covers the
 * allocations that must fail softly, the capped buffers of buf.c and the
 * scrubber's own arrays (scrub.c).
 */
#include "alloc.h"
#include "auditchain.h"
#include "buf.h"
#include "harness.h"
#include "http.h"
#include "json.h"
#include "restore.h"
#include "rules.h"
#include "scrub.h"
#include "vault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SCRIM_SOURCE_DIR
#error "SCRIM_SOURCE_DIR must name the source tree (CMakeLists.txt sets it)"
#endif

/* Stop after this many steps even if the operation never completes: a
 * loop that long means the counting itself is broken. */
#define MAX_STEPS 100000

static unsigned long fail_at; /* 0: off; else fail the fail_at'th call */
static unsigned long nalloc;  /* counted calls since arming */
static unsigned long nfailed; /* failures injected since arming */
static int in_x;              /* inside an aborting x* allocator */

void *__real_malloc(size_t n);
void *__real_calloc(size_t nmemb, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t nmemb, size_t n);
void *__wrap_realloc(void *p, size_t n);

/* True when this allocation is to fail. */
static bool
inject(void)
{
	if (fail_at == 0 || in_x > 0)
		return false;
	if (++nalloc != fail_at)
		return false;
	nfailed++;
	return true;
}

void *
__wrap_malloc(size_t n)
{
	return inject() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t nmemb, size_t n)
{
	return inject() ? NULL : __real_calloc(nmemb, n);
}

void *
__wrap_realloc(void *p, size_t n)
{
	return inject() ? NULL : __real_realloc(p, n);
}

/* The aborting allocators: their inner call is not counted. */
void *__real_xmalloc(size_t n);
void *__real_xcalloc(size_t nmemb, size_t n);
void *__real_xrealloc(void *p, size_t n);
char *__real_xstrdup(const char *s);
char *__real_xstrndup(const char *s, size_t n);
void *__wrap_xmalloc(size_t n);
void *__wrap_xcalloc(size_t nmemb, size_t n);
void *__wrap_xrealloc(void *p, size_t n);
char *__wrap_xstrdup(const char *s);
char *__wrap_xstrndup(const char *s, size_t n);

#define PASS_THROUGH(call)                                                     \
	do {                                                                   \
		void *r_;                                                      \
		in_x++;                                                        \
		r_ = (void *)(call);                                           \
		in_x--;                                                        \
		return r_;                                                     \
	} while (0)

void *__wrap_xmalloc(size_t n) { PASS_THROUGH(__real_xmalloc(n)); }
void *__wrap_xcalloc(size_t m, size_t n) { PASS_THROUGH(__real_xcalloc(m, n)); }
void *__wrap_xrealloc(void *p, size_t n) { PASS_THROUGH(__real_xrealloc(p, n)); }
char *__wrap_xstrdup(const char *s) { PASS_THROUGH(__real_xstrdup(s)); }
char *
__wrap_xstrndup(const char *s, size_t n)
{
	PASS_THROUGH(__real_xstrndup(s, n));
}
/* xasprintf is variadic and cannot be forwarded. None of the code under
 * torture calls it; if it ever does, its inner malloc is counted and the
 * injected failure aborts this test, which says so loudly. */

static void
arm(unsigned long n)
{
	nalloc = 0;
	nfailed = 0;
	fail_at = n;
}

static void
disarm(void)
{
	fail_at = 0;
}

/* One operation under torture: returns true when it succeeded, with its
 * output in out (owned by the caller, freed by it). */
typedef bool (*op_fn)(struct buf *out);

/*
 * Run op undisturbed for the reference, then with each allocation failing
 * in turn. Returns how many allocations one undisturbed run counted.
 */
static unsigned long
torture(const char *name, op_fn op)
{
	struct buf ref, out;
	unsigned long n, total, soft = 0;
	bool ok;

	buf_init(&ref, 1 << 20);
	arm(MAX_STEPS + 1); /* count, never fail */
	ok = op(&ref);
	total = nalloc;
	disarm();
	CHECK(ok, "%s: fails with no failure injected", name);
	for (n = 1; n <= MAX_STEPS; n++) {
		buf_init(&out, 1 << 20);
		arm(n);
		ok = op(&out);
		disarm();
		if (nfailed == 0) {
			/* Ran to the end before allocation n: done. */
			CHECK(ok && out.len == ref.len &&
			          memcmp(out.p ? out.p : "", ref.p ? ref.p : "",
			                 out.len) == 0,
			      "%s: the last, undisturbed run differs", name);
			buf_free(&out);
			break;
		}
		if (ok) {
			/* Succeeding despite a failure is fine only with the
			 * very output of the undisturbed run (a retry or a
			 * smaller fallback). */
			CHECK(out.len == ref.len &&
			          memcmp(out.p ? out.p : "", ref.p ? ref.p : "",
			                 out.len) == 0,
			      "%s: allocation %lu failed, yet it succeeded with "
			      "other output:\n  got  %.*s\n  want %.*s", name, n,
			      (int)out.len, out.p ? out.p : "", (int)ref.len,
			      ref.p ? ref.p : "");
			soft++;
		}
		buf_free(&out);
	}
	CHECK(n <= MAX_STEPS, "%s: never completed", name);
	printf("%s: %lu counted allocations, %lu runs, %lu survived a "
	       "failure with the same output\n", name, total, n, soft);
	buf_free(&ref);
	return total;
}

/* --- HTTP head parser ------------------------------------------------ */

static const struct http_limits lim = {8192, 65536, 100};

static bool
op_head(struct buf *out)
{
	struct buf req;
	struct http_head h;
	struct http_scan s = {0, 0};
	enum scrim_err e;
	size_t head_len = 0;
	char *copy;
	bool ok;

	/* Built with the counter running: buf_add fails softly too. */
	buf_init(&req, 1 << 16);
	ok = buf_add(&req, "POST /v1/chat/completions HTTP/1.1\r\n", 36) &&
	     buf_add(&req, "Host: api.openai.com\r\n", 22);
	for (int i = 0; ok && i < 40; i++)
		ok = buf_addf(&req, "X-H%d: v%d\r\n", i, i);
	ok = ok && buf_add(&req, "Content-Length: 2\r\n\r\n", 21);
	if (!ok) {
		buf_free(&req);
		return false;
	}
	if (http_head_scan(&s, req.p, req.len, &lim, &head_len, &e) !=
	    HTTP_SCAN_DONE) {
		buf_free(&req);
		return false;
	}
	copy = malloc(head_len);
	if (copy == NULL) {
		buf_free(&req);
		return false;
	}
	memcpy(copy, req.p, head_len);
	buf_free(&req);
	memset(&h, 0, sizeof(h));
	e = http_head_parse(copy, head_len, &lim, &h);
	ok = e == ERR_NONE &&
	     buf_addf(out, "%d %zu %lld %.*s", (int)h.method, h.nheaders,
	              (long long)h.content_length, (int)h.host_len, h.host);
	http_head_free(&h);
	return ok;
}

/* --- chunked decoder ------------------------------------------------- */

struct sink {
	struct buf *b;
	bool ok;
};

static void
emit(void *arg, const char *p, size_t n)
{
	struct sink *s = arg;

	s->ok = s->ok && buf_add(s->b, p, n);
}

static bool
op_chunked(struct buf *out)
{
	static const char body[] =
	    "5;ext=1\r\nhello\r\n"
	    "1\r\n \r\n"
	    "6\r\nworld!\r\n"
	    "0\r\nTrailer: x\r\n\r\n";
	struct http_chunked c;
	struct sink s = {out, true};
	enum http_chunk_result r = HTTP_CHUNK_MORE;
	size_t at = 0;

	memset(&c, 0, sizeof(c));
	/* Three bytes at a time, as reads may arrive. */
	while (at < sizeof(body) - 1 && r == HTTP_CHUNK_MORE) {
		size_t n = sizeof(body) - 1 - at, used = 0;

		if (n > 3)
			n = 3;
		r = http_chunked_feed(&c, body + at, n, &used, 1 << 20, emit, &s);
		at += used;
	}
	return r == HTTP_CHUNK_DONE && s.ok;
}

/* --- JSON scrub, then restore of an answer --------------------------- */

static struct ruleset *rules;

struct scrub_arg {
	struct scrub_ctx ctx;
	struct scrub_hits hits;
	char err[256];
};

/* As request.c's callback, without its skipped fields. */
static enum json_cb_result
scrub_cb(void *arg, const struct json_path *p, const char *s, size_t n,
         struct buf *repl)
{
	struct scrub_arg *a = arg;

	(void)p;
	if (n == 0)
		return JSON_KEEP;
	if (scrub_find(rules, s, n, &a->hits, a->err, sizeof(a->err)) != 0)
		return JSON_CB_ERROR;
	if (a->hits.n == 0)
		return JSON_KEEP;
	if (!scrub_apply(&a->ctx, s, n, &a->hits, repl))
		return JSON_CB_ERROR;
	return JSON_REPLACE;
}

static const char pii_body[] =
    "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"Mail jane.doe@example.com or call +1 415 555 0132 about card "
    "4111 1111 1111 1111; cc bob.smith@example.org.\"},"
    "{\"role\":\"user\",\"content\":\"nothing here\"}]}";

static bool
op_scrub_restore(struct buf *out)
{
	struct scrub_arg a;
	struct buf body;
	struct restore *r;
	size_t replaced = 0, pos = 0, half;
	enum json_result jr;
	bool ok;

	memset(&a, 0, sizeof(a));
	memset(a.ctx.secret, 0x5c, sizeof(a.ctx.secret));
	a.ctx.key_id = "torture";
	a.ctx.vault = vault_new();
	scrub_hits_init(&a.hits);
	buf_init(&body, 1 << 20);
	jr = json_rewrite(pii_body, sizeof(pii_body) - 1, scrub_cb, &a, &body,
	                  1 << 20, &replaced, &pos);
	scrub_hits_free(&a.hits);
	ok = jr == JSON_OK && replaced > 0 &&
	     memmem(body.p, body.len, "jane.doe@", 9) == NULL;
	/* The provider echoes the scrubbed body; restore it in two reads. */
	r = ok ? restore_new(a.ctx.vault, RESTORE_WHOLE, 1 << 20) : NULL;
	if (r != NULL) {
		half = body.len / 2;
		ok = restore_feed(r, body.p, half, out) &&
		     restore_feed(r, body.p + half, body.len - half, out) &&
		     restore_finish(r, out);
		restore_free(r);
	}
	/* And as a stream: the scrubbed body's text as delta events, split
	 * so that placeholders straddle events, fed in reads of 13 bytes. */
	r = ok ? restore_new(a.ctx.vault, RESTORE_SSE, 1 << 20) : NULL;
	if (r != NULL) {
		struct buf sse;
		size_t step = 9;

		buf_init(&sse, 1 << 20);
		for (size_t i = 0; ok && i < body.len; i += step) {
			size_t k = body.len - i < step ? body.len - i : step;
			ok = buf_add(&sse, "data: {\"choices\":[{\"index\":0,"
			             "\"delta\":{\"content\":\"", 49);
			for (size_t j = i; ok && j < i + k; j++)
				ok = body.p[j] == '"' || body.p[j] == '\\'
				         ? buf_addc(&sse, '\\') &&
				               buf_addc(&sse, body.p[j])
				         : buf_addc(&sse, body.p[j]);
			ok = ok && buf_add(&sse, "\"}}]}\n\n", 7);
		}
		/* A lone "<" is held back as a possible placeholder, and put
		 * back where it was when [DONE] ends the field. */
		ok = ok && buf_add(&sse, "data: {\"choices\":[{\"index\":0,"
		                   "\"delta\":{\"content\":\"<\"}}]}\n\n", 57) &&
		     buf_add(&sse, "data: [DONE]\n\n", 14);
		for (size_t i = 0; ok && i < sse.len; i += 13)
			ok = restore_feed(r, sse.p + i,
			                  sse.len - i < 13 ? sse.len - i : 13, out);
		ok = ok && restore_finish(r, out);
		restore_free(r);
		buf_free(&sse);
	}
	buf_wipe(&body);
	vault_free(a.ctx.vault);
	return ok;
}

/* --- the scrubber's windows, anchor by anchor ------------------------ */

/*
 * A small pack with one rule per anchor kind, each searched in its own
 * call so that the first window of each kind is allocated on the path
 * being tested: word starts in a 64-byte block and in the tail, spots
 * found 16 at a time and in the tail, a one-byte literal, digit runs,
 * tokens ending in a later block, inside a block, in the tail and at
 * the end, and scrub_find_rule's own window array.
 */
static struct ruleset *anchor_rules;
static char anchor_dir[] = "/tmp/scrim-torture-anchors-XXXXXX";

static const char anchor_pack[] =
    "[rule t.w]\ntype = W\npattern = (?i)hello \\w+|name: \\w+\n"
    "anchor = words hello|*name:\nwindow = 0 8\nmatch = [[hello bob]]\n"
    "[rule t.l]\ntype = L\npattern = AKIA\\d+|#\\w+\n"
    "anchor = literals AKIA|#\nwindow = 0 8\nmatch = [[AKIA1234]]\n"
    "[rule t.k]\ntype = K\npattern = [a-z]{20,}\n"
    "anchor = token 20\nwindow = 0 0\n"
    "match = [[abcdefghijabcdefghij]]\n"
    "[rule t.d]\ntype = D\npattern = \\d{4}\n"
    "anchor = digits 4\nwindow = 0 0\nmatch = [[1234]]\n";

static bool
anchor_find(const char *s, const char *rule_id, struct buf *out)
{
	struct scrub_hits h;
	char err[128];
	int rc;

	scrub_hits_init(&h);
	if (rule_id == NULL) {
		rc = scrub_find(anchor_rules, s, strlen(s), &h, err, sizeof(err));
	} else {
		const struct rule *r = NULL;
		for (size_t i = 0; i < anchor_rules->nrules; i++)
			if (strcmp(anchor_rules->rules[i].id, rule_id) == 0)
				r = &anchor_rules->rules[i];
		rc = scrub_find_rule(anchor_rules, r, s, strlen(s), &h, err,
		                     sizeof(err));
	}
	if (rc != 0)
		/* Only an allocation can fail here. */
		CHECK(strcmp(err, "out of memory") == 0 ||
		          strcmp(err, "too many hits") == 0,
		      "anchors: %s", err);
	for (size_t i = 0; rc == 0 && i < h.n; i++)
		if (!buf_addf(out, "%zu-%zu:%s;", h.v[i].start, h.v[i].end,
		              h.v[i].rule->id))
			rc = -1;
	scrub_hits_free(&h);
	return rc == 0 && buf_addc(out, '|');
}

static bool
op_anchors(struct buf *out)
{
	static const char pad[] = "................................"; /* 32 */
	char block_word[160], long_tok[200], mid_tok[200], block_spot[64];

	/* "hello" inside the first 64-byte block; "AKIA" in the first 16. */
	snprintf(block_word, sizeof(block_word), "say hello bob%s%s", pad, pad);
	snprintf(block_spot, sizeof(block_spot), "key AKIA1234 %s", pad);
	/* A token from the first block into the second, and one inside. */
	snprintf(long_tok, sizeof(long_tok), "%s%.18s%s%s%s", pad, pad,
	         "abcdefghijabcdefghijabcdefghij", pad, pad);
	snprintf(mid_tok, sizeof(mid_tok), "a %s%s%s", "abcdefghijabcdefghijab",
	         pad, pad);
	return anchor_find(block_word, NULL, out) &&
	       anchor_find("hi hello bob", NULL, out) &&
	       anchor_find(block_spot, NULL, out) &&
	       anchor_find("my name: bob", NULL, out) &&
	       anchor_find("x AKIA99", NULL, out) &&
	       anchor_find("tag #red", NULL, out) &&
	       anchor_find("pin 4321", NULL, out) &&
	       anchor_find("hi hello bob", "t.w", out) &&
	       anchor_find("tag #red", "t.l", out) &&
	       anchor_find(long_tok, "t.k", out) &&
	       anchor_find(mid_tok, "t.k", out) &&
	       anchor_find("a abcdefghijabcdefghijab b", "t.k", out) &&
	       anchor_find("a abcdefghijabcdefghijab", "t.k", out) &&
	       anchor_find("pin 4321", "t.d", out);
}

static bool
anchor_rules_load(void)
{
	char path[128];
	FILE *f;

	if (mkdtemp(anchor_dir) == NULL)
		return false;
	snprintf(path, sizeof(path), "%s/a.rules", anchor_dir);
	f = fopen(path, "w");
	if (f == NULL)
		return false;
	fputs(anchor_pack, f);
	fclose(f);
	anchor_rules = rules_load(anchor_dir, true);
	unlink(path);
	rmdir(anchor_dir);
	return anchor_rules != NULL;
}

/* --- audit line reader ---------------------------------------------- */

/* A file with a line longer than the reader's first buffer (it grows
 * twice), then a short one and a last one without a newline. */
static char reader_path[] = "/tmp/scrim-torture-reader-XXXXXX";

static bool
reader_file(void)
{
	static const char tail[] = "\nshort\nlast";
	char *text;
	size_t longn = 200000, n = longn + sizeof(tail) - 1;
	int fd = mkstemp(reader_path);
	bool ok;

	text = malloc(n);
	if (fd < 0 || text == NULL)
		return false;
	memset(text, 'x', longn);
	memcpy(text + longn, tail, sizeof(tail) - 1);
	ok = write(fd, text, n) == (ssize_t)n;
	free(text);
	return close(fd) == 0 && ok;
}

static bool
op_reader(struct buf *out)
{
	struct auditchain_reader r;
	const char *line;
	size_t n;
	bool nl, ok = true;
	int fd = open(reader_path, O_RDONLY | O_CLOEXEC), got;

	if (fd < 0)
		return false;
	auditchain_reader_init(&r, fd);
	while ((got = auditchain_reader_next(&r, &line, &n, &nl)) == 1)
		ok = ok && buf_addf(out, "%zu%c", n, nl ? '\n' : '$') &&
		     buf_add(out, line, n);
	if (got < 0) {
		/* The only allocation is the buffer's growth: a clean ENOMEM. */
		CHECK(errno == ENOMEM, "reader: -1 with %s", strerror(errno));
		ok = false;
	}
	auditchain_reader_free(&r);
	close(fd);
	return ok;
}

int
main(void)
{
	struct buf out;
	unsigned long n;

	n = torture("http head", op_head);
	CHECK(n > 0, "the head test allocates nothing it can fail");
	(void)torture("chunked", op_chunked);
	CHECK(reader_file(), "cannot write %s", reader_path);
	n = torture("audit line reader", op_reader);
	CHECK(n >= 2, "the reader grew its buffer only %lu times", n);
	unlink(reader_path);

	rules = rules_load(SCRIM_SOURCE_DIR "/rules", true);
	CHECK(rules != NULL, "cannot load the rules");
	if (rules == NULL)
		return harness_done();
	n = torture("scrub+restore", op_scrub_restore);
	CHECK(n > 0, "scrub+restore allocates nothing it can fail");
	/* The round trip itself: the body comes back byte for byte. */
	buf_init(&out, 1 << 20);
	CHECK(op_scrub_restore(&out) && out.len > sizeof(pii_body) - 1 &&
	          memcmp(out.p, pii_body, sizeof(pii_body) - 1) == 0,
	      "restore(scrub(x)) != x: %.*s", (int)out.len, out.p ? out.p : "");
	/* The stream gave every value back and no placeholder. */
	CHECK(out.p != NULL &&
	          memmem(out.p + sizeof(pii_body) - 1,
	                 out.len - (sizeof(pii_body) - 1), "jane.doe@example.com",
	                 20) != NULL &&
	          memmem(out.p + sizeof(pii_body) - 1,
	                 out.len - (sizeof(pii_body) - 1), "EMAIL_", 6) == NULL,
	      "the stream is restored: %.*s", (int)out.len, out.p ? out.p : "");
	buf_free(&out);
	rules_unref(rules);

	CHECK(anchor_rules_load(), "cannot load the anchor rules");
	if (anchor_rules == NULL)
		return harness_done();
	n = torture("scrub anchors", op_anchors);
	CHECK(n >= 14, "scrub anchors: only %lu allocations", n);
	buf_init(&out, 1 << 20);
	CHECK(op_anchors(&out) && out.p != NULL &&
	          strcmp(out.p,
	                 "4-13:t.w;|3-12:t.w;|4-12:t.l;|3-12:t.w;|2-8:t.l;|"
	                 "4-8:t.l;|4-8:t.d;|3-12:t.w;|4-8:t.l;|50-80:t.k;|"
	                 "2-24:t.k;|2-24:t.k;|2-24:t.k;|4-8:t.d;|") == 0,
	      "anchors: %s", out.p ? out.p : "");
	buf_free(&out);
	rules_unref(anchor_rules);
	return harness_done();
}
