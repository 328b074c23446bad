/*
 * indexcmd.c - `scrim index add|search|stats|remove|list`, the offline
 * side of the document index. This file owns walking folders, reading
 * files, deciding what changed (size and mtime first, then SHA-256) and
 * what to skip (hidden entries, binary files, unsupported formats, files
 * over the size cap), and printing. Chunking is chunk.c's, storage and
 * retrieval vindex.c's. Indexes live in state_dir/index/NAME.db; the
 * folder is 0700 and the files 0600. The embedder is the configuration's
 * ([index], [index NAME]); chunks of several files are embedded together,
 * so that an endpoint gets full batches however small the files are.
 */
#include "indexcmd.h"

#include "alloc.h"
#include "chunk.h"
#include "config.h"
#include "embed.h"
#include "pdf.h"
#include "vindex.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INDEXCMD_DEFAULT_CONFIG "/etc/scrim/scrim.conf"
#define INDEXCMD_DEFAULT_NAME "default"
#define INDEXCMD_DEFAULT_MAX_SIZE (10L * 1024 * 1024)
#define INDEXCMD_DEFAULT_K 5
/* Folders nested deeper than this are not walked (a loop guard besides
 * not following symlinked folders). */
#define INDEXCMD_MAX_DEPTH 64
/* An update commits at least this often, so a gateway reading the index
 * sees a long first indexing grow instead of waiting for its end. */
#define INDEXCMD_COMMIT_NS (2LL * 1000 * 1000 * 1000)
#define INDEXCMD_SNIPPET 240
/* Files held back for one embedding batch, at most. */
#define INDEXCMD_MAX_PENDING 256
#define INDEXCMD_MAX_QUERY 8192

struct idxopts {
	const char *config;
	bool config_given;      /* -c or $SCRIM_CONFIG */
	const char *name;
	const char *db;         /* --db FILE: an index file anywhere */
	long max_size;
	unsigned dim;           /* --dim; 0: the configuration's */
	size_t k;
	bool json;
	bool verbose;
	bool quiet;
	enum vindex_mode mode;
	char **args;            /* positional arguments; argv-owned */
	int nargs;
};

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: scrim index add [OPTIONS] PATH...\n"
	        "       scrim index search [OPTIONS] [-k N] [--json] QUERY...\n"
	        "       scrim index stats [OPTIONS] [--json]\n"
	        "       scrim index remove [OPTIONS] PATH...\n"
	        "       scrim index list [-c FILE]\n"
	        "\n"
	        "The local document index that scrim draws context from. "
	        "Everything stays on\n"
	        "this machine: state_dir/index/NAME.db (mode 0600), encrypted "
	        "when [index]\n"
	        "encrypt_key_file names a key (docs/index.md).\n"
	        "\n"
	        "add indexes files and folders (text, Markdown, Org, HTML, "
	        "source code,\n"
	        "PDF when built with poppler; hidden entries and binary files "
	        "are skipped).\n"
	        "Run it again to update:\n"
	        "only changed files are read again, and files gone from an added "
	        "folder\n"
	        "leave the index. remove takes a file or a folder out. search "
	        "prints the\n"
	        "best chunks with their score, file, lines and a snippet.\n"
	        "\n"
	        "  -c, --config FILE  configuration: state_dir and the "
	        "embedder ([index])\n"
	        "                     (default $SCRIM_CONFIG, else %s;\n"
	        "                     with --db and neither, the built-in "
	        "embedder)\n"
	        "  --index NAME       which index (default \"%s\"); letters, "
	        "digits, - and _\n"
	        "  --db FILE          an index file anywhere, instead of "
	        "state_dir/index\n"
	        "  --max-size SIZE    add: skip larger files (default 10M)\n"
	        "  --dim N            add: dimensions of the built-in embedder, "
	        "a power of\n"
	        "                     two from %d to %d (default [index] dim, "
	        "%d); fixed\n"
	        "                     when an index is created\n"
	        "  -v, --verbose      add: name every file skipped or indexed\n"
	        "  -q, --quiet        add: no progress and no summary\n"
	        "  -k N               search: how many chunks (default %d)\n"
	        "  --mode MODE        search: hybrid (default), bm25 or vector\n"
	        "  --json             search, stats: JSON on stdout\n",
	        INDEXCMD_DEFAULT_CONFIG, INDEXCMD_DEFAULT_NAME, EMBED_MIN_DIM,
	        EMBED_MAX_DIM, EMBED_DEFAULT_DIM, INDEXCMD_DEFAULT_K);
}

static bool
valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
	return true;
}

static bool
parse_count(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > max)
		return false;
	*out = v;
	return true;
}

