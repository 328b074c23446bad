/*
 * auditcmd.c - `scrim audit verify` and `scrim audit forget`, the offline
 * side of the audit log. verify walks files oldest first through the
 * chain rules (auditchain.c) and names the first broken record; forget
 * removes one key id's records, re-seals the rest of the chain and seals
 * a tombstone, writing new files beside the old ones and renaming them
 * only once the new set verifies. Neither touches a file scrim is
 * writing: the writer holds a lock on it.
 */
#include "audit.h"

#include "alloc.h"
#include "auditchain.h"
#include "buf.h"
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define AUDITCMD_DEFAULT_CONFIG "/etc/scrim/scrim.conf"
/* How far past a seq fault verify looks to tell deletion from reordering. */
#define AUDITCMD_LOOKAHEAD 1000

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: scrim audit verify [--key FILE | -c CONFIG] FILE...\n"
	        "       scrim audit forget --key-id ID [--key FILE | -c CONFIG] "
	        "FILE...\n"
	        "\n"
	        "verify checks audit files as one chain, oldest first (e.g. "
	        "audit.jsonl.2\n"
	        "audit.jsonl.1 audit.jsonl): every MAC, seq, epoch and the "
	        "checkpoints that\n"
	        "link files. It prints OK with the count and the chain's last "
	        "seq and mac,\n"
	        "or the first broken record as FILE:LINE: reason; exit status "
	        "1 then.\n"
	        "\n"
	        "forget removes the records of one key id from the files, "
	        "re-seals the chain\n"
	        "after them and appends a sealed tombstone (when, how many, a "
	        "keyed hash of\n"
	        "the id). The files must verify first, and must not be the one "
	        "scrim is\n"
	        "writing: rotate it (logrotate, then SIGHUP) or stop scrim.\n"
	        "\n"
	        "  --key FILE      the audit key (default: [audit] key_file of "
	        "the config)\n"
	        "  -c, --config F  configuration (default $SCRIM_CONFIG, else "
	        "%s)\n"
	        "  --key-id ID     forget: the key id whose records go\n",
	        AUDITCMD_DEFAULT_CONFIG);
}

static bool
load_key(const char *keyfile, const char *config,
         unsigned char key[AUDITCHAIN_KEY_LEN])
{
	struct scrim_config *c = NULL;
	char err[512];
	bool ok;

	if (keyfile == NULL) {
		const char *e = getenv("SCRIM_CONFIG");

		if (config == NULL)
			config = e && *e ? e : AUDITCMD_DEFAULT_CONFIG;
		c = config_load(config, true);
		if (c == NULL) {
			fprintf(stderr, "scrim audit: %s: cannot load (give --key "
			                "FILE instead)\n",
			        config);
			return false;
		}
		keyfile = c->audit_key_file;
	}
	ok = auditchain_key_load(keyfile, false, key, err, sizeof(err));
	if (!ok)
		fprintf(stderr, "scrim audit: %s\n", err);
	if (c != NULL)
		config_unref(c);
	return ok;
}

/* ---- walking a set of files -------------------------------------------- */

struct walk;
/* Called for each record once the verifier accepted it; before is the
 * chain's state ahead of it. */
typedef void (*walk_hook)(struct walk *w, int file, uint64_t line,
                          const char *s, size_t n,
                          const struct auditchain_line *l,
                          const struct auditchain_state *before);

struct walk {
	char *const *names; /* as the user gave them, for messages */
	const int *fds;
	int nfiles;
	struct auditchain_verifier v;
	walk_hook hook;
	void *arg;
	/* The first broken record, when the walk fails. */
	int bad_file;
	uint64_t bad_line;
	char why[512];
	/* Where the last good record is. */
	int last_file;
	uint64_t last_line;
	char last_event[32];
};

SCRIM_PRINTF(4, 5) static bool
walk_fail(struct walk *w, int file, uint64_t line, const char *fmt, ...)
{
	va_list ap;

	w->bad_file = file;
	w->bad_line = line;
	va_start(ap, fmt);
	(void)vsnprintf(w->why, sizeof(w->why), fmt, ap);
	va_end(ap);
	return false;
}

