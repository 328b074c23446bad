/*
 * vindex.c - the on-disk index (see vindex.h). Schema:
 *
 *   meta(key, value)   schema version, embedder (name, model, dim,
 *                      version), generation, last update
 *   file(id, path, size, mtime_ns, sha256, kind, nchunks, indexed_at)
 *   chunk(id, file_id, seq, lines, bytes, overlap, vec)
 *   sig(id, bits)      one sign bit per dimension of chunk id's vector
 *   fts(title, body)   FTS5, rowid = chunk id, ranked by bm25
 *
 * Triggers delete a file's chunks, and a chunk's fts and sig rows, so no
 * path can leave one without the others.
 *
 *   term_df(term, df) how many chunks hold each (stemmed) word
 *
 * An encrypted index (schema "1-encrypted", made with a key: vcrypt.h)
 * has the same tables, but SQLite never sees a byte of document text,
 * and so neither does any file it writes (the database, its -wal, its
 * -shm, temporary files):
 *
 *   meta               also: the index's salt and its key check value
 *   file.path_mac      a keyed MAC of the path, for exact lookups;
 *   file.path, sha256, kind   sealed (AES-256-GCM, bound to column and
 *                      row); size, mtime_ns, nchunks stay plain
 *   chunk.title, body  sealed: the text (fts holds no text)
 *   chunk.vec, sig.bits sealed: vectors of either embedder say what a
 *                      text is about (see put_sealed)
 *   fts, term_df       pseudo-terms: each word as FTS5 would store it,
 *                      replaced by a keyed MAC (pseudo_text); fts is
 *                      contentless, and forget_file takes a file's
 *                      terms out before its rows are deleted
 *
 * Sealed values are opened where a search needs them: the signatures
 * when they are loaded, the vectors of the candidates, the text of the
 * hits.
 *
 * A query is answered in one read transaction (one snapshot):
 *  1. BM25: the best VINDEX_CANDIDATES chunks from FTS5, ranking by the
 *     query's rarer words only (fts_query says why and how).
 *  2. Vector candidates: every chunk's sign bits, held in memory, are
 *     compared with the query's on the dimensions the query uses (a
 *     weighted Hamming distance, a few popcounts per chunk); the nearest
 *     VINDEX_CANDIDATES survive. This replaces a brute-force dot product
 *     over every vector, which costs too much at 100k chunks.
 *  3. Both candidate sets are re-scored exactly against their stored
 *     vectors (int8, one scale per vector) and ranked by cosine.
 *  4. Reciprocal rank fusion: score = 1/(60 + bm25 rank) +
 *     1/(60 + vector rank), summed over the rankings a chunk is in.
 */
#include "vindex.h"

#include "alloc.h"
#include "vcrypt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VINDEX_SCHEMA "1"
/* The same tables holding sealed values and pseudo-terms. A scrim that
 * does not know it refuses it by this name rather than misread it. */
#define VINDEX_SCHEMA_ENC "1-encrypted"
#define VINDEX_ENCRYPTION "aes-256-gcm, hmac-sha256 pseudo-terms, v1"
/* Candidates taken from each ranking before fusion (at least; more when
 * the caller asks for more hits). */
#define VINDEX_CANDIDATES 100
#define VINDEX_MAX_K 1000
/* Chunks BM25 may score for one query (see fts_query). */
#define VINDEX_BM25_POSTINGS 2000
/* The usual constant of reciprocal rank fusion (Cormack et al.): it
 * keeps one ranking's first place from drowning the other ranking. */
#define VINDEX_RRF_K 60.0
/* Query terms passed to FTS5, and query bytes looked at. */
#define VINDEX_MAX_TERMS 32
#define VINDEX_MAX_QUERY 8192
/* Text embedded per chunk: title, newline, body. */
#define VINDEX_MAX_EMBED (64 * 1024)
/* ST_STATS of an encrypted index counts text bytes from the sealed
 * bodies' lengths. */
_Static_assert(VCRYPT_OVERHEAD == 28, "ST_STATS of an encrypted index");

enum vstmt {
	ST_META_GET,
	ST_META_SET,
	ST_GEN_BUMP,
	ST_FILE_GET,
	ST_FILE_DEL,
	ST_FILE_INS,
	ST_FILE_TOUCH,
	ST_CHUNK_INS,
	ST_SIG_INS,
	ST_FTS_INS,
	ST_BM25,
	ST_VEC,
	ST_HIT,
	ST_SIG_ALL,
	ST_UNDER,
	ST_DEL_UNDER_COUNT,
	ST_DEL_UNDER,
	ST_STATS,
	ST_DF,
	ST_MAX_IDS,
	ST_FILE_ALL,
	ST_FILE_DEL_ID,
	ST_FILE_PATH_OF,
	ST_CHUNKS_OF,
	ST_FTS_FORGET,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[ST_META_SET] = "INSERT INTO meta(key, value) VALUES(?1, ?2) "
	                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	[ST_GEN_BUMP] = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
	                "WHERE key = 'generation'",
	[ST_FILE_GET] = "SELECT size, mtime_ns, sha256, nchunks, id FROM file "
	                "WHERE path = ?1",
	[ST_FILE_DEL] = "DELETE FROM file WHERE path = ?1",
	[ST_FILE_INS] = "INSERT INTO file(path, size, mtime_ns, sha256, kind, "
	                "nchunks, indexed_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_FILE_TOUCH] = "UPDATE file SET size = ?2, mtime_ns = ?3 "
	                  "WHERE path = ?1",
	[ST_CHUNK_INS] = "INSERT INTO chunk(file_id, seq, line_start, line_end, "
	                 "byte_start, byte_end, overlap, vec) "
	                 "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[ST_SIG_INS] = "INSERT INTO sig(id, bits) VALUES(?1, ?2)",
	[ST_FTS_INS] = "INSERT INTO fts(rowid, name, title, body) "
	               "VALUES(?1, ?2, ?3, ?4)",
	/* bm25() with the column weights spelled out: measured faster than
	 * ORDER BY rank with the weights configured. A word in a heading
	 * says more about a chunk than one in its body; the file's name says
	 * something about all of its chunks. */
	[ST_BM25] = "SELECT rowid FROM fts WHERE fts MATCH ?1 "
	            "ORDER BY bm25(fts, 1.0, 2.0, 1.0) LIMIT ?2",
	[ST_DF] = "SELECT df FROM term_df WHERE term = ?1",
	[ST_VEC] = "SELECT vec FROM chunk WHERE id = ?1",
	[ST_HIT] = "SELECT c.seq, c.line_start, c.line_end, c.byte_start, "
	           "c.byte_end, c.overlap, f.path, f.sha256, t.title, t.body, "
	           "f.id FROM chunk c JOIN file f ON f.id = c.file_id, fts t "
	           "WHERE c.id = ?1 AND t.rowid = ?1",
	[ST_SIG_ALL] = "SELECT id, bits FROM sig",
	/* Paths under folder D are those in ["D/", "D0"): '0' follows '/'. */
	[ST_UNDER] = "SELECT path FROM file WHERE path > ?1 || '/' AND "
	             "path < ?1 || '0'",
	[ST_DEL_UNDER_COUNT] = "SELECT count(*), coalesce(sum(nchunks), 0) "
	                       "FROM file WHERE path = ?1 OR (path > ?1 || '/' "
	                       "AND path < ?1 || '0')",
	[ST_DEL_UNDER] = "DELETE FROM file WHERE path = ?1 OR (path > ?1 || '/' "
	                 "AND path < ?1 || '0')",
	[ST_STATS] = "SELECT (SELECT count(*) FROM file), "
	             "(SELECT coalesce(sum(nchunks), 0) FROM file), "
	             "(SELECT coalesce(sum(size), 0) FROM file), "
	             "(SELECT coalesce(sum(length(body)), 0) FROM fts)",
	[ST_MAX_IDS] = "SELECT (SELECT coalesce(max(id), 0) FROM file), "
	               "(SELECT coalesce(max(id), 0) FROM chunk)",
	[ST_FILE_ALL] = "SELECT id, path, nchunks FROM file",
	[ST_FILE_DEL_ID] = "DELETE FROM file WHERE id = ?1",
	/* Encrypted only (forget_file). */
	[ST_FILE_PATH_OF] = "SELECT path FROM file WHERE id = ?1",
	[ST_CHUNKS_OF] = "SELECT id, title, body FROM chunk WHERE file_id = ?1",
	[ST_FTS_FORGET] = "INSERT INTO fts(fts, rowid, name, title, body) "
	                  "VALUES('delete', ?1, ?2, ?3, ?4)",
};

/*
 * The statements that differ in an encrypted index: paths are looked up
 * by their MAC, and rows are inserted with the ids their sealed values
 * are bound to (chosen before the insert: max + 1, which is what SQLite
 * would choose, inside the write transaction that holds the lock), and
 * files are deleted by id (delete_file). Folders have no MAC: what is
 * under one is found by opening every path (ST_FILE_ALL), which keeps
 * the folder tree out of the file.
 */
static const char *const enc_sql[ST_COUNT] = {
	[ST_FILE_GET] = "SELECT size, mtime_ns, sha256, nchunks, id FROM file "
	                "WHERE path_mac = ?1",
	[ST_FILE_INS] = "INSERT INTO file(id, path_mac, path, size, mtime_ns, "
	                "sha256, kind, nchunks, indexed_at) "
	                "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[ST_FILE_TOUCH] = "UPDATE file SET size = ?2, mtime_ns = ?3 "
	                  "WHERE path_mac = ?1",
	[ST_CHUNK_INS] = "INSERT INTO chunk(id, file_id, seq, line_start, "
	                 "line_end, byte_start, byte_end, overlap, vec, title, "
	                 "body) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
	                 "?11)",
	[ST_HIT] = "SELECT c.seq, c.line_start, c.line_end, c.byte_start, "
	           "c.byte_end, c.overlap, f.path, f.sha256, c.title, c.body, "
	           "f.id FROM chunk c JOIN file f ON f.id = c.file_id "
	           "WHERE c.id = ?1",
	[ST_STATS] = "SELECT (SELECT count(*) FROM file), "
	             "(SELECT coalesce(sum(nchunks), 0) FROM file), "
	             "(SELECT coalesce(sum(size), 0) FROM file), "
	             "(SELECT coalesce(sum(length(body) - 28), 0) FROM chunk)",
};