/* 0 ok, 1 bad usage (reported), 2 --help printed. */
static int
parse_opts(int argc, char **argv, struct idxopts *o)
{
	const char *e = getenv("SCRIM_CONFIG");

	memset(o, 0, sizeof(*o));
	o->config = e && *e ? e : INDEXCMD_DEFAULT_CONFIG;
	o->config_given = e && *e;
	o->name = INDEXCMD_DEFAULT_NAME;
	o->max_size = INDEXCMD_DEFAULT_MAX_SIZE;
	o->k = INDEXCMD_DEFAULT_K;
	o->args = xcalloc((size_t)argc + 1, sizeof(char *));
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		unsigned long n;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 2;
		}
		if (strcmp(a, "--") == 0) {
			while (++i < argc)
				o->args[o->nargs++] = argv[i];
			break;
		}
		if (a[0] != '-' || a[1] == '\0') {
			o->args[o->nargs++] = argv[i];
			continue;
		}
		if (strcmp(a, "--json") == 0) {
			o->json = true;
			continue;
		}
		if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
			o->verbose = true;
			continue;
		}
		if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
			o->quiet = true;
			continue;
		}
		if (v == NULL) {
			fprintf(stderr, "scrim index: %s needs a value (see --help)\n",
			        a);
			return 1;
		}
		i++;
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			o->config = v;
			o->config_given = true;
		} else if (strcmp(a, "--index") == 0) {
			if (!valid_name(v)) {
				fprintf(stderr, "scrim index: bad index name '%s' "
				                "(letters, digits, - and _)\n",
				        v);
				return 1;
			}
			o->name = v;
		} else if (strcmp(a, "--db") == 0) {
			o->db = v;
		} else if (strcmp(a, "--max-size") == 0) {
			if (!config_parse_size(v, &o->max_size) || o->max_size <= 0) {
				fprintf(stderr, "scrim index: bad size '%s'\n", v);
				return 1;
			}
		} else if (strcmp(a, "--dim") == 0) {
			struct embed_spec sp;

			if (!parse_count(v, EMBED_MAX_DIM, &n) ||
			    !embed_hash_spec((unsigned)n, &sp)) {
				fprintf(stderr, "scrim index: --dim must be a power "
				                "of two from %d to %d\n",
				        EMBED_MIN_DIM, EMBED_MAX_DIM);
				return 1;
			}
			o->dim = (unsigned)n;
		} else if (strcmp(a, "-k") == 0) {
			if (!parse_count(v, 1000, &n)) {
				fprintf(stderr, "scrim index: -k takes 1 to 1000\n");
				return 1;
			}
			o->k = n;
		} else if (strcmp(a, "--mode") == 0) {
			if (strcmp(v, "hybrid") == 0)
				o->mode = VINDEX_HYBRID;
			else if (strcmp(v, "bm25") == 0)
				o->mode = VINDEX_BM25;
			else if (strcmp(v, "vector") == 0)
				o->mode = VINDEX_VECTOR;
			else {
				fprintf(stderr, "scrim index: --mode is hybrid, bm25 "
				                "or vector\n");
				return 1;
			}
		} else {
			fprintf(stderr, "scrim index: unknown option '%s' (see "
			                "--help)\n",
			        a);
			return 1;
		}
	}
	return 0;
}

/* mkdir that is fine with an existing folder. */
static bool
make_dir(const char *p)
{
	if (mkdir(p, 0700) == 0 || errno == EEXIST)
		return true;
	fprintf(stderr, "scrim index: %s: %s\n", p, strerror(errno));
	return false;
}

/* The configuration, when there is one to read: always for a named
 * index (it says where state_dir is), and with --db when one was given.
 * *none is set when there is none to read (--db alone); NULL otherwise
 * means it failed to load (reported). */
static struct scrim_config *
load_config(const struct idxopts *o, bool *none)
{
	struct scrim_config *c;

	*none = o->db != NULL && !o->config_given;
	if (*none)
		return NULL;
	c = config_load(o->config, true);
	if (c == NULL)
		fprintf(stderr, "scrim index: %s: cannot load the configuration "
		                "(or give --db FILE)\n",
		        o->config);
	return c;
}

/* state_dir/index from the configuration, created when create; owned. */
static char *
index_dir(const struct scrim_config *c, bool create)
{
	char *dir = xasprintf("%s/index", c->state_dir);

	if (create && (!make_dir(c->state_dir) || !make_dir(dir))) {
		free(dir);
		dir = NULL;
	}
	return dir;
}

/* The index file for the options; owned. */
static char *
index_path(const struct idxopts *o, const struct scrim_config *c,
           bool create)
{
	char *dir, *p;

	if (o->db != NULL)
		return xstrdup(o->db);
	dir = index_dir(c, create);
	if (dir == NULL)
		return NULL;
	p = xasprintf("%s/%s.db", dir, o->name);
	free(dir);
	return p;
}

/*
 * The embedder the configuration gives this index (the built-in one at
 * --dim or [index] dim when there is no configuration); NULL after
 * saying why.
 */
static struct embedder *
make_embedder(const struct idxopts *o, const struct scrim_config *c)
{
	struct embed_conf ec;

	memset(&ec, 0, sizeof(ec));
	ec.kind = EMBED_BUILTIN;
	ec.dim = EMBED_DEFAULT_DIM;
	if (c != NULL)
		config_embed_conf(config_index(c, o->name), false, &ec);
	if (o->dim != 0) {
		if (ec.kind != EMBED_BUILTIN) {
			fprintf(stderr, "scrim index: --dim is for the built-in "
			                "embedder; this index's is an endpoint "
			                "([index] embedder = openai)\n");
			return NULL;
		}
		ec.dim = o->dim;
	}
	return embedder_new(&ec);
}

