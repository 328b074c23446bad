/*
 * scrubcmd.c - `scrim scrub [--rules DIR] [--jsonl] [--explain]`.
 * Text mode reads all of stdin and writes it scrubbed; --jsonl reads one
 * {"text": ...} object per line and writes {"text", "entities"} lines.
 * Invalid UTF-8 is an error, never passed through unscrubbed.
 */
#include "scrubcmd.h"

#include "alloc.h"
#include "buf.h"
#include "rules.h"
#include "scrub.h"
#include "vault.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCRUBCMD_MAX_INPUT ((size_t)1 << 30)

const char *
scrubcmd_default_rules(void)
{
	const char *e = getenv("SCRIM_RULES");

	if (e && *e)
		return e;
	if (access("/etc/scrim/rules", R_OK) == 0)
		return "/etc/scrim/rules";
	return "rules";
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: scrim scrub [--rules DIR] [--jsonl] [--explain]\n\n"
	        "Scrub stdin to stdout with the rule packs in DIR (default "
	        "$SCRIM_RULES,\n/etc/scrim/rules, else ./rules).\n\n"
	        "  --rules DIR  the rule packs to use\n"
	        "  --jsonl      read {\"text\": ...} lines, write {\"text\": ..., "
	        "\"entities\": [...]}\n"
	        "               (type, rule, start, end: byte offsets in the input "
	        "text)\n"
	        "  --explain    list every hit on stderr (rule, type, byte "
	        "offsets, score)\n\n"
	        "Placeholders are stable within one run. Exit status: 0 ok, 1 "
	        "when input\ncould not be scrubbed (invalid UTF-8, a rule limit "
	        "hit), 2 usage.\n");
}

static void
explain(const struct scrub_hits *hits, size_t line)
{
	for (size_t i = 0; i < hits->n; i++) {
		const struct scrub_hit *h = &hits->v[i];
		if (line)
			fprintf(stderr, "line %zu: ", line);
		fprintf(stderr, "%s %s bytes %zu-%zu score %.2f action %s\n",
		        h->rule->id, h->rule->type, h->start, h->end, h->score,
		        rules_action_name(h->rule->action));
	}
}

static int
scrub_find_line(struct ruleset *rs, const char *s, size_t n, bool show,
                struct scrub_hits *hits, size_t line)
{
	char err[200];

	if (!scrub_utf8_valid(s, n)) {
		fprintf(stderr, "scrim scrub: %s%zu%sinput is not valid UTF-8; "
		                "nothing written for it\n",
		        line ? "line " : "", line, line ? ": " : "");
		return -1;
	}
	if (scrub_find(rs, s, n, hits, err, sizeof(err)) != 0) {
		fprintf(stderr, "scrim scrub: cannot scrub (%s); nothing written\n",
		        err);
		return -1;
	}
	if (show)
		explain(hits, line);
	return 0;
}

static int
scrub_find_checked(struct ruleset *rs, const char *s, size_t n, bool show,
                   struct scrub_hits *hits)
{
	return scrub_find_line(rs, s, n, show, hits, 0);
}

static int
scrub_text(struct ruleset *rs, struct scrub_ctx *ctx, const char *s,
           size_t n, bool show, struct buf *out, struct scrub_hits *hits,
           size_t line)
{
	if (scrub_find_line(rs, s, n, show, hits, line) != 0)
		return -1;
	buf_reset(out);
	if (!scrub_apply(ctx, s, n, hits, out)) {
		fprintf(stderr, "scrim scrub: out of memory\n");
		return -1;
	}
	return 0;
}