static const char schema_sql[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) "
	"WITHOUT ROWID;"
	"CREATE TABLE file(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, "
	"size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 BLOB NOT NULL, "
	"kind TEXT NOT NULL, nchunks INTEGER NOT NULL, "
	"indexed_at INTEGER NOT NULL);"
	"CREATE TABLE chunk(id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, "
	"seq INTEGER NOT NULL, line_start INTEGER NOT NULL, "
	"line_end INTEGER NOT NULL, byte_start INTEGER NOT NULL, "
	"byte_end INTEGER NOT NULL, overlap INTEGER NOT NULL, "
	"vec BLOB NOT NULL);"
	"CREATE INDEX chunk_file ON chunk(file_id);"
	"CREATE TABLE sig(id INTEGER PRIMARY KEY, bits BLOB NOT NULL);"
	/* Porter stemming: "configure" finds "configuration". */
	"CREATE VIRTUAL TABLE fts USING fts5(name, title, body, "
	"tokenize = 'porter unicode61 remove_diacritics 2');"
	/* Document frequencies, to choose which query words to rank by.
	 * fts5vocab counts them by walking each word's postings, about as
	 * slow as the search it would save, so term_df keeps a copy, made
	 * by vindex_refresh_terms once an update is done. */
	"CREATE VIRTUAL TABLE fts_vocab USING fts5vocab(fts, 'row');"
	"CREATE TABLE term_df(term TEXT PRIMARY KEY, df INTEGER NOT NULL) "
	"WITHOUT ROWID;"
	"CREATE TRIGGER file_ad AFTER DELETE ON file BEGIN "
	"DELETE FROM chunk WHERE file_id = old.id; END;"
	"CREATE TRIGGER chunk_ad AFTER DELETE ON chunk BEGIN "
	"DELETE FROM fts WHERE rowid = old.id; "
	"DELETE FROM sig WHERE id = old.id; END;"
	"INSERT INTO meta(key, value) VALUES('schema', '" VINDEX_SCHEMA "'), "
	"('generation', '0'), ('updated', '0');";

/* The encrypted index: the same tables, with sealed values (BLOB) where
 * the plain one has text, and an FTS5 table of pseudo-terms. Those are
 * already lower case letters and digits, so the 'ascii' tokenizer keeps
 * each whole; stemming them would only merge unrelated words.
 *
 * The FTS5 table is contentless (content=''): it keeps its index of
 * terms and not the pseudo-text it was given, which nothing reads (hits
 * come from chunk's sealed text) and which was 40% of the file at 10k
 * chunks. SQLite 3.40 deletes from a contentless table only when given
 * the values that were inserted, so no trigger does: forget_file
 * recomputes them from the sealed text before a file's rows go. */
static const char schema_enc_sql[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) "
	"WITHOUT ROWID;"
	"CREATE TABLE file(id INTEGER PRIMARY KEY, "
	"path_mac BLOB NOT NULL UNIQUE, path BLOB NOT NULL, "
	"size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 BLOB NOT NULL, "
	"kind BLOB NOT NULL, nchunks INTEGER NOT NULL, "
	"indexed_at INTEGER NOT NULL);"
	"CREATE TABLE chunk(id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, "
	"seq INTEGER NOT NULL, line_start INTEGER NOT NULL, "
	"line_end INTEGER NOT NULL, byte_start INTEGER NOT NULL, "
	"byte_end INTEGER NOT NULL, overlap INTEGER NOT NULL, "
	"vec BLOB NOT NULL, title BLOB NOT NULL, body BLOB NOT NULL);"
	"CREATE INDEX chunk_file ON chunk(file_id);"
	"CREATE TABLE sig(id INTEGER PRIMARY KEY, bits BLOB NOT NULL);"
	"CREATE VIRTUAL TABLE fts USING fts5(name, title, body, content = '', "
	"tokenize = 'ascii');"
	"CREATE VIRTUAL TABLE fts_vocab USING fts5vocab(fts, 'row');"
	"CREATE TABLE term_df(term TEXT PRIMARY KEY, df INTEGER NOT NULL) "
	"WITHOUT ROWID;"
	"CREATE TRIGGER file_ad AFTER DELETE ON file BEGIN "
	"DELETE FROM chunk WHERE file_id = old.id; END;"
	"CREATE TRIGGER chunk_ad AFTER DELETE ON chunk BEGIN "
	"DELETE FROM sig WHERE id = old.id; END;"
	"INSERT INTO meta(key, value) VALUES('schema', '" VINDEX_SCHEMA_ENC
	"'), ('encryption', '" VINDEX_ENCRYPTION "'), "
	"('generation', '0'), ('updated', '0');";

struct vindex {
	sqlite3 *db;
	char *path;
	bool readonly;
	dev_t dev;              /* of the file opened, to see a replacement */
	ino_t ino;
	sqlite3_stmt *st[ST_COUNT];
	char err[512];
	enum vindex_mode mode;
	bool in_txn;
	bool dirty;             /* the open write changed what searches see */

	bool has_spec;          /* the embedder the index records */
	struct embed_spec spec;
	bool vec_ok;            /* queries can be embedded for it: the
	                         * built-in embedder of this version, or an
	                         * endpoint (given with vindex_set_embedder) */
	struct embedder *emb;   /* for queries; not owned; NULL built in */
	int64_t gen_seen;       /* generation when last looked */

	/* The sign-bit cache for vector candidates, valid for one
	 * data_version of the database. */
	bool sig_loaded;
	int64_t sig_version;
	size_t nsig;
	size_t words;           /* uint64 words per signature: dim / 64,
	                         * rounded up (an endpoint's dimension need
	                         * not be a multiple of 64) */
	int64_t *sig_ids;
	uint64_t *sig_bits;
	uint16_t *cost;         /* scratch, nsig entries */
	uint32_t *hist;         /* scratch, 2 * dim + 1 entries */

	float *qv;              /* scratch vectors, dim floats */
	unsigned qv_dim;        /* floats qv holds */
	/* FTS5's own tokenizer, to see query words as the index stores them
	 * (stemmed) when looking up how many chunks hold them. */
	fts5_tokenizer tok;
	Fts5Tokenizer *tokh;

	/* Encryption: NULL for a plain index. */
	struct vcrypt *vc;
	unsigned char *plain;   /* values opened, then copied out */
	size_t plain_cap;
	unsigned char *sealed;  /* values sealed, bound SQLITE_TRANSIENT */
	size_t sealed_cap;
	char (*terms)[VCRYPT_TERM_LEN]; /* one text's pseudo-terms */
	size_t nterms, terms_cap;
	bool terms_failed;
	unsigned char *ptext;   /* pseudo-terms joined, for FTS5 */
	size_t ptext_cap;
};

static void SCRIM_PRINTF(2, 3)
set_err(struct vindex *vx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(vx->err, sizeof(vx->err), fmt, ap);
	va_end(ap);
}

static int
db_fail(struct vindex *vx, const char *what)
{
	set_err(vx, "%s: %s: %s", vx->path, what, sqlite3_errmsg(vx->db));
	return -1;
}

const char *
vindex_error(const struct vindex *vx)
{
	return vx->err;
}