static struct vindex *
open_index(const struct idxopts *o, const struct scrim_config *c,
           bool readonly, char **pathp)
{
	char err[600];
	char *path = index_path(o, c, !readonly);
	struct vindex *vx;

	if (path == NULL)
		return NULL;
	if (readonly && access(path, F_OK) != 0) {
		fprintf(stderr, "scrim index: no index '%s' at %s (create it with "
		                "`scrim index add`)\n",
		        o->db ? path : o->name, path);
		free(path);
		return NULL;
	}
	/* The key of this index (--index NAME, or [index] for --db), when
	 * the configuration gives one. */
	vx = vindex_open(path, readonly,
	                 c != NULL ? &config_index(c, o->name)->encrypt_key
	                           : NULL,
	                 err, sizeof(err));
	if (vx == NULL) {
		fprintf(stderr, "scrim index: %s\n", err);
		free(path);
		return NULL;
	}
	*pathp = path;
	return vx;
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* An absolute, normalised form of a user's path: realpath when it exists,
 * else the path made absolute with "." and ".." and repeated slashes
 * folded (so that a deleted file can still be named). Owned or NULL. */
static char *
abs_path(const char *p)
{
	char *r = realpath(p, NULL), cwd[PATH_MAX], *tmp, *out;
	size_t n = 0, len;

	if (r != NULL)
		return r;
	if (p[0] == '/') {
		tmp = xstrdup(p);
	} else {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return NULL;
		tmp = xasprintf("%s/%s", cwd, p);
	}
	len = strlen(tmp);
	out = xmalloc(len + 2);
	for (size_t i = 0; i < len;) {
		size_t j;

		while (i < len && tmp[i] == '/')
			i++;
		j = i;
		while (j < len && tmp[j] != '/')
			j++;
		if (j == i)
			break;
		if (j - i == 1 && tmp[i] == '.') {
			/* nothing */
		} else if (j - i == 2 && tmp[i] == '.' && tmp[i + 1] == '.') {
			while (n > 0 && out[n - 1] != '/')
				n--;
			if (n > 0)
				n--;
		} else {
			out[n++] = '/';
			memcpy(out + n, tmp + i, j - i);
			n += j - i;
		}
		i = j;
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
	free(tmp);
	return out;
}

/* ---- add -------------------------------------------------------------------------- */

struct strset {
	char **v;
	size_t n, cap;
	bool sorted;
};

static void
strset_add(struct strset *s, const char *p)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		s->v = xrealloc(s->v, s->cap * sizeof(char *));
	}
	s->v[s->n++] = xstrdup(p);
	s->sorted = false;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool
strset_has(struct strset *s, const char *p)
{
	if (!s->sorted) {
		qsort(s->v, s->n, sizeof(char *), cmp_str);
		s->sorted = true;
	}
	return bsearch(&p, s->v, s->n, sizeof(char *), cmp_str) != NULL;
}

static void
strset_free(struct strset *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* A file chunked, waiting for its vectors. */
struct pending {
	char *path;
	struct vindex_file f;
	enum chunk_kind kind;
	struct chunk_list cl;
	bool was_indexed;
	size_t bytes;
};

struct adder {
	const struct idxopts *o;
	struct vindex *vx;
	struct embedder *emb;
	struct embed_spec spec;
	struct chunk_opts co;
	/* Files waiting to be embedded together: an endpoint gets requests
	 * of embed_batch chunks, not one request per small file. */
	struct pending pend[INDEXCMD_MAX_PENDING];
	size_t npend, pend_chunks;
	size_t batch;           /* chunks that make a flush */
	bool tty;               /* progress on stderr */
	int64_t t0, last_progress, last_commit;
	int64_t index_ns;       /* time spent chunking, embedding, storing */
	long scanned, indexed, unchanged, skipped, removed, failed;
	long chunks;
	int64_t bytes;
	struct strset seen;     /* files present after this run, per folder */
	bool broken;            /* the database failed: stop */
	bool said_no_pdf;       /* told that PDF support is not built */
};

static void
progress(struct adder *a, bool last)
{
	int64_t now = now_ns();
	double secs;

	if (!a->tty || a->o->quiet)
		return;
	if (!last && now - a->last_progress < 100000000LL)
		return;
	a->last_progress = now;
	secs = (double)(now - a->t0) / 1e9;
	fprintf(stderr, "\r\033[K%ld files seen, %ld indexed (%ld chunks), %ld "
	                "unchanged, %ld skipped  %.1f s",
	        a->scanned, a->indexed, a->chunks, a->unchanged, a->skipped,
	        secs);
	if (last)
		(void)fputc('\n', stderr);
	(void)fflush(stderr);
}

static void
note(struct adder *a, const char *path, const char *what)
{
	if (a->o->verbose) {
		if (a->tty)
			fprintf(stderr, "\r\033[K");
		fprintf(stderr, "%s: %s\n", path, what);
	}
}

static void
pending_clear(struct adder *a)
{
	for (size_t i = 0; i < a->npend; i++) {
		free(a->pend[i].path);
		chunk_list_free(&a->pend[i].cl);
	}
	a->npend = 0;
	a->pend_chunks = 0;
}

/* Embed the chunks of every pending file in one go and store them. */
static void
flush(struct adder *a)
{
	char err[600];
	const char **texts;
	size_t *lens, k = 0, dim = a->spec.dim;
	float *vecs;
	int64_t t = now_ns();

	if (a->npend == 0 || a->broken) {
		pending_clear(a);
		return;
	}
	texts = xcalloc(a->pend_chunks ? a->pend_chunks : 1, sizeof(*texts));
	lens = xcalloc(a->pend_chunks ? a->pend_chunks : 1, sizeof(*lens));
	vecs = xmalloc((a->pend_chunks ? a->pend_chunks : 1) * dim *
	               sizeof(float));
	for (size_t i = 0; i < a->npend; i++)
		for (size_t c = 0; c < a->pend[i].cl.n; c++, k++)
			texts[k] = vindex_embed_text(a->pend[i].path,
			                             &a->pend[i].cl.v[c], &lens[k]);
	if (embedder_run(a->emb, texts, lens, k, vecs, err, sizeof(err)) < 0) {
		fprintf(stderr, "%sscrim index: %s\n", a->tty ? "\n" : "", err);
		a->broken = true;
	}
	k = 0;
	for (size_t i = 0; i < a->npend && !a->broken; i++) {
		struct pending *p = &a->pend[i];

		if (vindex_file_put(a->vx, p->path, &p->f, chunk_kind_name(p->kind),
		                    p->cl.v, p->cl.n, vecs + k * dim) < 0) {
			fprintf(stderr, "scrim index: %s\n", vindex_error(a->vx));
			a->broken = true;
			break;
		}
		k += p->cl.n;
		note(a, p->path, p->was_indexed ? "updated" : "indexed");
		a->indexed++;
		a->chunks += (long)p->cl.n;
		a->bytes += (int64_t)p->bytes;
	}
	for (size_t i = 0; i < a->pend_chunks; i++)
		free((char *)texts[i]);
	free(texts);
	free(lens);
	free(vecs);
	pending_clear(a);
	a->index_ns += now_ns() - t;
}

/* Commit now and then, so readers see progress and an interrupted run
 * keeps most of its work. */
static void
maybe_commit(struct adder *a, bool force)
{
	int64_t now = now_ns();

	if (a->broken || (!force && now - a->last_commit < INDEXCMD_COMMIT_NS))
		return;
	flush(a);
	if (a->broken)
		return;
	a->last_commit = now;
	if (vindex_commit(a->vx) < 0 ||
	    (!force && vindex_begin(a->vx, &a->spec) < 0)) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(a->vx));
		a->broken = true;
	}
}