/*
 * The record at line says seq found where expect was due. Read on to say
 * which tampering it looks like: the expected record further down means
 * reordering; a next record that follows on means records were deleted;
 * a next record that does not follow means this one was edited.
 */
static void
explain_seq(struct walk *w, int f, struct auditchain_reader *r, uint64_t line,
            uint64_t expect, uint64_t found)
{
	struct auditchain_line l;
	const char *s, *why;
	size_t n;
	bool nl, have_next = false;
	uint64_t next_seq = 0;

	if (found < expect) {
		walk_fail(w, f, line,
		          "seq %" PRIu64 " where %" PRIu64 " was expected: a record "
		          "repeated or out of order",
		          found, expect);
		return;
	}
	for (int i = 0; i < AUDITCMD_LOOKAHEAD &&
	                auditchain_reader_next(r, &s, &n, &nl) == 1;
	     i++) {
		if (!auditchain_parse(s, n, &l, &why))
			continue;
		if (!have_next) {
			have_next = true;
			next_seq = l.seq;
		}
		if (l.seq == expect) {
			walk_fail(w, f, line,
			          "seq %" PRIu64 " where %" PRIu64 " was expected: "
			          "records out of order (seq %" PRIu64 " is at line %"
			          PRIu64 ")",
			          found, expect, expect, r->lineno);
			return;
		}
	}
	if (!have_next || next_seq == found + 1)
		walk_fail(w, f, line,
		          "seq %" PRIu64 " where %" PRIu64 " was expected: %" PRIu64
		          " record%s deleted before this line",
		          found, expect, found - expect, found - expect == 1 ? "" : "s");
	else
		walk_fail(w, f, line,
		          "seq %" PRIu64 " where %" PRIu64 " was expected, and the "
		          "next record is seq %" PRIu64 ": this record was edited",
		          found, expect, next_seq);
}

static bool
walk_file(struct walk *w, int f)
{
	struct auditchain_reader r;
	struct auditchain_line l;
	const char *s, *why;
	size_t n;
	bool nl, first = true, ok = true;
	int rc;

	/* A pipe (verify <(zcat audit.jsonl.2.gz)) is read once, from 0. */
	if (lseek(w->fds[f], 0, SEEK_SET) < 0 && errno != ESPIPE)
		return walk_fail(w, f, 0, "cannot read: %s", strerror(errno));
	auditchain_reader_init(&r, w->fds[f]);
	while ((rc = auditchain_reader_next(&r, &s, &n, &nl)) == 1) {
		struct auditchain_state before = w->v.st;
		bool started = w->v.started;

		if (!nl) {
			ok = walk_fail(w, f, r.lineno,
			               "truncated: the last line ends without a newline "
			               "after %zu bytes (a record cut off mid-line)",
			               n);
			break;
		}
		if (!auditchain_verifier_feed(&w->v, s, n, first)) {
			if (w->v.fault == AUDITCHAIN_FAULT_SEQ)
				explain_seq(w, f, &r, r.lineno, w->v.expect_seq,
				            w->v.found_seq);
			else
				walk_fail(w, f, r.lineno, "%s", w->v.why);
			ok = false;
			break;
		}
		/* Parsing again is cheap next to the JSON check feed did. */
		if (!auditchain_parse(s, n, &l, &why)) {
			ok = walk_fail(w, f, r.lineno, "%s", why);
			break;
		}
		if (!started) {
			before.seq = l.prev_seq;
			before.epoch = l.epoch;
			before.count = 0;
			memcpy(before.mac, l.prev_mac, AUDITCHAIN_MAC_LEN);
		}
		if (w->hook != NULL)
			w->hook(w, f, r.lineno, s, n, &l, &before);
		w->last_file = f;
		w->last_line = r.lineno;
		first = false;
	}
	if (ok && rc < 0)
		ok = walk_fail(w, f, r.lineno + 1, "cannot read: %s",
		               strerror(errno));
	if (ok && first)
		ok = walk_fail(w, f, 0,
		               "the file is empty: an audit file starts with a "
		               "checkpoint");
	auditchain_reader_free(&r);
	return ok;
}