/* A cached prepared statement, reset and unbound; NULL on error. */
static sqlite3_stmt *
stmt(struct vindex *vx, enum vstmt id)
{
	sqlite3_stmt *s = vx->st[id];
	const char *sql = vx->vc != NULL && enc_sql[id] != NULL ? enc_sql[id]
	                                                        : stmt_sql[id];

	if (s == NULL) {
		if (sqlite3_prepare_v3(vx->db, sql, -1,
		                       SQLITE_PREPARE_PERSISTENT, &s,
		                       NULL) != SQLITE_OK) {
			db_fail(vx, "prepare");
			return NULL;
		}
		vx->st[id] = s;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Run a statement that returns no rows; 0 or -1. */
static int
step_done(struct vindex *vx, sqlite3_stmt *s, const char *what)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return db_fail(vx, what);
	return 0;
}

static int
exec(struct vindex *vx, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(vx->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		set_err(vx, "%s: %s", vx->path,
		        msg ? msg : sqlite3_errmsg(vx->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* ---- sealed values ------------------------------------------------------------ */

/* Grow a scratch buffer to at least n bytes. Plaintext may have been in
 * it: it is wiped before it is let go. */
static unsigned char *
reserve(unsigned char **p, size_t *cap, size_t n)
{
	if (n > *cap) {
		size_t c = *cap ? *cap : 1024;
		unsigned char *q;

		while (c < n)
			c *= 2;
		q = xmalloc(c);
		if (*p != NULL) {
			OPENSSL_cleanse(*p, *cap);
			free(*p);
		}
		*p = q;
		*cap = c;
	}
	return *p;
}

/* Seal n bytes as value col of row into vx->sealed; NULL (vx->err) when
 * OpenSSL failed. Bind the result with SQLITE_TRANSIENT: the next seal
 * reuses the buffer. */
static const unsigned char *
seal(struct vindex *vx, enum vcrypt_col col, int64_t row, const void *p,
     size_t n)
{
	unsigned char *out = reserve(&vx->sealed, &vx->sealed_cap,
	                             n + VCRYPT_OVERHEAD);

	if (!vcrypt_seal(vx->vc, col, row, p, n, out)) {
		set_err(vx, "%s: encryption failed", vx->path);
		return NULL;
	}
	return out;
}

static bool
bind_sealed(struct vindex *vx, sqlite3_stmt *s, int i, enum vcrypt_col col,
            int64_t row, const void *p, size_t n)
{
	const unsigned char *c = seal(vx, col, row, p, n);

	return c != NULL && sqlite3_bind_blob(s, i, c, (int)(n + VCRYPT_OVERHEAD),
	                                      SQLITE_TRANSIENT) == SQLITE_OK;
}

/* Open the sealed value in column i of s, value col of row, into
 * vx->plain (NUL-terminated after its *n bytes). false, with a message
 * that says the index is damaged, when it does not authenticate. */
static bool
open_col(struct vindex *vx, sqlite3_stmt *s, int i, enum vcrypt_col col,
         int64_t row, size_t *n)
{
	const unsigned char *c = sqlite3_column_blob(s, i);
	size_t len = (size_t)sqlite3_column_bytes(s, i);
	unsigned char *out;

	if (c == NULL || len < VCRYPT_OVERHEAD)
		goto bad;
	out = reserve(&vx->plain, &vx->plain_cap, len - VCRYPT_OVERHEAD + 1);
	if (!vcrypt_open(vx->vc, col, row, c, len, out))
		goto bad;
	*n = len - VCRYPT_OVERHEAD;
	out[*n] = '\0';
	return true;
bad:
	/* Never a plain value in an encrypted index: refuse, whatever it
	 * holds. Only the row is named, never content. */
	set_err(vx, "%s: a sealed value (row %lld, field %d) does not decrypt: "
	        "the index file was damaged or altered; rebuild it",
	        vx->path, (long long)row, (int)col);
	return false;
}

/* Bind path (as a MAC in an encrypted index) to parameter i. */
static bool
bind_path(struct vindex *vx, sqlite3_stmt *s, int i, const char *path)
{
	unsigned char m[VCRYPT_MAC_LEN];

	if (vx->vc == NULL)
		return sqlite3_bind_text(s, i, path, -1, SQLITE_STATIC) ==
		       SQLITE_OK;
	if (!vcrypt_mac(vx->vc, path, strlen(path), m)) {
		set_err(vx, "%s: MAC failed", vx->path);
		return false;
	}
	return sqlite3_bind_blob(s, i, m, sizeof(m), SQLITE_TRANSIENT) ==
	       SQLITE_OK;
}

/* ---- pseudo-terms ------------------------------------------------------------- */

static int
on_doc_token(void *ctx, int flags, const char *tok, int n, int start,
             int end)
{
	struct vindex *vx = ctx;

	(void)start;
	(void)end;
	/* A colocated token is a synonym at the same place; the porter and
	 * unicode61 tokenizers make none. */
	if ((flags & FTS5_TOKEN_COLOCATED) || n <= 0)
		return SQLITE_OK;
	if (vx->nterms == vx->terms_cap) {
		vx->terms_cap = vx->terms_cap ? vx->terms_cap * 2 : 256;
		vx->terms = xrealloc(vx->terms,
		                     vx->terms_cap * sizeof(vx->terms[0]));
	}
	/* One MAC per word: a cache of them measured no faster at 10k
	 * chunks (bench/INDEX.md), and would keep words in memory. */
	if (!vcrypt_term(vx->vc, tok, (size_t)n, vx->terms[vx->nterms])) {
		vx->terms_failed = true;
		return SQLITE_ERROR;
	}
	vx->nterms++;
	return SQLITE_OK;
}

static int
cmp_term(const void *a, const void *b)
{
	return memcmp(a, b, VCRYPT_TERM_LEN);
}

/*
 * What FTS5 is given in an encrypted index in place of text: the words
 * of s as the plain index's tokenizer would store them (Porter stems,
 * diacritics folded), each replaced by its pseudo-term, separated by
 * spaces, into vx->ptext (*len bytes).
 *
 * The terms are sorted, not left in the text's order: BM25 needs only
 * how often each term is in each column and how long the column is,
 * both unchanged, while FTS5 would otherwise keep every word's position,
 * and the order of the words is what a frequency analysis would have
 * most to go on. Queries never ask for a phrase or a prefix (fts_query
 * quotes single words), so nothing is lost.
 */
static int
pseudo_text(struct vindex *vx, const char *s, size_t n, size_t *len)
{
	char *p;
	int rc;

	vx->nterms = 0;
	vx->terms_failed = false;
	if (n > INT_MAX) {
		set_err(vx, "%s: text too long", vx->path);
		return -1;
	}
	rc = vx->tok.xTokenize(vx->tokh, vx, FTS5_TOKENIZE_DOCUMENT, s, (int)n,
	                       on_doc_token);
	if (rc != SQLITE_OK || vx->terms_failed) {
		set_err(vx, "%s: %s", vx->path, vx->terms_failed
		        ? "MAC failed" : "tokenizer failed");
		return -1;
	}
	/* terms is NULL until a text has had a word. */
	if (vx->nterms > 1)
		qsort(vx->terms, vx->nterms, sizeof(vx->terms[0]), cmp_term);
	p = (char *)reserve(&vx->ptext, &vx->ptext_cap,
	                    vx->nterms * (VCRYPT_TERM_LEN + 1) + 1);
	*len = 0;
	for (size_t i = 0; i < vx->nterms; i++) {
		if (i > 0)
			p[(*len)++] = ' ';
		memcpy(p + *len, vx->terms[i], VCRYPT_TERM_LEN);
		*len += VCRYPT_TERM_LEN;
	}
	p[*len] = '\0';
	return 0;
}

/* meta[key] into out; 1 found, 0 absent, -1 error. */
static int
meta_get(struct vindex *vx, const char *key, char *out, size_t len)
{
	sqlite3_stmt *s = stmt(vx, ST_META_GET);
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(s, 0);
		snprintf(out, len, "%s", v ? v : "");
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : db_fail(vx, "read meta");
}

static int
meta_set(struct vindex *vx, const char *key, const char *value)
{
	sqlite3_stmt *s = stmt(vx, ST_META_SET);

	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	return step_done(vx, s, "write meta");
}

static bool
parse_i64(const char *s, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return false;
	*out = v;
	return true;
}

/* Read the embedder and generation recorded in meta. */
static int
load_meta(struct vindex *vx)
{
	char name[64], model[EMBED_MAX_MODEL + 1], dim[32], ver[32], gen[32];
	int64_t d, v;
	int rc;

	rc = meta_get(vx, "generation", gen, sizeof(gen));
	if (rc < 0)
		return -1;
	if (rc == 0 || !parse_i64(gen, &vx->gen_seen)) {
		set_err(vx, "%s: not a scrim index (no generation)", vx->path);
		return -1;
	}
	rc = meta_get(vx, "embedder", name, sizeof(name));
	if (rc <= 0) {
		vx->has_spec = false;
		return rc;
	}
	/* Indexes made before endpoints were supported have no model. */
	rc = meta_get(vx, "embedder_model", model, sizeof(model));
	if (rc < 0)
		return -1;
	if (rc == 0)
		model[0] = '\0';
	if (meta_get(vx, "dim", dim, sizeof(dim)) != 1 ||
	    meta_get(vx, "embedder_version", ver, sizeof(ver)) != 1 ||
	    !parse_i64(dim, &d) || !parse_i64(ver, &v) || d <= 0 ||
	    d > EMBED_MAX_DIM || v < 0 || strlen(name) >= sizeof(vx->spec.name) ||
	    strlen(model) >= sizeof(vx->spec.model)) {
		set_err(vx, "%s: damaged embedder record", vx->path);
		return -1;
	}
	memset(&vx->spec, 0, sizeof(vx->spec));
	memcpy(vx->spec.name, name, strlen(name) + 1);
	memcpy(vx->spec.model, model, strlen(model) + 1);
	vx->spec.dim = (unsigned)d;
	vx->spec.version = (unsigned)v;
	vx->has_spec = true;
	vx->vec_ok = embed_is_hash(&vx->spec) ? embed_supported(&vx->spec)
	                                      : true;
	/* The query scratch follows the dimension. */
	if (vx->qv_dim != vx->spec.dim) {
		vx->qv = xrealloc(vx->qv, sizeof(float) * vx->spec.dim);
		vx->qv_dim = vx->spec.dim;
	}
	return 0;
}

/* ---- open / close ----------------------------------------------------------------- */

/* Create the file mode 0600 before SQLite does, so it is never readable
 * by others, whatever the process umask; SQLite gives the -wal and -shm
 * files the database file's mode. */
static int
precreate(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fchmod(fd, 0600) != 0) {
		snprintf(err, errlen, "%s: chmod: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static void
to_hex(const unsigned char *p, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static bool
from_hex(const char *s, unsigned char *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return false;
	for (size_t i = 0; i < 2 * n; i++) {
		char c = s[i];
		int v = c >= '0' && c <= '9' ? c - '0'
		        : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;

		if (v < 0)
			return false;
		out[i / 2] = (unsigned char)(i % 2 ? out[i / 2] | v : v << 4);
	}
	return true;
}

/* A new encrypted index's salt and key check value, in meta. */
static int
init_crypto_meta(struct vindex *vx, const struct vcrypt_key *key)
{
	unsigned char salt[VCRYPT_SALT_LEN], chk[VCRYPT_CHECK_LEN];
	char hex[2 * VCRYPT_CHECK_LEN + 1];
	struct vcrypt *vc;

	if (!vcrypt_random(salt, sizeof(salt))) {
		set_err(vx, "%s: no random bytes for the index's salt", vx->path);
		return -1;
	}
	vc = vcrypt_new(key, salt, vx->err, sizeof(vx->err));
	if (vc == NULL)
		return -1;
	vcrypt_check_value(vc, chk);
	vcrypt_free(vc);
	to_hex(salt, sizeof(salt), hex);
	if (meta_set(vx, "salt", hex) < 0)
		return -1;
	to_hex(chk, sizeof(chk), hex);
	return meta_set(vx, "key_check", hex);
}

/* Create the tables in a new (empty) file: encrypted when there is a
 * key. An existing index is left as it is (open_crypto checks it). */
static int
create_schema(struct vindex *vx, const struct vcrypt_key *key)
{
	int rc;

	if (exec(vx, "BEGIN IMMEDIATE") < 0)
		return -1;
	rc = sqlite3_exec(vx->db, "SELECT 1 FROM meta LIMIT 0", NULL, NULL,
	                  NULL);
	if (rc != SQLITE_OK) {
		/* No meta table: a new (empty) file. */
		if (key != NULL && key->set) {
			if (exec(vx, schema_enc_sql) < 0 ||
			    init_crypto_meta(vx, key) < 0)
				goto fail;
		} else if (exec(vx, schema_sql) < 0) {
			goto fail;
		}
	}
	if (exec(vx, "COMMIT") < 0)
		goto fail;
	return 0;
fail:
	exec(vx, "ROLLBACK");
	return -1;
}

/*
 * Check the index's schema against the key given, and set up
 * decryption: an encrypted index needs its key, a plain one must not
 * be given one (its text would be written in clear next to sealed
 * values, or a user would believe it encrypted), and a wrong key is
 * told apart from damage by the key check value.
 */
static int
open_crypto(struct vindex *vx, const struct vcrypt_key *key)
{
	char schema[32] = "", salt_hex[2 * VCRYPT_SALT_LEN + 8],
	     chk_hex[2 * VCRYPT_CHECK_LEN + 8];
	unsigned char salt[VCRYPT_SALT_LEN], want[VCRYPT_CHECK_LEN],
	        have[VCRYPT_CHECK_LEN];
	bool has_key = key != NULL && key->set, enc;
	int rc = meta_get(vx, "schema", schema, sizeof(schema));

	if (rc < 0)
		return -1;
	enc = strcmp(schema, VINDEX_SCHEMA_ENC) == 0;
	if (rc == 0 || (!enc && strcmp(schema, VINDEX_SCHEMA) != 0)) {
		set_err(vx, "%s: index schema %s, this scrim reads %s and %s",
		        vx->path, rc ? schema : "(none)", VINDEX_SCHEMA,
		        VINDEX_SCHEMA_ENC);
		return -1;
	}
	if (enc && !has_key) {
		set_err(vx, "%s is encrypted and no key is configured for it: "
		        "set encrypt_key_file in [index] (or in [index NAME] for "
		        "this index) to the key it was made with", vx->path);
		return -1;
	}
	if (!enc && has_key) {
		set_err(vx, "%s is not encrypted, but encrypt_key_file is "
		        "configured for it: an index is encrypted when it is "
		        "created, and plain and encrypted content are never "
		        "mixed. Remove encrypt_key_file for this index, or remove "
		        "the index file and add the documents again to rebuild it "
		        "encrypted", vx->path);
		return -1;
	}
	if (!enc)
		return 0;
	if (meta_get(vx, "salt", salt_hex, sizeof(salt_hex)) != 1 ||
	    meta_get(vx, "key_check", chk_hex, sizeof(chk_hex)) != 1 ||
	    !from_hex(salt_hex, salt, sizeof(salt)) ||
	    !from_hex(chk_hex, want, sizeof(want))) {
		set_err(vx, "%s: damaged encryption record (salt, key check)",
		        vx->path);
		return -1;
	}
	vx->vc = vcrypt_new(key, salt, vx->err, sizeof(vx->err));
	if (vx->vc == NULL)
		return -1;
	vcrypt_check_value(vx->vc, have);
	if (CRYPTO_memcmp(have, want, sizeof(have)) != 0) {
		vcrypt_free(vx->vc);
		vx->vc = NULL;
		set_err(vx, "%s: the configured key (encrypt_key_file) is not "
		        "the key this index was encrypted with", vx->path);
		return -1;
	}
	/* SQLite is given no plaintext in an encrypted index, so nothing it
	 * could spill to a temporary file would be any; keep its sorts and
	 * temporary tables in memory all the same. */
	return exec(vx, "PRAGMA temp_store = MEMORY");
}

/* The tokenizer the fts table was made with (schema_sql), from FTS5's
 * API: the pointer comes back through SELECT fts5(?1). */
static int
open_tokenizer(struct vindex *vx)
{
	static const char *const args[] = {"unicode61", "remove_diacritics",
	                                   "2"};
	fts5_api *api = NULL;
	sqlite3_stmt *s = NULL;
	void *ud = NULL;

	if (sqlite3_prepare_v2(vx->db, "SELECT fts5(?1)", -1, &s, NULL) !=
	    SQLITE_OK)
		return db_fail(vx, "fts5 api");
	sqlite3_bind_pointer(s, 1, (void *)&api, "fts5_api_ptr", NULL);
	sqlite3_step(s);
	sqlite3_finalize(s);
	if (api == NULL || api->iVersion < 2 ||
	    api->xFindTokenizer(api, "porter", &ud, &vx->tok) != SQLITE_OK ||
	    vx->tok.xCreate(ud, (const char **)args, 3, &vx->tokh) !=
	            SQLITE_OK) {
		vx->tokh = NULL;
		set_err(vx, "%s: SQLite has no FTS5 porter tokenizer", vx->path);
		return -1;
	}
	return 0;
}

struct vindex *
vindex_open(const char *path, bool readonly, const struct vcrypt_key *key,
            char *err, size_t errlen)
{
	struct vindex *vx;
	struct stat st;
	int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW |
	            (readonly ? SQLITE_OPEN_READONLY
	                      : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);

	if (!readonly && precreate(path, err, errlen) < 0)
		return NULL;
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	vx = xcalloc(1, sizeof(*vx));
	vx->path = xstrdup(path);
	vx->readonly = readonly;
	vx->dev = st.st_dev;
	vx->ino = st.st_ino;
	/* NOMUTEX: the handle is one thread's at a time, so SQLite's own
	 * locking would only cost. */
	if (sqlite3_open_v2(path, &vx->db, flags, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path,
		         vx->db ? sqlite3_errmsg(vx->db) : "cannot open");
		goto fail;
	}
	sqlite3_extended_result_codes(vx->db, 1);
	sqlite3_busy_timeout(vx->db, 5000);
	if (!readonly) {
		/* WAL: searches go on while an update is written. */
		if (exec(vx, "PRAGMA journal_mode = WAL") < 0 ||
		    exec(vx, "PRAGMA synchronous = NORMAL") < 0 ||
		    create_schema(vx, key) < 0) {
			snprintf(err, errlen, "%s", vx->err);
			goto fail;
		}
	}
	/* Reads: a larger page cache and the file mapped, so a query's
	 * B-tree walks touch memory, not read(2). */
	if (exec(vx, "PRAGMA cache_size = -16384") < 0 ||
	    exec(vx, "PRAGMA mmap_size = 1073741824") < 0 ||
	    open_crypto(vx, key) < 0 || load_meta(vx) < 0 ||
	    open_tokenizer(vx) < 0) {
		snprintf(err, errlen, "%s", vx->err);
		goto fail;
	}
	return vx;
fail:
	vindex_close(vx);
	return NULL;
}

static void
drop_sig(struct vindex *vx)
{
	free(vx->sig_ids);
	free(vx->sig_bits);
	free(vx->cost);
	free(vx->hist);
	vx->sig_ids = NULL;
	vx->sig_bits = NULL;
	vx->cost = NULL;
	vx->hist = NULL;
	vx->nsig = 0;
	vx->sig_loaded = false;
}

void
vindex_close(struct vindex *vx)
{
	if (vx == NULL)
		return;
	if (vx->in_txn)
		vindex_rollback(vx);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(vx->st[i]);
	if (vx->tokh != NULL)
		vx->tok.xDelete(vx->tokh);
	sqlite3_close(vx->db);
	drop_sig(vx);
	free(vx->qv);
	free(vx->path);
	/* Plaintext of an encrypted index lived in these. */
	vcrypt_free(vx->vc);
	if (vx->plain != NULL)
		OPENSSL_cleanse(vx->plain, vx->plain_cap);
	free(vx->plain);
	free(vx->sealed);
	free(vx->terms);
	free(vx->ptext);
	free(vx);
}

void
vindex_set_mode(struct vindex *vx, enum vindex_mode mode)
{
	vx->mode = mode;
}

void
vindex_set_embedder(struct vindex *vx, struct embedder *e)
{
	vx->emb = e;
}

bool
vindex_changed(struct vindex *vx)
{
	struct stat st;
	char gen[32];
	int64_t g;

	if (stat(vx->path, &st) != 0 || st.st_dev != vx->dev ||
	    st.st_ino != vx->ino)
		return true;
	if (meta_get(vx, "generation", gen, sizeof(gen)) != 1 ||
	    !parse_i64(gen, &g))
		return true;
	return g != vx->gen_seen;
}

/* ---- writing ---------------------------------------------------------------------- */

int
vindex_begin(struct vindex *vx, const struct embed_spec *spec)
{
	char have[EMBED_SPEC_TEXT], want[EMBED_SPEC_TEXT], num[32];

	if (vx->readonly) {
		set_err(vx, "%s: opened read-only", vx->path);
		return -1;
	}
	if (spec == NULL) {
		/* Removing needs no embedder. */
		if (exec(vx, "BEGIN IMMEDIATE") < 0)
			return -1;
		vx->in_txn = true;
		return 0;
	}
	if (embed_is_hash(spec) ? !embed_supported(spec)
	                        : spec->dim == 0 || spec->dim > EMBED_MAX_DIM) {
		embed_spec_format(spec, want, sizeof(want));
		set_err(vx, "embedder %s: %s", want, embed_is_hash(spec)
		        ? "not built in" : "no dimension, or more than 4096");
		return -1;
	}
	if (exec(vx, "BEGIN IMMEDIATE") < 0)
		return -1;
	vx->in_txn = true;
	/* Another writer may have recorded an embedder since we opened. */
	if (load_meta(vx) < 0)
		goto fail;
	if (vx->has_spec) {
		if (!embed_spec_equal(&vx->spec, spec)) {
			embed_spec_format(&vx->spec, have, sizeof(have));
			embed_spec_format(spec, want, sizeof(want));
			set_err(vx, "%s was built with embedder %s; this run uses "
			        "%s. Vectors of two embedders cannot be mixed: "
			        "remove the index (or use another --index) to "
			        "rebuild it with %s",
			        vx->path, have, want, want);
			goto fail;
		}
		return 0;
	}
	snprintf(num, sizeof(num), "%u", spec->dim);
	if (meta_set(vx, "embedder", spec->name) < 0 ||
	    meta_set(vx, "embedder_model", spec->model) < 0 ||
	    meta_set(vx, "dim", num) < 0)
		goto fail;
	snprintf(num, sizeof(num), "%u", spec->version);
	if (meta_set(vx, "embedder_version", num) < 0 || load_meta(vx) < 0)
		goto fail;
	vx->dirty = true;
	return 0;
fail:
	vindex_rollback(vx);
	return -1;
}

int
vindex_commit(struct vindex *vx)
{
	char now[32];

	if (!vx->in_txn)
		return 0;
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	/* A run that changed nothing leaves the generation alone, so that
	 * readers have nothing to notice. */
	if ((vx->dirty &&
	     (step_done(vx, stmt(vx, ST_GEN_BUMP), "bump generation") < 0 ||
	      meta_set(vx, "updated", now) < 0)) ||
	    exec(vx, "COMMIT") < 0) {
		vindex_rollback(vx);
		return -1;
	}
	vx->in_txn = false;
	vx->dirty = false;
	/* Our own commits do not move PRAGMA data_version for us. */
	drop_sig(vx);
	return load_meta(vx);
}

void
vindex_rollback(struct vindex *vx)
{
	char *msg = NULL;

	if (!vx->in_txn)
		return;
	sqlite3_exec(vx->db, "ROLLBACK", NULL, NULL, &msg);
	sqlite3_free(msg);
	vx->in_txn = false;
	vx->dirty = false;
}

int
vindex_refresh_terms(struct vindex *vx)
{
	if (!vx->in_txn) {
		set_err(vx, "%s: refresh outside vindex_begin", vx->path);
		return -1;
	}
	if (!vx->dirty)
		return 0;
	return exec(vx, "DELETE FROM term_df; INSERT INTO term_df(term, df) "
	                "SELECT term, doc FROM fts_vocab");
}

int
vindex_file_get(struct vindex *vx, const char *path, struct vindex_file *out)
{
	sqlite3_stmt *s = stmt(vx, ST_FILE_GET);
	int rc;

	if (s == NULL || !bind_path(vx, s, 1, path))
		return -1;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const void *h = sqlite3_column_blob(s, 2);
		size_t n = 0;

		memset(out, 0, sizeof(*out));
		out->size = sqlite3_column_int64(s, 0);
		out->mtime_ns = sqlite3_column_int64(s, 1);
		if (vx->vc != NULL) {
			if (!open_col(vx, s, 2, VCRYPT_FILE_SHA,
			              sqlite3_column_int64(s, 4), &n)) {
				sqlite3_reset(s);
				return -1;
			}
			h = n == 32 ? vx->plain : NULL;
		} else if (sqlite3_column_bytes(s, 2) != 32) {
			h = NULL;
		}
		if (h != NULL)
			memcpy(out->sha256, h, 32);
		out->nchunks = sqlite3_column_int64(s, 3);
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : db_fail(vx, "read file");
}

int
vindex_file_touch(struct vindex *vx, const char *path,
                  const struct vindex_file *f)
{
	sqlite3_stmt *s = stmt(vx, ST_FILE_TOUCH);

	if (s == NULL || !bind_path(vx, s, 1, path))
		return -1;
	sqlite3_bind_int64(s, 2, f->size);
	sqlite3_bind_int64(s, 3, f->mtime_ns);
	return step_done(vx, s, "update file");
}

/* uint64 words of a signature of dim bits. */
static size_t
sig_words(unsigned dim)
{
	return ((size_t)dim + 63) / 64;
}

/* Vector blob: a float scale, then dim int8 values; value i is
 * q[i] * scale. Signature: bit i set when value i is positive; the bits
 * past dim in the last word are 0. */
static void
quantise(const float *v, unsigned dim, unsigned char *blob, uint64_t *bits)
{
	float maxabs = 0, scale, inv;
	signed char *q = (signed char *)(blob + sizeof(float));

	for (unsigned i = 0; i < dim; i++) {
		float a = v[i] < 0 ? -v[i] : v[i];
		if (a > maxabs)
			maxabs = a;
	}
	scale = maxabs > 0 ? maxabs / 127.0f : 1.0f;
	inv = 1.0f / scale;
	memcpy(blob, &scale, sizeof(scale));
	memset(bits, 0, sig_words(dim) * 8);
	for (unsigned i = 0; i < dim; i++) {
		float x = v[i] * inv;
		int r = (int)(x < 0 ? x - 0.5f : x + 0.5f);

		q[i] = (signed char)(r > 127 ? 127 : r < -127 ? -127 : r);
		if (v[i] > 0)
			bits[i / 64] |= 1ULL << (i % 64);
	}
}

/* The part of a path that names the document: its last two components
 * ("licences/Apache-2.0", "notes/oncall.org"). Folders above that are
 * mostly where the user keeps things, not what they are about. */
static const char *
doc_name(const char *path)
{
	const char *last = strrchr(path, '/'), *prev = NULL;

	if (last == NULL)
		return path;
	for (const char *p = path; p < last; p++)
		if (*p == '/')
			prev = p;
	return prev ? prev + 1 : last + 1;
}

char *
vindex_embed_text(const char *path, const struct chunk *c, size_t *len)
{
	/* A chunk's vector is of the document's name, its heading path and
	 * its text: a passage of a licence that never says "Apache" is
	 * still about the Apache licence. */
	const char *name = doc_name(path);
	size_t nl = strlen(name), tl = strlen(c->title), n = c->len;
	char *p;

	if (nl + tl + 2 > VINDEX_MAX_EMBED)
		tl = nl = 0;
	if (n > VINDEX_MAX_EMBED - nl - tl - 2)
		n = VINDEX_MAX_EMBED - nl - tl - 2;
	p = xmalloc(nl + tl + n + 3);
	memcpy(p, name, nl);
	p[nl] = '\n';
	memcpy(p + nl + 1, c->title, tl);
	p[nl + 1 + tl] = '\n';
	memcpy(p + nl + tl + 2, c->text, n);
	*len = nl + tl + 2 + n;
	p[*len] = '\0';
	return p;
}

/* The id and chunk count of indexed file path: 1, 0 when it is not
 * indexed, -1 on error. */
static int
file_id(struct vindex *vx, const char *path, int64_t *id, int64_t *nchunks)
{
	sqlite3_stmt *s = stmt(vx, ST_FILE_GET);
	int rc;

	if (s == NULL || !bind_path(vx, s, 1, path))
		return -1;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 4);
		if (nchunks != NULL)
			*nchunks = sqlite3_column_int64(s, 3);
	}
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : db_fail(vx, "read file");
}

/*
 * Take file fid's chunks out of an encrypted index's contentless FTS5
 * table: each chunk's pseudo-text is made again from its sealed title
 * and text and the file's sealed path, exactly as put_sealed made it,
 * and given to FTS5's 'delete'. A value that does not open stops the
 * update (the index is damaged: rebuild it), since a 'delete' with other
 * terms than were inserted would corrupt the full-text index.
 */
static int
forget_file(struct vindex *vx, int64_t fid)
{
	sqlite3_stmt *s = stmt(vx, ST_FILE_PATH_OF), *f;
	unsigned char *namep = NULL;
	size_t n, namelen = 0, len;
	int rc, ret = -1;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, fid);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return rc == SQLITE_DONE ? 0 : db_fail(vx, "read file");
	}
	if (!open_col(vx, s, 0, VCRYPT_FILE_PATH, fid, &n)) {
		sqlite3_reset(s);
		return -1;
	}
	sqlite3_reset(s);
	{
		const char *name = doc_name((const char *)vx->plain);

		if (pseudo_text(vx, name, strlen(name), &namelen) < 0)
			return -1;
	}
	namep = xmalloc(namelen + 1);
	memcpy(namep, vx->ptext, namelen + 1);
	if ((s = stmt(vx, ST_CHUNKS_OF)) == NULL)
		goto out;
	sqlite3_bind_int64(s, 1, fid);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t cid = sqlite3_column_int64(s, 0);

		if ((f = stmt(vx, ST_FTS_FORGET)) == NULL)
			goto fail;
		sqlite3_bind_int64(f, 1, cid);
		sqlite3_bind_text(f, 2, (const char *)namep, (int)namelen,
		                  SQLITE_STATIC);
		if (!open_col(vx, s, 1, VCRYPT_CHUNK_TITLE, cid, &n) ||
		    pseudo_text(vx, (const char *)vx->plain, n, &len) < 0)
			goto fail;
		sqlite3_bind_text(f, 3, (const char *)vx->ptext, (int)len,
		                  SQLITE_TRANSIENT);
		if (!open_col(vx, s, 2, VCRYPT_CHUNK_BODY, cid, &n) ||
		    pseudo_text(vx, (const char *)vx->plain, n, &len) < 0)
			goto fail;
		sqlite3_bind_text(f, 4, (const char *)vx->ptext, (int)len,
		                  SQLITE_TRANSIENT);
		if (step_done(vx, f, "forget text") < 0)
			goto fail;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		db_fail(vx, "read chunks");
		goto out;
	}
	ret = 0;
	goto out;
fail:
	sqlite3_reset(s);
out:
	free(namep);
	return ret;
}

/* Delete file fid and its chunks (triggers), and, in an encrypted
 * index, first its terms (forget_file). */
static int
delete_file(struct vindex *vx, int64_t fid)
{
	sqlite3_stmt *s;

	if (vx->vc != NULL && forget_file(vx, fid) < 0)
		return -1;
	if ((s = stmt(vx, ST_FILE_DEL_ID)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, fid);
	if (step_done(vx, s, "remove file") < 0)
		return -1;
	vx->dirty = true;
	return 0;
}

/*
 * vindex_file_put for an encrypted index. The ids of the new rows are
 * chosen first, since every sealed value is bound to its row.
 *
 * Vectors are sealed too, for either embedder, rather than the built-in
 * embedder's feature hash being keyed: an endpoint's vectors come from
 * a public model and can be inverted back to text ("vec2text"), which
 * no keying of ours can prevent, and the built-in embedder's unkeyed
 * features (words, word pairs, trigrams) could be tested one dictionary
 * word at a time. One mechanism covers both. The price is opening the
 * signatures when a handle loads them, and the candidates' vectors at
 * each query (bench/INDEX.md has the figures).
 */
static int
put_sealed(struct vindex *vx, const char *path, const struct vindex_file *f,
           const char *kind, const struct chunk *chunks, size_t n,
           const float *vecs)
{
	unsigned dim = vx->spec.dim;
	size_t bloblen = sizeof(float) + dim, sigbytes = sig_words(dim) * 8,
	       namelen = 0, len;
	const char *name = doc_name(path);
	unsigned char *blob = NULL, *namep = NULL;
	uint64_t *bits = NULL;
	sqlite3_stmt *s;
	int64_t fid, cid0;
	int rc, ret = -1;

	rc = file_id(vx, path, &fid, NULL);
	if (rc < 0 || (rc == 1 && delete_file(vx, fid) < 0))
		return -1;
	if ((s = stmt(vx, ST_MAX_IDS)) == NULL)
		return -1;
	if (sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_reset(s);
		return db_fail(vx, "next ids");
	}
	fid = sqlite3_column_int64(s, 0) + 1;
	cid0 = sqlite3_column_int64(s, 1) + 1;
	sqlite3_reset(s);

	if ((s = stmt(vx, ST_FILE_INS)) == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, fid);
	if (!bind_path(vx, s, 2, path) ||
	    !bind_sealed(vx, s, 3, VCRYPT_FILE_PATH, fid, path, strlen(path)) ||
	    !bind_sealed(vx, s, 6, VCRYPT_FILE_SHA, fid, f->sha256, 32) ||
	    !bind_sealed(vx, s, 7, VCRYPT_FILE_KIND, fid, kind, strlen(kind)))
		return -1;
	sqlite3_bind_int64(s, 4, f->size);
	sqlite3_bind_int64(s, 5, f->mtime_ns);
	sqlite3_bind_int64(s, 8, (sqlite3_int64)n);
	sqlite3_bind_int64(s, 9, (sqlite3_int64)time(NULL));
	if (step_done(vx, s, "insert file") < 0)
		return -1;
	vx->dirty = true;

	/* The document's name is the same in every chunk's fts row. */
	if (pseudo_text(vx, name, strlen(name), &namelen) < 0)
		return -1;
	namep = xmalloc(namelen + 1);
	memcpy(namep, vx->ptext, namelen + 1);
	blob = xmalloc(bloblen);
	bits = xmalloc(sigbytes);
	for (size_t i = 0; i < n; i++) {
		const struct chunk *c = &chunks[i];
		int64_t cid = cid0 + (int64_t)i;

		quantise(vecs + i * dim, dim, blob, bits);
		if ((s = stmt(vx, ST_CHUNK_INS)) == NULL)
			goto out;
		sqlite3_bind_int64(s, 1, cid);
		sqlite3_bind_int64(s, 2, fid);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)i);
		sqlite3_bind_int64(s, 4, c->line_start);
		sqlite3_bind_int64(s, 5, c->line_end);
		sqlite3_bind_int64(s, 6, (sqlite3_int64)c->byte_start);
		sqlite3_bind_int64(s, 7, (sqlite3_int64)c->byte_end);
		sqlite3_bind_int64(s, 8, (sqlite3_int64)c->overlap);
		if (!bind_sealed(vx, s, 9, VCRYPT_CHUNK_VEC, cid, blob, bloblen) ||
		    !bind_sealed(vx, s, 10, VCRYPT_CHUNK_TITLE, cid, c->title,
		                 strlen(c->title)) ||
		    !bind_sealed(vx, s, 11, VCRYPT_CHUNK_BODY, cid, c->text,
		                 c->len) ||
		    step_done(vx, s, "insert chunk") < 0)
			goto out;
		if ((s = stmt(vx, ST_SIG_INS)) == NULL)
			goto out;
		sqlite3_bind_int64(s, 1, cid);
		if (!bind_sealed(vx, s, 2, VCRYPT_SIG_BITS, cid, bits, sigbytes) ||
		    step_done(vx, s, "insert signature") < 0)
			goto out;
		if ((s = stmt(vx, ST_FTS_INS)) == NULL)
			goto out;
		sqlite3_bind_int64(s, 1, cid);
		sqlite3_bind_text(s, 2, (const char *)namep, (int)namelen,
		                  SQLITE_STATIC);
		if (pseudo_text(vx, c->title, strlen(c->title), &len) < 0)
			goto out;
		sqlite3_bind_text(s, 3, (const char *)vx->ptext, (int)len,
		                  SQLITE_TRANSIENT);
		if (pseudo_text(vx, c->text, c->len, &len) < 0)
			goto out;
		sqlite3_bind_text(s, 4, (const char *)vx->ptext, (int)len,
		                  SQLITE_TRANSIENT);
		if (step_done(vx, s, "insert text") < 0)
			goto out;
	}
	ret = 0;
out:
	free(namep);
	free(bits);
	free(blob);
	return ret;
}

int
vindex_file_put(struct vindex *vx, const char *path,
                const struct vindex_file *f, const char *kind,
                const struct chunk *chunks, size_t n, const float *vecs)
{
	unsigned dim = vx->spec.dim;
	size_t bloblen = sizeof(float) + dim, sigbytes = sig_words(dim) * 8;
	const char *name = doc_name(path);
	unsigned char *blob = NULL;
	uint64_t *bits = NULL;
	sqlite3_stmt *s;
	int64_t fid;
	int ret = -1;

	if (!vx->in_txn || !vx->has_spec) {
		set_err(vx, "%s: write outside vindex_begin", vx->path);
		return -1;
	}
	if (vx->vc != NULL)
		return put_sealed(vx, path, f, kind, chunks, n, vecs);
	s = stmt(vx, ST_FILE_DEL);
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	if (step_done(vx, s, "delete file") < 0)
		return -1;
	s = stmt(vx, ST_FILE_INS);
	if (s == NULL)
		return -1;
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, f->size);
	sqlite3_bind_int64(s, 3, f->mtime_ns);
	sqlite3_bind_blob(s, 4, f->sha256, 32, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, kind, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, (sqlite3_int64)n);
	sqlite3_bind_int64(s, 7, (sqlite3_int64)time(NULL));
	if (step_done(vx, s, "insert file") < 0)
		return -1;
	fid = sqlite3_last_insert_rowid(vx->db);
	vx->dirty = true;

	blob = xmalloc(bloblen);
	bits = xmalloc(sigbytes);
	for (size_t i = 0; i < n; i++) {
		const struct chunk *c = &chunks[i];
		int64_t cid;

		quantise(vecs + i * dim, dim, blob, bits);
		if ((s = stmt(vx, ST_CHUNK_INS)) == NULL)
			goto out;
		sqlite3_bind_int64(s, 1, fid);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)i);
		sqlite3_bind_int64(s, 3, c->line_start);
		sqlite3_bind_int64(s, 4, c->line_end);
		sqlite3_bind_int64(s, 5, (sqlite3_int64)c->byte_start);
		sqlite3_bind_int64(s, 6, (sqlite3_int64)c->byte_end);
		sqlite3_bind_int64(s, 7, (sqlite3_int64)c->overlap);
		sqlite3_bind_blob(s, 8, blob, (int)bloblen, SQLITE_STATIC);
		if (step_done(vx, s, "insert chunk") < 0)
			goto out;
		cid = sqlite3_last_insert_rowid(vx->db);
		if ((s = stmt(vx, ST_SIG_INS)) == NULL)
			goto out;
		sqlite3_bind_int64(s, 1, cid);
		sqlite3_bind_blob(s, 2, bits, (int)sigbytes, SQLITE_STATIC);
		if (step_done(vx, s, "insert signature") < 0)
			goto out;
		if ((s = stmt(vx, ST_FTS_INS)) == NULL)
			goto out;
		sqlite3_bind_int64(s, 1, cid);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, c->title, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 4, c->text, (int)c->len, SQLITE_STATIC);
		if (step_done(vx, s, "insert text") < 0)
			goto out;
	}
	ret = 0;