/* path, an indexed file, is gone or now skipped: that file leaves the
 * index (only it: a folder of the same name, once indexed, is dealt with
 * by drop_missing, and in an encrypted index a folder costs a pass over
 * every path). */
static void
drop_file(struct adder *a, const char *path, bool was_indexed)
{
	int rc;

	if (!was_indexed)
		return;
	rc = vindex_remove_file(a->vx, path, NULL);
	if (rc < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(a->vx));
		a->broken = true;
		return;
	}
	a->removed += rc;
}

/* Read a regular file of the size stat said, into a fresh buffer. NULL
 * with errno on failure; *n is what was read. */
static char *
read_file(const char *path, size_t size, size_t *n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	char *p;
	size_t got = 0;

	if (fd < 0)
		return NULL;
	/* Client-sized (the user's files): a failure skips the file. */
	p = malloc(size + 1);
	if (p == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	while (got < size) {
		ssize_t r = read(fd, p + got, size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(p);
			close(fd);
			errno = e;
			return NULL;
		}
		if (r == 0)
			break; /* shrank since stat: index what is there */
		got += (size_t)r;
	}
	close(fd);
	p[got] = '\0';
	*n = got;
	return p;
}

/* A PDF chunk's heading is the pages it comes from: its lines and bytes
 * are positions in the text taken out, which no viewer shows. */
static void
page_titles(struct chunk_list *cl, const struct pdf_text *pt)
{
	for (size_t i = 0; i < cl->n; i++) {
		struct chunk *c = &cl->v[i];
		size_t first = 0, last = 0;
		uint64_t end = c->byte_end > c->byte_start ? c->byte_end - 1
		                                           : c->byte_start;

		for (size_t p = 0; p < pt->npages; p++) {
			if (pt->page_start[p] <= c->byte_start)
				first = p;
			if (pt->page_start[p] <= end)
				last = p;
		}
		free(c->title);
		c->title = first == last
		                   ? xasprintf("page %zu", first + 1)
		                   : xasprintf("pages %zu-%zu", first + 1, last + 1);
	}
}

/* The chunks of a PDF; false when it is skipped or failed (counted). */
static bool
chunk_pdf(struct adder *a, const char *path, const char *data, size_t n,
          bool was_indexed, struct chunk_list *cl)
{
	struct pdf_text pt;
	char err[300];

	switch (pdf_extract(data, n, (size_t)a->o->max_size, &pt, err,
	                    sizeof(err))) {
	case PDF_OK:
		break;
	case PDF_ENCRYPTED:
	case PDF_UNSUPPORTED:
		note(a, path, err);
		a->skipped++;
		drop_file(a, path, was_indexed);
		return false;
	case PDF_TOO_LARGE:
	case PDF_FAILED:
		fprintf(stderr, "%sscrim index: %s: %s\n", a->tty ? "\r\033[K" : "",
		        path, err);
		a->failed++;
		if (was_indexed)
			strset_add(&a->seen, path); /* keep what we had */
		return false;
	}
	chunk_document(CHUNK_PDF, pt.text, pt.len, &a->co, cl);
	page_titles(cl, &pt);
	pdf_text_free(&pt);
	return true;
}

static void
index_file(struct adder *a, const char *path, const struct stat *st)
{
	struct vindex_file old, f;
	enum chunk_kind kind = chunk_kind_of(path);
	struct chunk_list cl = {0};
	int have;
	char *data;
	size_t n;
	unsigned int mdlen = 32;
	int64_t t;

	a->scanned++;
	have = vindex_file_get(a->vx, path, &old);
	if (have < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(a->vx));
		a->broken = true;
		return;
	}
	memset(&f, 0, sizeof(f));
	f.size = st->st_size;
	f.mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000LL +
	             st->st_mtim.tv_nsec;
	if (kind == CHUNK_UNSUPPORTED) {
		note(a, path, "skipped: format not supported");
		a->skipped++;
		drop_file(a, path, have == 1);
		return;
	}
	if (kind == CHUNK_PDF && !pdf_supported()) {
		/* Said once whatever -v says, so a PDF never vanishes
		 * unexplained; each one with -v. */
		if (!a->said_no_pdf && !a->o->verbose)
			fprintf(stderr, "%sscrim index: %s: skipped: PDF support "
			        "was not built into this scrim (it needs "
			        "libpoppler-glib); -v names every PDF skipped\n",
			        a->tty ? "\r\033[K" : "", path);
		a->said_no_pdf = true;
		note(a, path, "skipped: PDF support was not built");
		a->skipped++;
		drop_file(a, path, have == 1);
		return;
	}
	if (st->st_size > a->o->max_size) {
		note(a, path, "skipped: larger than --max-size");
		a->skipped++;
		drop_file(a, path, have == 1);
		return;
	}
	if (have == 1 && old.size == f.size && old.mtime_ns == f.mtime_ns) {
		a->unchanged++;
		strset_add(&a->seen, path);
		return;
	}
	data = read_file(path, (size_t)st->st_size, &n);
	if (data == NULL) {
		fprintf(stderr, "scrim index: %s: %s\n", path, strerror(errno));
		a->failed++;
		if (have == 1)
			strset_add(&a->seen, path); /* keep what we had */
		return;
	}
	f.size = (int64_t)n;
	if (EVP_Digest(data, n, f.sha256, &mdlen, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, "scrim index: %s: SHA-256 failed\n", path);
		a->failed++;
		free(data);
		return;
	}
	if (have == 1 && memcmp(old.sha256, f.sha256, 32) == 0) {
		/* Touched, not changed: remember the new mtime only. */
		free(data);
		if (vindex_file_touch(a->vx, path, &f) < 0) {
			fprintf(stderr, "scrim index: %s\n", vindex_error(a->vx));
			a->broken = true;
			return;
		}
		a->unchanged++;
		strset_add(&a->seen, path);
		return;
	}
	if (kind != CHUNK_PDF && chunk_is_binary(data, n)) {
		note(a, path, "skipped: binary");
		a->skipped++;
		free(data);
		drop_file(a, path, have == 1);
		return;
	}
	t = now_ns();
	if (kind == CHUNK_PDF) {
		if (!chunk_pdf(a, path, data, n, have == 1, &cl)) {
			free(data);
			return;
		}
	} else {
		chunk_document(kind, data, n, &a->co, &cl);
	}
	free(data);
	a->index_ns += now_ns() - t;
	a->pend[a->npend].path = xstrdup(path);
	a->pend[a->npend].f = f;
	a->pend[a->npend].kind = kind;
	a->pend[a->npend].cl = cl;
	a->pend[a->npend].was_indexed = have == 1;
	a->pend[a->npend].bytes = n;
	a->npend++;
	a->pend_chunks += cl.n;
	strset_add(&a->seen, path);
	if (a->pend_chunks >= a->batch || a->npend == INDEXCMD_MAX_PENDING)
		flush(a);
	maybe_commit(a, false);
	progress(a, false);
}