static bool
walk_all(struct walk *w, const unsigned char key0[AUDITCHAIN_KEY_LEN])
{
	bool ok = true;

	auditchain_verifier_init(&w->v, key0);
	w->bad_file = -1;
	for (int f = 0; f < w->nfiles && ok; f++)
		ok = walk_file(w, f);
	return ok;
}

/* The JSON member key of a record as a string, or NULL. */
static const char *
member_string(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* ---- verify ------------------------------------------------------------ */

static void
verify_hook(struct walk *w, int file, uint64_t line, const char *s, size_t n,
            const struct auditchain_line *l,
            const struct auditchain_state *before)
{
	json_t *o;

	(void)before;
	if (l->type != AUDITCHAIN_CHECKPOINT && l->type != AUDITCHAIN_TOMBSTONE) {
		w->last_event[0] = '\0';
		return;
	}
	o = json_loadb(s, n, JSON_ALLOW_NUL, NULL);
	if (l->type == AUDITCHAIN_CHECKPOINT) {
		const char *ev = member_string(o, "event");
		snprintf(w->last_event, sizeof(w->last_event), "%s",
		         ev ? ev : "?");
	} else {
		const char *t = member_string(o, "time"),
		           *h = member_string(o, "key_hash");
		json_int_t k = json_integer_value(json_object_get(o, "removed"));

		printf("tombstone at %s:%" PRIu64 ": %" JSON_INTEGER_FORMAT
		       " record%s of key hash %.16s... removed at %s\n",
		       w->names[file], line, k, k == 1 ? "" : "s", h ? h : "?",
		       t ? t : "?");
		snprintf(w->last_event, sizeof(w->last_event), "tombstone");
	}
	json_decref(o);
}

static int
open_all(char *const *files, int n, int *fds, bool lock)
{
	for (int i = 0; i < n; i++) {
		fds[i] = open(files[i], O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			fprintf(stderr, "scrim audit: %s: %s\n", files[i],
			        strerror(errno));
			return i;
		}
		/* scrim holds LOCK_EX on the file it writes. */
		if (lock && flock(fds[i], LOCK_EX | LOCK_NB) != 0) {
			fprintf(stderr,
			        "scrim audit: %s is being written by scrim: rotate "
			        "it first (logrotate, then SIGHUP) or stop scrim\n",
			        files[i]);
			close(fds[i]);
			return i;
		}
	}
	return n;
}

static void
close_all(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

static int
cmd_verify(const unsigned char key0[AUDITCHAIN_KEY_LEN], char *const *files,
           int nfiles)
{
	struct walk w;
	char hex[2 * AUDITCHAIN_MAC_LEN + 1];
	int *fds = xcalloc((size_t)nfiles, sizeof(int));
	int opened = open_all(files, nfiles, fds, false);
	bool ok;

	if (opened < nfiles) {
		close_all(fds, opened);
		free(fds);
		return 1;
	}
	memset(&w, 0, sizeof(w));
	w.names = files;
	w.fds = fds;
	w.nfiles = nfiles;
	w.hook = verify_hook;
	ok = walk_all(&w, key0);
	close_all(fds, nfiles);
	free(fds);
	if (!ok) {
		printf("%s:%" PRIu64 ": %s\n", files[w.bad_file], w.bad_line, w.why);
		printf("BROKEN: %" PRIu64 " records verified before it", w.v.records);
		if (w.v.started)
			printf(" (up to seq %" PRIu64 ")", w.v.last.seq);
		printf("\n");
		auditchain_verifier_wipe(&w.v);
		return 1;
	}
	printf("OK: %" PRIu64 " records in %d file%s (%" PRIu64
	       " checkpoint%s, %" PRIu64 " tombstone%s)\n",
	       w.v.records, nfiles, nfiles == 1 ? "" : "s", w.v.checkpoints,
	       w.v.checkpoints == 1 ? "" : "s", w.v.tombstones,
	       w.v.tombstones == 1 ? "" : "s");
	if (w.v.genesis)
		printf("start: the chain's first record (genesis)\n");
	else
		printf("start: seq %" PRIu64 ", continuing a file not given (its "
		       "link was not checked)\n",
		       w.v.first_seq);
	auditchain_hex(w.v.last.mac, AUDITCHAIN_MAC_LEN, hex);
	printf("end: seq %" PRIu64 " epoch %" PRIu64 " mac %s\n", w.v.last.seq,
	       w.v.last.epoch, hex);
	printf("     at %s:%" PRIu64 "%s%s%s\n", files[w.last_file], w.last_line,
	       w.last_event[0] ? " (" : "", w.last_event,
	       w.last_event[0] ? ")" : "");
	if (w.v.last.has_resume) {
		auditchain_hex(w.v.last.resume.mac, AUDITCHAIN_MAC_LEN, hex);
		printf("     the next record links to seq %" PRIu64 " mac %s,\n"
		       "     where the chain ended before forget\n",
		       w.v.last.resume.seq, hex);
	} else if (strcmp(w.last_event, "close") != 0) {
		printf("note: the last record is not a \"close\" checkpoint: scrim "
		       "is running, crashed, or records were cut from the end.\n");
	}
	printf("note: whole records cut from the end cannot be seen from the "
	       "files alone;\n      compare the end seq and mac with a copy "
	       "kept elsewhere (syslog, an earlier verify).\n");
	auditchain_verifier_wipe(&w.v);
	return 0;
}

/* ---- forget ------------------------------------------------------------ */

struct forget_file {
	struct auditchain_state before; /* the chain ahead of its first line */
	uint64_t matches;
	uint64_t first_line;            /* of its first match */
};

struct forget {
	const char *key_id;
	struct forget_file *files;
	uint64_t removed;
	uint64_t first_seq;             /* of the first record removed */
};

static bool
is_match(const char *s, size_t n, const struct auditchain_line *l,
         const char *key_id)
{
	const char *k;
	json_t *o;
	bool m;

	if (l->type != AUDITCHAIN_REQUEST)
		return false;
	o = json_loadb(s, n, JSON_ALLOW_NUL, NULL);
	k = member_string(o, "key_id");
	m = k != NULL && strcmp(k, key_id) == 0;
	json_decref(o);
	return m;
}

static void
forget_hook(struct walk *w, int file, uint64_t line, const char *s, size_t n,
            const struct auditchain_line *l,
            const struct auditchain_state *before)
{
	struct forget *fg = w->arg;
	struct forget_file *ff = &fg->files[file];

	if (line == 1)
		ff->before = *before;
	if (!is_match(s, n, l, fg->key_id))
		return;
	if (fg->removed == 0)
		fg->first_seq = l->seq;
	if (ff->matches == 0)
		ff->first_line = line;
	ff->matches++;
	fg->removed++;
}

/* A temporary file beside path, mode 0600 (mkstemp's). */
static FILE *
temp_beside(const char *path, char **tmp)
{
	char *d = xstrdup(path), *b = xstrdup(path);
	FILE *f = NULL;
	int fd;

	*tmp = xasprintf("%s/.%s.forget-XXXXXX", dirname(d), basename(b));
	free(d);
	free(b);
	fd = mkstemp(*tmp);
	if (fd >= 0) {
		f = fdopen(fd, "w");
		if (f == NULL) {
			close(fd);
			unlink(*tmp);
		}
	}
	if (f == NULL) {
		fprintf(stderr, "scrim audit: cannot create %s: %s\n", *tmp,
		        strerror(errno));
		free(*tmp);
		*tmp = NULL;
	}
	return f;
}

static bool
put_time_now(struct buf *b)
{
	struct timespec ts;
	struct tm tm;
	char s[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	if (gmtime_r(&ts.tv_sec, &tm) == NULL ||
	    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return false;
	return buf_addf(b, ",\"time\":\"%s.%03ldZ\"", s, ts.tv_nsec / 1000000);
}

/*
 * The new chain while rewriting: ns is where it stands, kr its key.
 * Records keep their order; seq is renumbered, and epochs step by one
 * where the original stepped (or where an epoch would overflow), so the
 * result obeys the same rules verify applies to the writer's output.
 */
struct reseal {
	struct auditchain_state ns;
	struct auditchain_keyring kr;
	uint64_t orig_epoch; /* the original chain's epoch so far */
};

static bool
reseal_step(struct reseal *rs, bool step)
{
	if (!step && rs->ns.count >= AUDITCHAIN_EPOCH_RECORDS)
		step = true;
	if (step) {
		rs->ns.epoch++;
		rs->ns.count = 0;
	}
	return auditchain_keyring_seek(&rs->kr, rs->ns.epoch);
}

/* Re-seal the record s[0..n) onto the new chain, into b. */
static bool
reseal_line(struct reseal *rs, const char *s, const struct auditchain_line *l,
            struct buf *b)
{
	char hex[2 * AUDITCHAIN_MAC_LEN + 1];
	bool step = l->epoch > rs->orig_epoch;

	rs->orig_epoch = l->has_resume ? l->resume.epoch : l->epoch;
	if (!reseal_step(rs, step))
		return false;
	buf_reset(b);
	/* A tombstone's resume point is dropped: what follows it is
	 * re-sealed onto it now. A checkpoint links to the new chain. */
	if (!buf_add(b, s, l->core_len))
		return false;
	if (l->type == AUDITCHAIN_CHECKPOINT) {
		auditchain_hex(rs->ns.mac, AUDITCHAIN_MAC_LEN, hex);
		if (!buf_addf(b, ",\"prev_seq\":%" PRIu64 ",\"prev_mac\":\"%s\"",
		              rs->ns.seq, hex))
			return false;
	}
	return auditchain_seal(b, 0, &rs->ns, rs->kr.key);
}

static bool
write_tombstone(struct reseal *rs, const struct forget *fg,
                const struct auditchain_state *resume,
                const unsigned char key0[AUDITCHAIN_KEY_LEN], struct buf *b)
{
	static const char label[] = "scrim-audit-forget";
	unsigned char h[AUDITCHAIN_MAC_LEN];
	char hh[2 * AUDITCHAIN_MAC_LEN + 1], rh[2 * AUDITCHAIN_MAC_LEN + 1];

	/* Keyed, so the id cannot be found by hashing candidate names;
	 * whoever holds the audit key can still check a given id. */
	if (!auditchain_hmac(key0, label, sizeof(label) - 1, fg->key_id,
	                     strlen(fg->key_id), h) ||
	    !reseal_step(rs, true))
		return false;
	auditchain_hex(h, AUDITCHAIN_MAC_LEN, hh);
	auditchain_hex(resume->mac, AUDITCHAIN_MAC_LEN, rh);
	buf_reset(b);
	return buf_add(b, "{\"type\":\"tombstone\"", 19) && put_time_now(b) &&
	       buf_addf(b,
	                ",\"key_hash\":\"%s\",\"removed\":%" PRIu64
	                ",\"first_seq\":%" PRIu64,
	                hh, fg->removed, fg->first_seq) &&
	       buf_addf(b,
	                ",\"resume_seq\":%" PRIu64 ",\"resume_epoch\":%" PRIu64
	                ",\"resume_count\":%" PRIu64 ",\"resume_mac\":\"%s\"",
	                resume->seq, resume->epoch, resume->count, rh) &&
	       auditchain_seal(b, 0, &rs->ns, rs->kr.key);
}

/* Rewrite files[f0..] into temporaries; names go into tmps. */
static bool
forget_rewrite(const unsigned char key0[AUDITCHAIN_KEY_LEN],
               char *const *files, const int *fds, int nfiles, int f0,
               const struct forget *fg, const struct auditchain_state *end,
               char **tmps, uint64_t *tomb_line)
{
	struct reseal rs;
	struct buf b;
	bool ok = true;

	memset(&rs, 0, sizeof(rs));
	rs.ns = fg->files[f0].before;
	rs.orig_epoch = rs.ns.epoch;
	auditchain_keyring_init(&rs.kr, key0);
	ok = auditchain_keyring_seek(&rs.kr, rs.ns.epoch);
	buf_init(&b, AUDITCHAIN_MAX_LINE + 4096);
	for (int f = f0; f < nfiles && ok; f++) {
		struct auditchain_reader r;
		struct auditchain_line l;
		const char *s, *why;
		size_t n;
		bool nl;
		uint64_t lines = 0;
		FILE *out = temp_beside(files[f], &tmps[f]);

		if (out == NULL || lseek(fds[f], 0, SEEK_SET) < 0) {
			ok = false;
			if (out != NULL)
				(void)fclose(out);
			break;
		}
		auditchain_reader_init(&r, fds[f]);
		while (ok && auditchain_reader_next(&r, &s, &n, &nl) == 1) {
			/* The walk verified every line already. */
			ok = auditchain_parse(s, n, &l, &why);
			if (!ok)
				break;
			if (is_match(s, n, &l, fg->key_id)) {
				rs.orig_epoch = l.epoch;
				continue;
			}
			ok = reseal_line(&rs, s, &l, &b) &&
			     fwrite(b.p, 1, b.len, out) == b.len;
			lines++;
		}
		if (ok && f == nfiles - 1) {
			ok = write_tombstone(&rs, fg, end, key0, &b) &&
			     fwrite(b.p, 1, b.len, out) == b.len;
			*tomb_line = ++lines;
		}
		auditchain_reader_free(&r);
		ok = fflush(out) == 0 && fsync(fileno(out)) == 0 && ok;
		ok = fclose(out) == 0 && ok;
		if (!ok)
			fprintf(stderr, "scrim audit: cannot write %s: %s\n", tmps[f],
			        strerror(errno));
	}
	auditchain_keyring_wipe(&rs.kr);
	buf_free(&b);
	return ok;
}

static void
fsync_dir_of(const char *path)
{
	char *d = xstrdup(path);
	int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	free(d);
}

static int
cmd_forget(const unsigned char key0[AUDITCHAIN_KEY_LEN], const char *key_id,
           char *const *files, int nfiles)
{
	struct forget fg;
	struct walk w;
	int *fds = xcalloc((size_t)nfiles, sizeof(int));
	int *cfds = xcalloc((size_t)nfiles, sizeof(int));
	char **tmps = xcalloc((size_t)nfiles, sizeof(char *));
	char **check = xcalloc((size_t)nfiles, sizeof(char *));
	int opened, copened = 0, f0 = -1, rc = 1;
	struct auditchain_state end;
	uint64_t tomb_line = 0;

	memset(&fg, 0, sizeof(fg));
	fg.key_id = key_id;
	fg.files = xcalloc((size_t)nfiles, sizeof(*fg.files));
	opened = open_all(files, nfiles, fds, true);
	if (opened < nfiles)
		goto done;

	/* Re-sealing a chain that is already broken would launder the
	 * damage: the files must verify as they are. */
	memset(&w, 0, sizeof(w));
	w.names = files;
	w.fds = fds;
	w.nfiles = nfiles;
	w.hook = forget_hook;
	w.arg = &fg;
	if (!walk_all(&w, key0)) {
		printf("%s:%" PRIu64 ": %s\n", files[w.bad_file], w.bad_line, w.why);
		printf("scrim audit forget: the files do not verify; nothing "
		       "changed\n");
		auditchain_verifier_wipe(&w.v);
		goto done;
	}
	end = w.v.st;
	auditchain_verifier_wipe(&w.v);
	if (fg.removed == 0) {
		printf("no records of key id %s in these files; nothing changed\n",
		       key_id);
		rc = 0;
		goto done;
	}
	for (int f = 0; f < nfiles && f0 < 0; f++)
		if (fg.files[f].matches > 0)
			f0 = f;
	if (!forget_rewrite(key0, files, fds, nfiles, f0, &fg, &end, tmps,
	                    &tomb_line))
		goto done;

	/* The new set must verify before it replaces anything. */
	for (int f = 0; f < nfiles; f++)
		check[f] = f < f0 ? files[f] : tmps[f];
	copened = open_all(check, nfiles, cfds, false);
	if (copened < nfiles)
		goto done;
	memset(&w, 0, sizeof(w));
	w.names = check;
	w.fds = cfds;
	w.nfiles = nfiles;
	if (!walk_all(&w, key0)) {
		fprintf(stderr,
		        "scrim audit forget: the re-sealed files do not verify "
		        "(%s:%" PRIu64 ": %s); nothing changed\n",
		        check[w.bad_file], w.bad_line, w.why);
		auditchain_verifier_wipe(&w.v);
		goto done;
	}
	auditchain_verifier_wipe(&w.v);
	for (int f = f0; f < nfiles; f++) {
		if (rename(tmps[f], files[f]) != 0) {
			fprintf(stderr, "scrim audit: cannot replace %s: %s (the "
			                "files before it are already replaced)\n",
			        files[f], strerror(errno));
			goto done;
		}
		free(tmps[f]);
		tmps[f] = NULL;
		fsync_dir_of(files[f]);
	}
	printf("forgot %" PRIu64 " record%s of key id %s; re-sealed from %s:%"
	       PRIu64 "\n",
	       fg.removed, fg.removed == 1 ? "" : "s", key_id, files[f0],
	       fg.files[f0].first_line);
	printf("tombstone at %s:%" PRIu64 "\n", files[nfiles - 1], tomb_line);
	rc = 0;
done:
	close_all(fds, opened);
	close_all(cfds, copened);
	for (int f = 0; f < nfiles; f++) {
		if (tmps[f] != NULL) {
			unlink(tmps[f]);
			free(tmps[f]);
		}
	}
	free(tmps);
	free(check);
	free(fds);
	free(cfds);
	free(fg.files);
	return rc;
}

/* ---- the command ------------------------------------------------------- */

int
audit_cmd(int argc, char **argv)
{
	unsigned char key[AUDITCHAIN_KEY_LEN];
	const char *keyfile = NULL, *config = NULL, *key_id = NULL;
	char **files;
	int nfiles = 0, rc;
	bool forget;

	if (argc < 1 || strcmp(argv[0], "-h") == 0 ||
	    strcmp(argv[0], "--help") == 0) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	if (strcmp(argv[0], "verify") != 0 && strcmp(argv[0], "forget") != 0) {
		fprintf(stderr, "scrim audit: unknown subcommand '%s' (see "
		                "--help)\n",
		        argv[0]);
		return 2;
	}
	forget = argv[0][0] == 'f';
	files = xcalloc((size_t)argc, sizeof(char *));
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		bool more = i + 1 < argc;

		if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
			usage(stdout);
			free(files);
			return 0;
		} else if (strcmp(o, "--key") == 0 && more) {
			keyfile = argv[++i];
		} else if ((strcmp(o, "-c") == 0 || strcmp(o, "--config") == 0) &&
		           more) {
			config = argv[++i];
		} else if (strcmp(o, "--key-id") == 0 && more && forget) {
			key_id = argv[++i];
		} else if (strcmp(o, "--") == 0) {
			while (++i < argc)
				files[nfiles++] = argv[i];
		} else if (o[0] == '-' && o[1] != '\0') {
			fprintf(stderr, "scrim audit %s: unexpected argument '%s' "
			                "(see --help)\n",
			        argv[0], o);
			free(files);
			return 2;
		} else {
			files[nfiles++] = argv[i];
		}
	}
	if (nfiles == 0 || (forget && (key_id == NULL || *key_id == '\0'))) {
		fprintf(stderr, "scrim audit %s: %s (see --help)\n", argv[0],
		        nfiles == 0 ? "no FILE given" : "--key-id ID is required");
		free(files);
		return 2;
	}
	if (!load_key(keyfile, config, key)) {
		free(files);
		return 1;
	}
	rc = forget ? cmd_forget(key, key_id, files, nfiles)
	            : cmd_verify(key, files, nfiles);
	OPENSSL_cleanse(key, sizeof(key));
	(void)fflush(stdout);
	free(files);
	return rc;
}