out:
	free(bits);
	free(blob);
	return ret;
}

/* Is path (plen bytes) under folder dir, or dir itself when self? As
 * the plain index's SQL has it: "D/..." is under D, "D-x" is not. */
static bool
path_under(const char *path, size_t plen, const char *dir, bool self)
{
	size_t dlen = strlen(dir);

	if (plen == dlen)
		return self && memcmp(path, dir, dlen) == 0;
	return plen > dlen && memcmp(path, dir, dlen) == 0 && path[dlen] == '/';
}

/*
 * Every file of an encrypted index that is under dir (or is dir, when
 * self): fn is called with its id, its chunk count and its path (valid
 * during the call). An encrypted index has no folder names to look up,
 * so every path is opened: about a microsecond a file.
 */
static int
scan_sealed(struct vindex *vx, const char *dir, bool self,
            bool (*fn)(void *arg, int64_t id, int64_t nchunks,
                       const char *path),
            void *arg)
{
	sqlite3_stmt *s = stmt(vx, ST_FILE_ALL);
	size_t len;
	int rc;

	if (s == NULL)
		return -1;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);

		if (!open_col(vx, s, 1, VCRYPT_FILE_PATH, id, &len)) {
			sqlite3_reset(s);
			return -1;
		}
		if (path_under((const char *)vx->plain, len, dir, self) &&
		    !fn(arg, id, sqlite3_column_int64(s, 2),
		        (const char *)vx->plain))
			break;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0
	                                             : db_fail(vx, "list files");
}