static void
walk(struct adder *a, const char *dir, int depth)
{
	DIR *d;
	struct dirent *e;

	if (depth > INDEXCMD_MAX_DEPTH) {
		note(a, dir, "skipped: nested too deep");
		return;
	}
	d = opendir(dir);
	if (d == NULL) {
		fprintf(stderr, "scrim index: %s: %s\n", dir, strerror(errno));
		a->failed++;
		return;
	}
	while (!a->broken && (e = readdir(d)) != NULL) {
		struct stat st;
		char *p;

		/* Hidden entries (.git, .cache, editor swap files) and . .. */
		if (e->d_name[0] == '.')
			continue;
		p = xasprintf("%s/%s", strcmp(dir, "/") == 0 ? "" : dir,
		              e->d_name);
		if (lstat(p, &st) != 0) {
			free(p);
			continue;
		}
		if (S_ISLNK(st.st_mode)) {
			/* Symlinked files are indexed; symlinked folders are
			 * not followed, which rules out loops. */
			if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
				free(p);
				continue;
			}
		}
		if (S_ISDIR(st.st_mode))
			walk(a, p, depth + 1);
		else if (S_ISREG(st.st_mode))
			index_file(a, p, &st);
		free(p);
	}
	closedir(d);
}

struct gone {
	struct strset list;
};

static void
collect(void *arg, const char *path)
{
	strset_add(&((struct gone *)arg)->list, path);
}

/* After walking dir: files the index has under it that the walk did not
 * keep (deleted, or now skipped) leave the index. */
static void
drop_missing(struct adder *a, const char *dir)
{
	struct gone g = {0};

	if (vindex_files_under(a->vx, dir, collect, &g) < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(a->vx));
		a->broken = true;
		return;
	}
	for (size_t i = 0; i < g.list.n && !a->broken; i++) {
		if (strset_has(&a->seen, g.list.v[i]))
			continue;
		note(a, g.list.v[i], "removed: no longer there");
		drop_file(a, g.list.v[i], true);
	}
	strset_free(&g.list);
}