static int
run_jsonl(struct ruleset *rs, struct scrub_ctx *ctx, bool show)
{
	char *line = NULL;
	size_t cap = 0, lineno = 0;
	ssize_t len;
	struct buf out;
	struct scrub_hits hits;
	int rc = 0;

	buf_init(&out, SCRUBCMD_MAX_INPUT);
	scrub_hits_init(&hits);
	while ((len = getline(&line, &cap, stdin)) > 0) {
		json_error_t jerr;
		json_t *obj, *text, *ents, *res;
		char *dump;

		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		obj = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &jerr);
		text = obj ? json_object_get(obj, "text") : NULL;
		if (!json_is_string(text)) {
			fprintf(stderr, "scrim scrub: line %zu: expected an object "
			                "with a \"text\" string\n", lineno);
			json_decref(obj);
			rc = 1;
			continue;
		}
		if (scrub_text(rs, ctx, json_string_value(text),
		               json_string_length(text), show, &out, &hits,
		               lineno) != 0) {
			json_decref(obj);
			rc = 1;
			continue;
		}
		ents = json_array();
		for (size_t i = 0; i < hits.n; i++)
			json_array_append_new(
			    ents, json_pack("{s:s, s:s, s:I, s:I, s:s, s:f}", "type",
			                    hits.v[i].rule->type, "rule",
			                    hits.v[i].rule->id, "start",
			                    (json_int_t)hits.v[i].start, "end",
			                    (json_int_t)hits.v[i].end, "action",
			                    rules_action_name(hits.v[i].rule->action),
			                    "score", hits.v[i].score));
		res = json_pack("{s:s%, s:o}", "text", out.p ? out.p : "", out.len,
		                "entities", ents);
		dump = res ? json_dumps(res, JSON_COMPACT) : NULL;
		if (dump == NULL) {
			fprintf(stderr, "scrim scrub: line %zu: cannot encode\n",
			        lineno);
			rc = 1;
		} else {
			puts(dump);
			free(dump);
		}
		json_decref(res);
		json_decref(obj);
	}
	free(line);
	buf_wipe(&out);
	scrub_hits_free(&hits);
	return rc;
}

static int
scrub_too_large(void)
{
	fprintf(stderr, "scrim scrub: input larger than 1 GiB\n");
	return 1;
}

/*
 * All of stdin, as one text. A regular file's size is known up front:
 * its bytes are read into one anonymous mapping made for them, in 2 MiB
 * pages where the kernel has them. Not a mapping of the file itself: a
 * file truncated while mapped would kill the process with SIGBUS.
 * Anything else (a pipe) grows a buffer as it comes.
 *
 * Why huge pages: every 4 KiB page of a fresh buffer costs a fault on
 * first touch, and under some hypervisors a second, slower one the
 * first time user space reads it. Measured on a 50 MB text here: 69 ms
 * of reading and first touch with 4 KiB pages, 10 ms with 2 MiB ones.
 */
#define SCRUBCMD_HUGE ((size_t)2 << 20)

struct input {
	char *p;
	size_t len;
	size_t cap;    /* room at p, when mapped */
	void *map;     /* the mapping (p is within it), or NULL */
	size_t maplen;
	struct buf buf; /* not mapped: p is buf.p */
};

static void
input_free(struct input *in)
{
	/* Not wiped first: pages given back by munmap are zeroed by the
	 * kernel before anyone else gets them, and wiping tens of MB cost
	 * a few per cent of a run. (Heap copies are wiped: freed heap is
	 * reused inside the process.) */
	if (in->map != NULL)
		munmap(in->map, in->maplen);
	buf_wipe(&in->buf);
	memset(in, 0, sizeof(*in));
}

/* A mapping of at least want bytes starting on a 2 MiB boundary. */
static bool
input_map(struct input *in, size_t want)
{
	uintptr_t a;

	in->cap = (want + SCRUBCMD_HUGE - 1) & ~(SCRUBCMD_HUGE - 1);
	in->maplen = in->cap + SCRUBCMD_HUGE;
	in->map = mmap(NULL, in->maplen, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (in->map == MAP_FAILED) {
		in->map = NULL;
		return false;
	}
	a = ((uintptr_t)in->map + SCRUBCMD_HUGE - 1) & ~(uintptr_t)(SCRUBCMD_HUGE - 1);
	in->p = (char *)a;
	/* Advice only: without THP the pages are 4 KiB and all still works. */
	(void)madvise(in->p, in->cap, MADV_HUGEPAGE);
	return true;
}

static int
read_fd(int fd, char *p, size_t cap, size_t *len)
{
	while (*len < cap) {
		ssize_t got = read(fd, p + *len, cap - *len);
		if (got == 0)
			break;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "scrim scrub: reading stdin: %s\n",
			        strerror(errno));
			return 1;
		}
		*len += (size_t)got;
	}
	return 0;
}