struct idlist {
	int64_t *id;
	size_t n, cap;
	int64_t chunks;
};

static bool
collect_id(void *arg, int64_t id, int64_t nchunks, const char *path)
{
	struct idlist *l = arg;

	(void)path;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->id = xrealloc(l->id, l->cap * sizeof(l->id[0]));
	}
	l->id[l->n++] = id;
	l->chunks += nchunks;
	return true;
}

int
vindex_remove(struct vindex *vx, const char *path, int64_t *files,
              int64_t *chunks)
{
	sqlite3_stmt *s;
	struct idlist l = {0};
	int ret = -1;

	if (vx->vc != NULL) {
		/* Found first, deleted after: not while the scan reads. */
		if (scan_sealed(vx, path, true, collect_id, &l) < 0)
			goto out;
		for (size_t i = 0; i < l.n; i++)
			if (delete_file(vx, l.id[i]) < 0)
				goto out;
		if (files)
			*files = (int64_t)l.n;
		if (chunks)
			*chunks = l.chunks;
		ret = 0;
		goto out;
	}
	if ((s = stmt(vx, ST_DEL_UNDER_COUNT)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_reset(s);
		return db_fail(vx, "count files");
	}
	if (sqlite3_column_int64(s, 0) > 0)
		vx->dirty = true;
	if (files)
		*files = sqlite3_column_int64(s, 0);
	if (chunks)
		*chunks = sqlite3_column_int64(s, 1);
	sqlite3_reset(s);
	if ((s = stmt(vx, ST_DEL_UNDER)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	return step_done(vx, s, "remove files");
out:
	free(l.id);
	return ret;
}

int
vindex_remove_file(struct vindex *vx, const char *path, int64_t *chunks)
{
	int64_t fid, nc = 0;
	int rc = file_id(vx, path, &fid, &nc);

	if (rc <= 0)
		return rc;
	if (delete_file(vx, fid) < 0)
		return -1;
	if (chunks)
		*chunks = nc;
	return 1;
}

struct under {
	void (*fn)(void *arg, const char *path);
	void *arg;
};

static bool
call_under(void *arg, int64_t id, int64_t nchunks, const char *path)
{
	struct under *u = arg;

	(void)id;
	(void)nchunks;
	u->fn(u->arg, path);
	return true;
}

int
vindex_files_under(struct vindex *vx, const char *dir,
                   void (*fn)(void *arg, const char *path), void *arg)
{
	sqlite3_stmt *s;
	int rc;

	if (vx->vc != NULL) {
		struct under u = {fn, arg};

		return scan_sealed(vx, dir, false, call_under, &u);
	}
	if ((s = stmt(vx, ST_UNDER)) == NULL)
		return -1;
	sqlite3_bind_text(s, 1, dir, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		fn(arg, (const char *)sqlite3_column_text(s, 0));
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : db_fail(vx, "list files");
}

int
vindex_stats(struct vindex *vx, struct vindex_stats *st)
{
	sqlite3_stmt *s;
	char v[32];
	int rc;

	memset(st, 0, sizeof(*st));
	if (load_meta(vx) < 0)
		return -1;
	st->generation = vx->gen_seen;
	st->encrypted = vx->vc != NULL;
	st->has_embedder = vx->has_spec;
	if (vx->has_spec)
		st->embedder = vx->spec;
	if (meta_get(vx, "updated", v, sizeof(v)) == 1 &&
	    !parse_i64(v, &st->updated))
		st->updated = 0;
	if ((s = stmt(vx, ST_STATS)) == NULL)
		return -1;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		st->files = sqlite3_column_int64(s, 0);
		st->chunks = sqlite3_column_int64(s, 1);
		st->file_bytes = sqlite3_column_int64(s, 2);
		st->text_bytes = sqlite3_column_int64(s, 3);
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : db_fail(vx, "stats");
}

/* ---- search ------------------------------------------------------------------------ */

struct cand {
	int64_t id;
	unsigned rb, rv;        /* ranks, 1-based; 0 = absent */
	float cos;
	bool has_vec;
	double score;
};

static int64_t
data_version(struct vindex *vx)
{
	sqlite3_stmt *s = NULL;
	int64_t v = -1;

	/* Not cached: a pragma statement is cheap to prepare, and caching
	 * one gains nothing measurable. */
	if (sqlite3_prepare_v2(vx->db, "PRAGMA data_version", -1, &s, NULL) ==
	            SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* (Re)load the sign bits of every chunk, when the database changed since
 * they were loaded. Inside the search's read transaction. */
static int
refresh(struct vindex *vx)
{
	int64_t dv = data_version(vx);
	sqlite3_stmt *s;
	size_t cap = 0, words;
	int rc;

	if (dv < 0)
		return db_fail(vx, "data_version");
	if (vx->sig_loaded && dv == vx->sig_version)
		return 0;
	drop_sig(vx);
	if (load_meta(vx) < 0)
		return -1;
	vx->sig_version = dv;
	vx->sig_loaded = true;
	if (!vx->has_spec || !vx->vec_ok)
		return 0;
	words = sig_words(vx->spec.dim);
	vx->words = words;
	if ((s = stmt(vx, ST_SIG_ALL)) == NULL)
		return -1;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		size_t len = (size_t)sqlite3_column_bytes(s, 1);

		if (vx->vc == NULL && len != words * 8)
			continue;
		if (vx->nsig == cap) {
			cap = cap ? cap * 2 : 1024;
			vx->sig_ids = xrealloc(vx->sig_ids, cap * sizeof(int64_t));
			vx->sig_bits = xrealloc(vx->sig_bits,
			                        cap * words * sizeof(uint64_t));
		}
		vx->sig_ids[vx->nsig] = id;
		if (vx->vc == NULL) {
			memcpy(vx->sig_bits + vx->nsig * words,
			       sqlite3_column_blob(s, 1), words * 8);
		} else if (len != words * 8 + VCRYPT_OVERHEAD ||
		           !vcrypt_open(vx->vc, VCRYPT_SIG_BITS, id,
		                        sqlite3_column_blob(s, 1), len,
		                        (unsigned char *)(vx->sig_bits +
		                                          vx->nsig * words))) {
			/* Cut or altered: as any sealed value, it fails the
			 * search rather than leave the chunk out unnoticed. */
			sqlite3_reset(s);
			drop_sig(vx);
			set_err(vx, "%s: a sealed value (row %lld, field %d) does "
			        "not decrypt: the index file was damaged or altered; "
			        "rebuild it", vx->path, (long long)id,
			        (int)VCRYPT_SIG_BITS);
			return -1;
		}
		vx->nsig++;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		drop_sig(vx);
		return db_fail(vx, "read signatures");
	}
	vx->cost = xmalloc((vx->nsig ? vx->nsig : 1) * sizeof(uint16_t));
	vx->hist = xmalloc((2 * vx->spec.dim + 1) * sizeof(uint32_t));
	return 0;
}

/*
 * Weighted Hamming distance between the query's signs and each chunk's,
 * counted only where the query has weight: a disagreement on one of the
 * query's strong dimensions costs 2, on a weak one 1. A dimension the
 * query does not use says nothing, so it costs nothing.
 */
static inline __attribute__((always_inline)) void
scan_body(const uint64_t *bits, size_t n, size_t words, const uint64_t *qb,
          const uint64_t *strong, const uint64_t *weak, uint16_t *cost)
{
	for (size_t i = 0; i < n; i++) {
		const uint64_t *d = bits + i * words;
		unsigned c = 0;

		for (size_t w = 0; w < words; w++) {
			uint64_t x = d[w] ^ qb[w];
			c += 2 * (unsigned)__builtin_popcountll(x & strong[w]) +
			     (unsigned)__builtin_popcountll(x & weak[w]);
		}
		cost[i] = (uint16_t)c;
	}
}

static void
scan_generic(const uint64_t *bits, size_t n, size_t words, const uint64_t *qb,
             const uint64_t *strong, const uint64_t *weak, uint16_t *cost)
{
	scan_body(bits, n, words, qb, strong, weak, cost);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The same loop with the POPCNT instruction, chosen at run time: the
 * generic build must run on any x86-64, and without it popcount is a
 * library call per word. */
__attribute__((target("popcnt"))) static void
scan_popcnt(const uint64_t *bits, size_t n, size_t words, const uint64_t *qb,
            const uint64_t *strong, const uint64_t *weak, uint16_t *cost)
{
	scan_body(bits, n, words, qb, strong, weak, cost);
}
#endif

static void
scan(const uint64_t *bits, size_t n, size_t words, const uint64_t *qb,
     const uint64_t *strong, const uint64_t *weak, uint16_t *cost)
{
#if defined(__x86_64__) && defined(__GNUC__)
	if (__builtin_cpu_supports("popcnt")) {
		scan_popcnt(bits, n, words, qb, strong, weak, cost);
		return;
	}
#endif
	scan_generic(bits, n, words, qb, strong, weak, cost);
}

/* The want nearest chunks by signature, appended to c (unranked). */
static size_t
vector_candidates(struct vindex *vx, const float *q, size_t want,
                  struct cand *c, size_t nc)
{
	unsigned dim = vx->spec.dim;
	size_t words = vx->words, used = 0, take, maxcost = 2 * (size_t)dim;
	uint64_t qb[EMBED_MAX_DIM / 64], strong[EMBED_MAX_DIM / 64],
	        weak[EMBED_MAX_DIM / 64];
	double sum = 0, mean;
	uint32_t below = 0, thr;

	if (vx->nsig == 0)
		return nc;
	memset(qb, 0, sizeof(qb));
	memset(strong, 0, sizeof(strong));
	memset(weak, 0, sizeof(weak));
	for (unsigned i = 0; i < dim; i++) {
		if (q[i] != 0) {
			sum += q[i] < 0 ? -q[i] : q[i];
			used++;
		}
	}
	if (used == 0)
		return nc;
	/* Strong: above the mean weight of the dimensions used. */
	mean = sum / (double)used;
	for (unsigned i = 0; i < dim; i++) {
		double a = q[i] < 0 ? -q[i] : q[i];
		uint64_t bit = 1ULL << (i % 64);

		if (q[i] == 0)
			continue;
		if (q[i] > 0)
			qb[i / 64] |= bit;
		if (a >= mean)
			strong[i / 64] |= bit;
		else
			weak[i / 64] |= bit;
	}
	scan(vx->sig_bits, vx->nsig, words, qb, strong, weak, vx->cost);

	/* Select by histogram: costs are small integers, so the want
	 * smallest are found in two linear passes, no sort. */
	memset(vx->hist, 0, (maxcost + 1) * sizeof(uint32_t));
	for (size_t i = 0; i < vx->nsig; i++)
		vx->hist[vx->cost[i]]++;
	for (thr = 0; thr <= maxcost; thr++) {
		if (below + vx->hist[thr] >= want)
			break;
		below += vx->hist[thr];
	}
	take = want;
	for (size_t i = 0; i < vx->nsig && take > 0; i++) {
		if (vx->cost[i] > thr)
			continue;
		if (vx->cost[i] == thr) {
			/* Ties at the threshold fill what is left. */
			if (below >= want)
				continue;
			below++;
		}
		memset(&c[nc], 0, sizeof(c[nc]));
		c[nc++].id = vx->sig_ids[i];
		take--;
	}
	return nc;
}

static bool
term_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c >= 0x80;
}

struct term {
	char word[64];          /* as the user wrote it, lower case */
	char stem[64];          /* as the index stores it */
	int64_t df;             /* chunks that hold it */
};

static int
on_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
	struct term *t = ctx;

	(void)flags;
	(void)start;
	(void)end;
	/* A word is one token (it has no separators left); keep the
	 * first. */
	if (t->stem[0] == '\0' && n > 0 && (size_t)n < sizeof(t->stem)) {
		memcpy(t->stem, tok, (size_t)n);
		t->stem[n] = '\0';
	}
	return SQLITE_OK;
}

static int
cmp_df(const void *a, const void *b)
{
	const struct term *x = a, *y = b;
	return x->df < y->df ? -1 : x->df > y->df;
}

/*
 * The FTS5 query for free text: its words, quoted (so that AND, NEAR or
 * a '*' in a question are words, not syntax), joined by OR. Stop words
 * are left out unless nothing else is left.
 *
 * BM25 costs about a microsecond for every chunk that holds any query
 * word, and a word like "license" is in most chunks of a licence
 * collection: at 100k chunks one such word makes a query take 100 ms.
 * So words are taken rarest first, by the document frequency the index
 * keeps (fts_vocab), while the chunks they match add up to at most
 * VINDEX_BM25_POSTINGS; words past that are the common ones, whose IDF
 * is low and which would barely move the ranking. When even the rarest
 * word is that common, the query has nothing lexical to rank by and the
 * vector ranking answers alone. Words no chunk holds are dropped.
 */
static int
fts_query(struct vindex *vx, const char *q, size_t n, char *out,
          size_t outlen)
{
	struct term t[VINDEX_MAX_TERMS];
	size_t nt = 0, len = 0, pass;
	int64_t budget = VINDEX_BM25_POSTINGS;
	sqlite3_stmt *s;

	out[0] = '\0';
	for (pass = 0; pass < 2 && nt == 0; pass++) {
		for (size_t i = 0; i < n && nt < VINDEX_MAX_TERMS;) {
			size_t a, k = 0;
			bool dup = false;

			while (i < n && !term_byte((unsigned char)q[i]))
				i++;
			a = i;
			while (i < n && term_byte((unsigned char)q[i]))
				i++;
			if (i == a)
				continue;
			memset(&t[nt], 0, sizeof(t[nt]));
			for (size_t j = a; j < i && k < sizeof(t[0].word) - 1; j++) {
				char c = q[j];
				t[nt].word[k++] =
					(char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
			}
			t[nt].word[k] = '\0';
			/* The first pass drops stop words; the second keeps
			 * them, for a query made only of them. */
			if (pass == 0 && embed_is_stopword(t[nt].word, k))
				continue;
			for (size_t j = 0; j < nt && !dup; j++)
				dup = strcmp(t[j].word, t[nt].word) == 0;
			if (!dup)
				nt++;
		}
	}
	for (size_t j = 0; j < nt; j++) {
		int rc;

		vx->tok.xTokenize(vx->tokh, &t[j], FTS5_TOKENIZE_QUERY, t[j].word,
		                  (int)strlen(t[j].word), on_token);
		if (t[j].stem[0] == '\0')
			continue;
		/* An encrypted index holds the stem's pseudo-term (see
		 * pseudo_text): it is looked up, and matched, instead. */
		if (vx->vc != NULL) {
			char pt[VCRYPT_TERM_LEN];

			if (!vcrypt_term(vx->vc, t[j].stem, strlen(t[j].stem), pt)) {
				set_err(vx, "%s: MAC failed", vx->path);
				return -1;
			}
			memcpy(t[j].stem, pt, VCRYPT_TERM_LEN);
			t[j].stem[VCRYPT_TERM_LEN] = '\0';
		}
		if ((s = stmt(vx, ST_DF)) == NULL)
			return -1;
		sqlite3_bind_text(s, 1, t[j].stem, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		/* A word missing from term_df came with an update not yet
		 * counted (or is in no chunk): take it for a rare one. */
		t[j].df = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 1;
		sqlite3_reset(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return db_fail(vx, "document frequency");
	}
	qsort(t, nt, sizeof(t[0]), cmp_df);
	for (size_t j = 0; j < nt; j++) {
		int w;

		if (t[j].df <= 0)
			continue;
		if (t[j].df > budget)
			break;
		budget -= t[j].df;
		w = snprintf(out + len, outlen - len, "%s\"%s\"",
		             len ? " OR " : "",
		             vx->vc != NULL ? t[j].stem : t[j].word);
		if (w < 0 || (size_t)w >= outlen - len) {
			out[len] = '\0';
			break;
		}
		len += (size_t)w;
	}
	return 0;
}

static int
cmp_id(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int
cmp_cos(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	if (x->has_vec != y->has_vec)
		return x->has_vec ? -1 : 1;
	if (x->cos != y->cos)
		return x->cos > y->cos ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int
cmp_score(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Exact cosine of the query with chunk id's stored vector. */
static int
exact_cos(struct vindex *vx, const float *q, struct cand *c)
{
	sqlite3_stmt *s = stmt(vx, ST_VEC);
	unsigned dim = vx->spec.dim;
	const unsigned char *b = NULL;
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, c->id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && vx->vc != NULL) {
		size_t n;

		/* Opened into vx->plain; a vector that does not open fails
		 * the query, as any altered value does. */
		if (!open_col(vx, s, 0, VCRYPT_CHUNK_VEC, c->id, &n)) {
			sqlite3_reset(s);
			return -1;
		}
		b = n == sizeof(float) + dim ? vx->plain : NULL;
	} else if (rc == SQLITE_ROW &&
	           (size_t)sqlite3_column_bytes(s, 0) == sizeof(float) + dim) {
		b = sqlite3_column_blob(s, 0);
	}
	if (b != NULL) {
		const signed char *qv = (const signed char *)(b + sizeof(float));
		float scale, dot = 0;

		memcpy(&scale, b, sizeof(scale));
		for (unsigned i = 0; i < dim; i++)
			dot += q[i] * (float)qv[i];
		c->cos = dot * scale;
		c->has_vec = true;
	} else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		sqlite3_reset(s);
		return db_fail(vx, "read vector");
	}
	sqlite3_reset(s);
	return 0;
}

static char *
col_dup(sqlite3_stmt *s, int i)
{
	const char *t = (const char *)sqlite3_column_text(s, i);
	return xstrndup(t ? t : "", (size_t)sqlite3_column_bytes(s, i));
}

/* Column i of s as an owned string: opened first in an encrypted
 * index. NULL (vx->err) when it does not decrypt. */
static char *
hit_str(struct vindex *vx, sqlite3_stmt *s, int i, enum vcrypt_col col,
        int64_t row)
{
	size_t n;

	if (vx->vc == NULL)
		return col_dup(s, i);
	if (!open_col(vx, s, i, col, row, &n))
		return NULL;
	return xstrndup((const char *)vx->plain, n);
}

static int
fill_hit(struct vindex *vx, const struct cand *c, struct vindex_hit *h)
{
	static const char hex[] = "0123456789abcdef";
	sqlite3_stmt *s = stmt(vx, ST_HIT);
	unsigned char sha[32];
	bool have_sha = false;
	int64_t fid;
	size_t n;
	int rc;

	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, c->id);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return rc == SQLITE_DONE ? 0 : db_fail(vx, "read chunk");
	}
	memset(h, 0, sizeof(*h));
	fid = sqlite3_column_int64(s, 10);
	if (vx->vc != NULL) {
		if (!open_col(vx, s, 7, VCRYPT_FILE_SHA, fid, &n))
			goto fail;
		have_sha = n == 32;
		if (have_sha)
			memcpy(sha, vx->plain, 32);
	} else if (sqlite3_column_blob(s, 7) != NULL &&
	           sqlite3_column_bytes(s, 7) == 32) {
		memcpy(sha, sqlite3_column_blob(s, 7), 32);
		have_sha = true;
	}
	if (have_sha) {
		char pre[9];

		for (int i = 0; i < 4; i++) {
			pre[2 * i] = hex[sha[i] >> 4];
			pre[2 * i + 1] = hex[sha[i] & 15];
		}
		pre[8] = '\0';
		snprintf(h->id, sizeof(h->id), "%s:%lld", pre,
		         (long long)sqlite3_column_int64(s, 0));
	}
	h->line_start = (uint32_t)sqlite3_column_int64(s, 1);
	h->line_end = (uint32_t)sqlite3_column_int64(s, 2);
	h->byte_start = (uint64_t)sqlite3_column_int64(s, 3);
	h->byte_end = (uint64_t)sqlite3_column_int64(s, 4);
	h->overlap = (size_t)sqlite3_column_int64(s, 5);
	if ((h->file = hit_str(vx, s, 6, VCRYPT_FILE_PATH, fid)) == NULL ||
	    (h->title = hit_str(vx, s, 8, VCRYPT_CHUNK_TITLE, c->id)) == NULL ||
	    (h->text = hit_str(vx, s, 9, VCRYPT_CHUNK_BODY, c->id)) == NULL)
		goto fail;
	h->score = c->score;
	h->bm25_rank = c->rb;
	h->vector_rank = c->rv;
	h->cosine = c->cos;
	sqlite3_reset(s);
	return 1;
fail:
	sqlite3_reset(s);
	free(h->file);
	free(h->title);
	free(h->text);
	memset(h, 0, sizeof(*h));
	return -1;
}

/*
 * The query's vector, in vx->qv, by the embedder the index was built
 * with: the built-in one computes it here, an endpoint is asked through
 * the embedder given with vindex_set_embedder, which must be that same
 * endpoint and model. 0; -1 when the embedder configured is another
 * (vectors of two embedders cannot be compared); -2 when the endpoint
 * failed.
 */
static int
query_vector(struct vindex *vx, const char *q, size_t n)
{
	char have[EMBED_SPEC_TEXT], want[EMBED_SPEC_TEXT];
	struct embed_spec es;

	if (embed_is_hash(&vx->spec)) {
		if (vx->emb != NULL && !embedder_is_builtin(vx->emb))
			goto mismatch;
		embed_text(&vx->spec, q, n, vx->qv);
		return 0;
	}
	if (vx->emb == NULL || embedder_is_builtin(vx->emb) ||
	    embedder_spec(vx->emb, false, &es, vx->err, sizeof(vx->err)) < 0 ||
	    strcmp(es.name, vx->spec.name) != 0 ||
	    strcmp(es.model, vx->spec.model) != 0 ||
	    (es.dim != 0 && es.dim != vx->spec.dim))
		goto mismatch;
	embedder_expect_dim(vx->emb, vx->spec.dim);
	if (embedder_run(vx->emb, &q, &n, 1, vx->qv, vx->err,
	                 sizeof(vx->err)) < 0)
		return -2;
	return 0;
mismatch:
	embed_spec_format(&vx->spec, have, sizeof(have));
	if (vx->emb == NULL || embedder_is_builtin(vx->emb))
		snprintf(want, sizeof(want), "the built-in embedder");
	else if (embedder_spec(vx->emb, false, &es, want, sizeof(want)) == 0)
		embed_spec_format(&es, want, sizeof(want));
	set_err(vx, "%s was built with embedder %s, but %s is configured for "
	        "it: vectors of two embedders cannot be compared. Configure %s "
	        "for this index ([index] in scrim.conf), or rebuild it",
	        vx->path, have, want, have);
	return -1;
}

int
vindex_search(struct vindex *vx, const char *query, size_t k,
              struct vindex_hit **hits, size_t *n)
{
	size_t qlen = strnlen(query, VINDEX_MAX_QUERY), want, nc = 0, nb = 0,
	       nu, nh = 0;
	char match[VINDEX_MAX_TERMS * 72];
	struct cand *c = NULL;
	struct vindex_hit *out = NULL;
	bool use_bm25, use_vec;
	int ret = -1;

	*hits = NULL;
	*n = 0;
	if (k == 0)
		return 0;
	if (k > VINDEX_MAX_K)
		k = VINDEX_MAX_K;
	want = k * 2 > VINDEX_CANDIDATES ? k * 2 : VINDEX_CANDIDATES;
	if (vx->in_txn) {
		set_err(vx, "%s: search inside a write", vx->path);
		return -1;
	}
	/* One snapshot for the whole query: a concurrent update is seen
	 * entirely or not at all. */
	if (exec(vx, "BEGIN") < 0)
		return -1;
	if (refresh(vx) < 0)
		goto out;
	if (!vx->has_spec) {
		ret = 0; /* nothing indexed yet */
		goto out;
	}
	use_bm25 = vx->mode != VINDEX_VECTOR;
	use_vec = vx->mode != VINDEX_BM25 && vx->vec_ok;
	c = xmalloc(2 * want * sizeof(*c));

	if (use_bm25 && fts_query(vx, query, qlen, match, sizeof(match)) < 0)
		goto out;
	if (use_bm25 && match[0] != '\0') {
		sqlite3_stmt *s = stmt(vx, ST_BM25);
		int rc;

		if (s == NULL)
			goto out;
		sqlite3_bind_text(s, 1, match, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)want);
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			memset(&c[nc], 0, sizeof(c[nc]));
			c[nc].id = sqlite3_column_int64(s, 0);
			c[nc].rb = (unsigned)++nb;
			nc++;
		}
		sqlite3_reset(s);
		if (rc != SQLITE_DONE) {
			db_fail(vx, "full-text query");
			goto out;
		}
	}
	if (use_vec) {
		int qr = query_vector(vx, query, qlen);

		if (qr < 0) {
			ret = qr;
			goto out;
		}
		nc = vector_candidates(vx, vx->qv, want, c, nc);
	}

	/* Merge the two sets: one entry per chunk, keeping its BM25 rank. */
	qsort(c, nc, sizeof(*c), cmp_id);
	nu = 0;
	for (size_t i = 0; i < nc; i++) {
		if (nu > 0 && c[nu - 1].id == c[i].id) {
			if (c[i].rb && (!c[nu - 1].rb || c[i].rb < c[nu - 1].rb))
				c[nu - 1].rb = c[i].rb;
			continue;
		}
		c[nu++] = c[i];
	}
	if (use_vec) {
		unsigned r = 0;

		for (size_t i = 0; i < nu; i++)
			if (exact_cos(vx, vx->qv, &c[i]) < 0)
				goto out;
		qsort(c, nu, sizeof(*c), cmp_cos);
		/* Only chunks that share something with the query rank. */
		for (size_t i = 0; i < nu; i++)
			if (c[i].has_vec && c[i].cos > 0)
				c[i].rv = ++r;
	}
	for (size_t i = 0; i < nu; i++) {
		c[i].score = 0;
		if (c[i].rb)
			c[i].score += 1.0 / (VINDEX_RRF_K + c[i].rb);
		if (c[i].rv)
			c[i].score += 1.0 / (VINDEX_RRF_K + c[i].rv);
	}
	qsort(c, nu, sizeof(*c), cmp_score);

	out = xcalloc(k, sizeof(*out));
	for (size_t i = 0; i < nu && nh < k; i++) {
		int rc;

		if (c[i].score <= 0)
			break;
		rc = fill_hit(vx, &c[i], &out[nh]);
		if (rc < 0)
			goto out;
		nh += (size_t)rc;
	}
	ret = 0;
out:
	/* Ending a read transaction cannot lose anything; an error here
	 * must not hide the one being reported. */
	sqlite3_exec(vx->db, ret == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
	free(c);
	if (ret == 0 && nh > 0) {
		*hits = out;
		*n = nh;
	} else {
		vindex_hits_free(out, nh);
	}
	return ret;
}

void
vindex_hits_free(struct vindex_hit *hits, size_t n)
{
	if (hits == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(hits[i].file);
		free(hits[i].title);
		free(hits[i].text);
	}
	free(hits);
}