static int
cmd_add(const struct idxopts *o, const struct scrim_config *c)
{
	struct adder a;
	char *path = NULL, err[600];
	double secs;
	int64_t t;

	if (o->nargs == 0) {
		fprintf(stderr, "scrim index add: which files or folders? (see "
		                "--help)\n");
		return 2;
	}
	memset(&a, 0, sizeof(a));
	a.o = o;
	a.tty = isatty(STDERR_FILENO) == 1;
	chunk_opts_default(&a.co);
	a.emb = make_embedder(o, c);
	if (a.emb == NULL)
		return 2;
	/* The built-in embedder has no requests to fill: a file at a time.
	 * An endpoint learns its dimension here, before anything is read,
	 * so that one that is down fails the run at once. */
	a.batch = embedder_is_builtin(a.emb) ? 1
	          : (size_t)config_index(c, o->name)->embed_batch;
	if (embedder_spec(a.emb, true, &a.spec, err, sizeof(err)) < 0) {
		fprintf(stderr, "scrim index: %s\n", err);
		embedder_free(a.emb);
		return 1;
	}
	a.vx = open_index(o, c, false, &path);
	if (a.vx == NULL) {
		embedder_free(a.emb);
		return 1;
	}
	if (vindex_begin(a.vx, &a.spec) < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(a.vx));
		vindex_close(a.vx);
		embedder_free(a.emb);
		free(path);
		return 1;
	}
	a.t0 = a.last_commit = now_ns();
	for (int i = 0; i < o->nargs && !a.broken; i++) {
		char *p = abs_path(o->args[i]);
		struct stat st;

		if (p == NULL) {
			fprintf(stderr, "scrim index: %s: %s\n", o->args[i],
			        strerror(errno));
			a.failed++;
			continue;
		}
		if (stat(p, &st) != 0) {
			int64_t nf = 0;

			/* Gone: whatever was indexed there goes too. */
			if (vindex_remove(a.vx, p, &nf, NULL) < 0) {
				fprintf(stderr, "scrim index: %s\n",
				        vindex_error(a.vx));
				a.broken = true;
			} else if (nf > 0) {
				a.removed += (long)nf;
			} else {
				fprintf(stderr, "scrim index: %s: %s\n", o->args[i],
				        strerror(ENOENT));
				a.failed++;
			}
		} else if (S_ISDIR(st.st_mode)) {
			strset_free(&a.seen);
			walk(&a, p, 0);
			if (!a.broken)
				drop_missing(&a, p);
		} else if (S_ISREG(st.st_mode)) {
			index_file(&a, p, &st);
		} else {
			fprintf(stderr, "scrim index: %s: not a file or folder\n",
			        o->args[i]);
			a.failed++;
		}
		free(p);
	}
	flush(&a);
	if (!a.broken && vindex_refresh_terms(a.vx) < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(a.vx));
		a.broken = true;
	}
	if (a.broken)
		vindex_rollback(a.vx);
	else
		maybe_commit(&a, true);
	progress(&a, true);
	t = now_ns() - a.t0;
	secs = (double)t / 1e9;
	if (!o->quiet && !a.broken)
		printf("%s: %ld indexed (%ld chunks, %.1f MB), %ld unchanged, %ld "
		       "removed, %ld skipped, %ld failed in %.2f s (%.0f "
		       "chunks/s)\n",
		       path, a.indexed, a.chunks, (double)a.bytes / 1e6,
		       a.unchanged, a.removed, a.skipped, a.failed, secs,
		       a.index_ns > 0 ? (double)a.chunks * 1e9 / (double)a.index_ns
		                      : 0.0);
	strset_free(&a.seen);
	pending_clear(&a);
	vindex_close(a.vx);
	embedder_free(a.emb);
	free(path);
	return a.broken || a.failed > 0 ? 1 : 0;
}

/* ---- remove --------------------------------------------------------------------- */

static int
cmd_remove(const struct idxopts *o, const struct scrim_config *c)
{
	struct vindex *vx;
	char *path = NULL;
	int rc = 0;

	if (o->nargs == 0) {
		fprintf(stderr, "scrim index remove: which files or folders?\n");
		return 2;
	}
	vx = open_index(o, c, false, &path);
	if (vx == NULL)
		return 1;
	if (vindex_begin(vx, NULL) < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(vx));
		rc = 1;
		goto out;
	}
	for (int i = 0; i < o->nargs; i++) {
		char *p = abs_path(o->args[i]);
		int64_t nf = 0, nc = 0;

		if (p == NULL || vindex_remove(vx, p, &nf, &nc) < 0) {
			fprintf(stderr, "scrim index: %s: %s\n", o->args[i],
			        p ? vindex_error(vx) : strerror(errno));
			free(p);
			vindex_rollback(vx);
			rc = 1;
			goto out;
		}
		if (nf == 0) {
			fprintf(stderr, "scrim index: %s: not in the index\n",
			        o->args[i]);
			rc = 1;
		} else if (!o->quiet) {
			printf("%s: removed %lld file%s (%lld chunks)\n", p,
			       (long long)nf, nf == 1 ? "" : "s", (long long)nc);
		}
		free(p);
	}
	if (vindex_refresh_terms(vx) < 0 || vindex_commit(vx) < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(vx));
		rc = 1;
	}
out:
	vindex_close(vx);
	free(path);
	return rc;
}

/* ---- search ---------------------------------------------------------------------- */

static bool
word_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c >= 0x80;
}

/* Case-insensitive (ASCII) search for the word w (wn bytes) in s. */
static const char *
find_word(const char *s, size_t n, const char *w, size_t wn)
{
	for (size_t i = 0; i + wn <= n; i++) {
		size_t j = 0;

		if (i > 0 && word_char((unsigned char)s[i - 1]))
			continue;
		while (j < wn) {
			char a = s[i + j], b = w[j];

			if (a >= 'A' && a <= 'Z')
				a = (char)(a + 32);
			if (b >= 'A' && b <= 'Z')
				b = (char)(b + 32);
			if (a != b)
				break;
			j++;
		}
		if (j == wn)
			return s + i;
	}
	return NULL;
}

/*
 * A one-line snippet of at most INDEXCMD_SNIPPET bytes: from a little
 * before the first query word found in the chunk's own text (after the
 * overlap), whitespace folded, cut on UTF-8 boundaries.
 */
