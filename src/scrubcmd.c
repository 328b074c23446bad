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
scrub_text(struct ruleset *rs, struct scrub_ctx *ctx, const char *s,
           size_t n, bool show, struct buf *out, struct scrub_hits *hits,
           size_t line)
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
 * All of stdin into in, read(2) straight into the buffer: a file's size
 * is known up front, so it and the answer (out) are allocated once. On
 * a large text, copying through stdio and regrowing cost as much as the
 * scrubbing itself.
 */
static int
read_all(struct buf *in, struct buf *out)
{
	struct stat st;
	size_t want = 65536;

	if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size > 0) {
		want = (uint64_t)st.st_size < SCRUBCMD_MAX_INPUT
		           ? (size_t)st.st_size + 1
		           : SCRUBCMD_MAX_INPUT;
		/* Placeholders are about as long as what they replace. */
		if (!buf_reserve(out, want + want / 8))
			return scrub_too_large();
	}
	for (;;) {
		ssize_t got;

		if (in->cap - in->len < 2) { /* room for a byte and the NUL */
			size_t more = in->cap ? in->cap : want;
			if (more > in->max - in->len)
				more = in->max - in->len;
			if (more == 0 || !buf_reserve(in, more))
				return scrub_too_large();
		}
		got = read(STDIN_FILENO, in->p + in->len, in->cap - in->len - 1);
		if (got == 0)
			break;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "scrim scrub: reading stdin: %s\n",
			        strerror(errno));
			return 1;
		}
		in->len += (size_t)got;
		in->p[in->len] = '\0';
	}
	return 0;
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
		struct buf in, out;
		struct scrub_hits hits;

		buf_init(&in, SCRUBCMD_MAX_INPUT);
		buf_init(&out, SCRUBCMD_MAX_INPUT + SCRUBCMD_MAX_INPUT / 2);
		scrub_hits_init(&hits);
		rc = read_all(&in, &out);
		if (rc == 0 && scrub_text(rs, &ctx, in.p ? in.p : "", in.len, show,
		                          &out, &hits, 0) != 0)
			rc = 1;
		if (rc == 0 && out.len > 0 &&
		    fwrite(out.p, 1, out.len, stdout) != out.len)
			rc = 1;
		buf_wipe(&in);
		buf_wipe(&out);
		scrub_hits_free(&hits);
	}
	vault_free(ctx.vault);
	OPENSSL_cleanse(ctx.secret, sizeof(ctx.secret));
	rules_unref(rs);
	return rc;
}