static int
read_all(struct input *in)
{
	struct stat st;

	memset(in, 0, sizeof(*in));
	buf_init(&in->buf, SCRUBCMD_MAX_INPUT);
	if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size > 0) {
		if ((uint64_t)st.st_size > SCRUBCMD_MAX_INPUT)
			return scrub_too_large();
		/* +1: a file that grew since fstat shows as a full mapping. */
		if (input_map(in, (size_t)st.st_size + 1)) {
			if (read_fd(STDIN_FILENO, in->p, in->cap, &in->len) != 0)
				return 1;
			if (in->len < in->cap)
				return 0;
			/* It grew: the rest as a stream, after what came. */
			if (!buf_add(&in->buf, in->p, in->len))
				return scrub_too_large();
			munmap(in->map, in->maplen);
			in->map = NULL;
			in->p = NULL;
			in->len = 0;
		}
	}
	for (;;) {
		size_t before;
		if (in->buf.cap - in->buf.len < 2) { /* room for a byte and a NUL */
			size_t more = in->buf.cap ? in->buf.cap : 65536;
			if (more > in->buf.max - in->buf.len)
				more = in->buf.max - in->buf.len;
			if (more == 0 || !buf_reserve(&in->buf, more))
				return scrub_too_large();
		}
		before = in->buf.len;
		if (read_fd(STDIN_FILENO, in->buf.p, in->buf.cap - 1, &in->buf.len) !=
		    0)
			return 1;
		in->buf.p[in->buf.len] = '\0';
		if (in->buf.len < in->buf.cap - 1 || in->buf.len == before)
			break;
	}
	in->p = in->buf.p;
	in->len = in->buf.len;
	return 0;
}

/*
 * The answer of a whole text, written as it is made: one chunk of about
 * 1 MiB at a time (never splitting a hit), so a large text needs no
 * second buffer of its size.
 */
#define SCRUBCMD_CHUNK ((size_t)1 << 20)

static int
write_scrubbed(struct scrub_ctx *ctx, const char *s, size_t n,
               struct scrub_hits *hits)
{
	struct buf out;
	size_t at = 0, k = 0;
	int rc = 0;

	buf_init(&out, SCRUBCMD_MAX_INPUT);
	while (at < n && rc == 0) {
		size_t end = n - at > SCRUBCMD_CHUNK ? at + SCRUBCMD_CHUNK : n;
		size_t k2 = k;
		struct scrub_hits part;

		while (k2 < hits->n && hits->v[k2].start < end) {
			if (hits->v[k2].end > end)
				end = hits->v[k2].end;
			k2++;
		}
		for (size_t j = k; j < k2; j++) {
			hits->v[j].start -= at;
			hits->v[j].end -= at;
		}
		part.v = hits->v + k;
		part.n = k2 - k;
		part.cap = part.n;
		buf_reset(&out);
		if (!scrub_apply(ctx, s + at, end - at, &part, &out)) {
			fprintf(stderr, "scrim scrub: out of memory\n");
			rc = 1;
		} else if (out.len > 0 && fwrite(out.p, 1, out.len, stdout) != out.len) {
			rc = 1;
		}
		for (size_t j = k; j < k2; j++) {
			hits->v[j].start += at;
			hits->v[j].end += at;
		}
		at = end;
		k = k2;
	}
	buf_wipe(&out);
	return rc;
}

int
scrubcmd_run(int argc, char **argv)
{
	const char *dir = NULL;
	bool jsonl = false, show = false;
	struct ruleset *rs;
	struct scrub_ctx ctx;
	int rc = 0;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--rules") == 0 && i + 1 < argc) {
			dir = argv[++i];
		} else if (strcmp(argv[i], "--jsonl") == 0) {
			jsonl = true;
		} else if (strcmp(argv[i], "--explain") == 0) {
			show = true;
		} else if (strcmp(argv[i], "-h") == 0 ||
		           strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "scrim scrub: unexpected argument '%s'\n\n",
			        argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (dir == NULL)
		dir = scrubcmd_default_rules();
	rs = rules_load(dir, true);
	if (rs == NULL) {
		fprintf(stderr, "scrim scrub: rules in %s are invalid\n", dir);
		return 1;
	}
	memset(&ctx, 0, sizeof(ctx));
	/* A fresh secret per run: placeholders are consistent within the
	 * run and mean nothing outside it. */
	if (RAND_bytes(ctx.secret, sizeof(ctx.secret)) != 1) {
		rules_unref(rs);
		return 1;
	}
	ctx.key_id = "cli";
	ctx.vault = vault_new();
	if (jsonl) {
		rc = run_jsonl(rs, &ctx, show);
	} else {
		struct input in;
		struct scrub_hits hits;

		scrub_hits_init(&hits);
		rc = read_all(&in);
		if (rc == 0 && scrub_find_checked(rs, in.p ? in.p : "", in.len,
		                                  show, &hits) != 0)
			rc = 1;
		if (rc == 0)
			rc = write_scrubbed(&ctx, in.p ? in.p : "", in.len, &hits);
		input_free(&in);
		scrub_hits_free(&hits);
	}
	vault_free(ctx.vault);
	OPENSSL_cleanse(ctx.secret, sizeof(ctx.secret));
	rules_unref(rs);
	return rc;
}