static void
snippet(const struct vindex_hit *h, const char *query, char *out,
        size_t outlen)
{
	const char *t = h->text + (h->overlap < strlen(h->text) ? h->overlap : 0);
	size_t n = strlen(t), start = 0, o = 0;
	const char *best = NULL;
	bool space = false;

	for (size_t i = 0; query[i] != '\0';) {
		size_t a;
		const char *f;

		while (query[i] != '\0' && !word_char((unsigned char)query[i]))
			i++;
		a = i;
		while (query[i] != '\0' && word_char((unsigned char)query[i]))
			i++;
		if (i - a < 3)
			continue;
		f = find_word(t, n, query + a, i - a);
		if (f != NULL && (best == NULL || f < best))
			best = f;
	}
	if (best != NULL && (size_t)(best - t) > 60) {
		start = (size_t)(best - t) - 60;
		while (start < n && t[start] != ' ' && t[start] != '\n')
			start++;
	}
	if (start > 0 && o + 4 < outlen) {
		memcpy(out, "\xe2\x80\xa6", 3); /* ellipsis */
		o = 3;
	}
	for (size_t i = start; i < n && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)t[i];

		if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
			space = o > 0;
			continue;
		}
		if (space) {
			out[o++] = ' ';
			space = false;
		}
		out[o++] = (char)c;
	}
	/* Do not leave half a UTF-8 sequence at the cut. */
	if (o + 5 >= outlen) {
		while (o > 0 && ((unsigned char)out[o - 1] & 0xc0) == 0x80)
			o--;
		if (o > 0 && (unsigned char)out[o - 1] >= 0xc0)
			o--;
		memcpy(out + o, "\xe2\x80\xa6", 3);
		o += 3;
	}
	out[o] = '\0';
}

static int
print_json(const struct idxopts *o, const char *query,
           const struct vindex_hit *h, size_t n)
{
	json_t *root = json_object(), *arr = json_array();
	int rc;

	json_object_set_new(root, "query", json_string(query));
	if (o->db == NULL)
		json_object_set_new(root, "index", json_string(o->name));
	for (size_t i = 0; i < n; i++) {
		json_t *x = json_object();

		json_object_set_new(x, "rank", json_integer((json_int_t)i + 1));
		json_object_set_new(x, "id", json_string(h[i].id));
		json_object_set_new(x, "score", json_real(h[i].score));
		json_object_set_new(x, "file", json_string(h[i].file));
		json_object_set_new(x, "title", json_string(h[i].title));
		json_object_set_new(x, "line_start",
		                    json_integer(h[i].line_start));
		json_object_set_new(x, "line_end", json_integer(h[i].line_end));
		json_object_set_new(x, "byte_start",
		                    json_integer((json_int_t)h[i].byte_start));
		json_object_set_new(x, "byte_end",
		                    json_integer((json_int_t)h[i].byte_end));
		json_object_set_new(x, "bm25_rank",
		                    h[i].bm25_rank ? json_integer(h[i].bm25_rank)
		                                   : json_null());
		json_object_set_new(x, "vector_rank",
		                    h[i].vector_rank
		                            ? json_integer(h[i].vector_rank)
		                            : json_null());
		json_object_set_new(x, "cosine", json_real(h[i].cosine));
		json_object_set_new(x, "overlap",
		                    json_integer((json_int_t)h[i].overlap));
		json_object_set_new(x, "text", json_string(h[i].text));
		json_array_append_new(arr, x);
	}
	json_object_set_new(root, "hits", arr);
	rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
	(void)fputc('\n', stdout);
	json_decref(root);
	return rc == 0 ? 0 : 1;
}

static int
cmd_search(const struct idxopts *o, const struct scrim_config *c)
{
	struct embedder *emb;
	struct vindex *vx;
	struct vindex_hit *hits = NULL;
	char query[INDEXCMD_MAX_QUERY], snip[INDEXCMD_SNIPPET + 8];
	char *path = NULL;
	size_t n = 0, ql = 0;
	int rc = 0;

	if (o->nargs == 0) {
		fprintf(stderr, "scrim index search: what to search for?\n");
		return 2;
	}
	query[0] = '\0';
	for (int i = 0; i < o->nargs; i++) {
		int w = snprintf(query + ql, sizeof(query) - ql, "%s%s",
		                 i ? " " : "", o->args[i]);
		if (w < 0 || (size_t)w >= sizeof(query) - ql) {
			fprintf(stderr, "scrim index search: query longer than %d "
			                "bytes\n",
			        INDEXCMD_MAX_QUERY - 1);
			return 2;
		}
		ql += (size_t)w;
	}
	emb = make_embedder(o, c);
	if (emb == NULL)
		return 2;
	vx = open_index(o, c, true, &path);
	if (vx == NULL) {
		embedder_free(emb);
		return 1;
	}
	vindex_set_mode(vx, o->mode);
	vindex_set_embedder(vx, emb);
	rc = vindex_search(vx, query, o->k, &hits, &n);
	if (rc < 0) {
		fprintf(stderr, "scrim index: %s%s\n", vindex_error(vx),
		        rc == -2 ? " (--mode bm25 searches by words alone)" : "");
		rc = 1;
	} else if (o->json) {
		rc = print_json(o, query, hits, n);
	} else {
		if (n == 0)
			printf("no match\n");
		for (size_t i = 0; i < n; i++) {
			snippet(&hits[i], query, snip, sizeof(snip));
			printf("%zu  %.4f  %s:%u-%u  [%s]\n", i + 1, hits[i].score,
			       hits[i].file, hits[i].line_start, hits[i].line_end,
			       hits[i].id);
			if (hits[i].title[0] != '\0')
				printf("   %s\n", hits[i].title);
			printf("   %s\n", snip);
		}
	}
	vindex_hits_free(hits, n);
	vindex_close(vx);
	embedder_free(emb);
	free(path);
	return rc;
}

/* ---- stats and list ---------------------------------------------------------------- */

static int64_t
disk_bytes(const char *path)
{
	static const char *const sfx[] = {"", "-wal", "-shm"};
	int64_t total = 0;

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(sfx); i++) {
		struct stat st;
		char *p = xasprintf("%s%s", path, sfx[i]);

		if (stat(p, &st) == 0)
			total += st.st_size;
		free(p);
	}
	return total;
}

static int
cmd_stats(const struct idxopts *o, const struct scrim_config *c)
{
	struct vindex *vx;
	struct vindex_stats st;
	char *path = NULL, emb[EMBED_SPEC_TEXT] = "none yet";
	int rc = 0;

	vx = open_index(o, c, true, &path);
	if (vx == NULL)
		return 1;
	if (vindex_stats(vx, &st) < 0) {
		fprintf(stderr, "scrim index: %s\n", vindex_error(vx));
		rc = 1;
		goto out;
	}
	if (st.has_embedder)
		embed_spec_format(&st.embedder, emb, sizeof(emb));
	if (o->json) {
		json_t *j = json_object();

		if (o->db == NULL)
			json_object_set_new(j, "index", json_string(o->name));
		json_object_set_new(j, "path", json_string(path));
		json_object_set_new(j, "files", json_integer(st.files));
		json_object_set_new(j, "chunks", json_integer(st.chunks));
		json_object_set_new(j, "file_bytes", json_integer(st.file_bytes));
		json_object_set_new(j, "text_bytes", json_integer(st.text_bytes));
		json_object_set_new(j, "disk_bytes",
		                    json_integer(disk_bytes(path)));
		json_object_set_new(j, "embedder", st.has_embedder
		                                           ? json_string(emb)
		                                           : json_null());
		json_object_set_new(j, "encrypted", json_boolean(st.encrypted));
		json_object_set_new(j, "generation", json_integer(st.generation));
		json_object_set_new(j, "updated", json_integer(st.updated));
		json_dumpf(j, stdout, JSON_INDENT(2));
		(void)fputc('\n', stdout);
		json_decref(j);
	} else {
		char when[64] = "never";
		time_t u = (time_t)st.updated;
		struct tm tm;

		if (st.updated > 0 && localtime_r(&u, &tm) != NULL)
			(void)strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		printf("index       %s\n", o->db ? "-" : o->name);
		printf("path        %s\n", path);
		printf("files       %lld (%.1f MB)\n", (long long)st.files,
		       (double)st.file_bytes / 1e6);
		printf("chunks      %lld (%.1f MB of text)\n",
		       (long long)st.chunks, (double)st.text_bytes / 1e6);
		printf("on disk     %.1f MB\n", (double)disk_bytes(path) / 1e6);
		printf("embedder    %s\n", emb);
		printf("encrypted   %s\n", st.encrypted
		       ? "yes (AES-256-GCM; words as keyed pseudo-terms)" : "no");
		printf("generation  %lld, updated %s\n", (long long)st.generation,
		       when);
	}
out:
	vindex_close(vx);
	free(path);
	return rc;
}

static int
cmd_list(const struct scrim_config *c)
{
	char *dir = c != NULL ? index_dir(c, false) : NULL;
	struct strset names = {0};
	DIR *d;
	struct dirent *e;

	if (dir == NULL) {
		fprintf(stderr, "scrim index list: needs the configuration "
		                "(-c FILE), for state_dir\n");
		return 1;
	}
	d = opendir(dir);
	if (d == NULL) {
		if (errno != ENOENT) {
			fprintf(stderr, "scrim index: %s: %s\n", dir, strerror(errno));
			free(dir);
			return 1;
		}
		free(dir);
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);

		if (n > 3 && strcmp(e->d_name + n - 3, ".db") == 0 &&
		    e->d_name[0] != '.')
			strset_add(&names, e->d_name);
	}
	closedir(d);
	if (names.n > 0)
		(void)strset_has(&names, ""); /* sorts */
	for (size_t i = 0; i < names.n; i++)
		printf("%.*s\n", (int)(strlen(names.v[i]) - 3), names.v[i]);
	strset_free(&names);
	free(dir);
	return 0;
}

int
indexcmd_run(int argc, char **argv)
{
	struct scrim_config *cfg;
	struct idxopts o;
	const char *sub;
	bool none;
	int rc;

	if (argc < 1 || strcmp(argv[0], "-h") == 0 ||
	    strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "help") == 0) {
		bool help = argc >= 1;
		usage(help ? stdout : stderr);
		return help ? 0 : 2;
	}
	sub = argv[0];
	rc = parse_opts(argc - 1, argv + 1, &o);
	if (rc != 0) {
		free(o.args);
		return rc == 2 ? 0 : 2;
	}
	if (strcmp(sub, "add") != 0 && strcmp(sub, "search") != 0 &&
	    strcmp(sub, "stats") != 0 && strcmp(sub, "remove") != 0 &&
	    strcmp(sub, "rm") != 0 && strcmp(sub, "list") != 0) {
		fprintf(stderr, "scrim index: unknown command '%s'\n\n", sub);
		usage(stderr);
		free(o.args);
		return 2;
	}
	cfg = load_config(&o, &none);
	if (cfg == NULL && !none) {
		free(o.args);
		return 1;
	}
	/* Index files and folders are the user's only: 0600 and 0700 from
	 * the start (vindex.c also creates its file 0600 and chmods it). */
	umask(077);
	/* Single-threaded here, as curl_global_init wants. */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (strcmp(sub, "add") == 0)
		rc = cmd_add(&o, cfg);
	else if (strcmp(sub, "search") == 0)
		rc = cmd_search(&o, cfg);
	else if (strcmp(sub, "stats") == 0)
		rc = cmd_stats(&o, cfg);
	else if (strcmp(sub, "list") == 0)
		rc = cmd_list(cfg);
	else
		rc = cmd_remove(&o, cfg);
	curl_global_cleanup();
	config_unref(cfg);
	free(o.args);
	return rc;
}
