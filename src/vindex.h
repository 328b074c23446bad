/*
 * vindex.h - the on-disk document index: one SQLite file per named index
 * (state_dir/index/NAME.db, mode 0600, WAL) holding files, their chunks,
 * an FTS5 table for BM25 and one quantised vector per chunk. Search is
 * hybrid: BM25's ranking and the vectors' ranking are fused by reciprocal
 * rank. This file owns the schema, the embedder check, incremental
 * bookkeeping and retrieval; it does not walk folders or read files
 * (indexcmd.c does) and does not make vectors (embed.c does: chunk
 * vectors come in with vindex_file_put, and a query's come from the
 * embedder given with vindex_set_embedder).
 *
 * An index may be encrypted (vcrypt.h): made with a key, it holds no
 * document text, path or vector in clear, and opens only with that key.
 *
 * Threads: there is no global state. A struct vindex is one SQLite
 * connection and its caches, to be used by one thread at a time; a
 * gateway worker opens its own, read-only. Readers never block the
 * writer (WAL), and a reader sees each update whole.
 */
#ifndef SCRIM_VINDEX_H
#define SCRIM_VINDEX_H

#include "chunk.h"
#include "embed.h"
#include "scrim.h"
#include "vcrypt.h"

struct vindex;

/* One search result; the strings are owned by the hit array. */
struct vindex_hit {
	char id[32];            /* "<file-sha8>:<n>": the file's content
	                         * hash and the chunk's place in it; the same
	                         * text has the same id in every index */
	char *file;             /* absolute path when indexed */
	char *title;            /* heading path, "" when none */
	char *text;             /* the chunk, overlap included */
	size_t overlap;         /* leading bytes of text from the previous
	                         * chunk */
	uint32_t line_start, line_end;  /* 1-based, inclusive */
	uint64_t byte_start, byte_end;  /* [start, end) in the file */
	double score;           /* fused score, higher is better */
	unsigned bm25_rank;     /* 1-based place in each ranking; 0 when */
	unsigned vector_rank;   /* the chunk was not a candidate there */
	double cosine;          /* vector similarity, when computed */
};

/* What a search ranks by. Hybrid is the default; the other two exist to
 * measure what each half contributes (bench, tests). */
enum vindex_mode { VINDEX_HYBRID, VINDEX_BM25, VINDEX_VECTOR };

/* What the index knows about one file, for incremental updates. */
struct vindex_file {
	int64_t size;
	int64_t mtime_ns;
	unsigned char sha256[32];
	int64_t nchunks;
};

struct vindex_stats {
	int64_t files;
	int64_t chunks;
	int64_t file_bytes;     /* sum of indexed files' sizes */
	int64_t text_bytes;     /* sum of chunk text */
	int64_t generation;     /* bumped by every committed change */
	int64_t updated;        /* unix time of the last change; 0 never */
	bool encrypted;         /* made with a key (vcrypt.h) */
	bool has_embedder;      /* false until the first add */
	struct embed_spec embedder;
};

/*
 * Open (readonly) or open-or-create (read-write) the index at path. A
 * new file is created mode 0600 and switched to WAL; with a key (NULL
 * or unset: none) it is created encrypted. An encrypted index opens only
 * with its key, and a plain one only without a key: anything else fails
 * with a message saying which. On failure returns NULL with a message
 * in err. The handle belongs to the calling thread until vindex_close;
 * the key is not kept (keys derived from it are, until then).
 */
struct vindex *vindex_open(const char *path, bool readonly,
                           const struct vcrypt_key *key, char *err,
                           size_t errlen);
void vindex_close(struct vindex *vx);

/* The last error on this handle, for messages. */
const char *vindex_error(const struct vindex *vx);

/*
 * True when the index on disk is not the one this handle last saw: a
 * change committed by another process, or the file replaced by a
 * rebuild. Cheap (one stat and one small read). Searches already pick up
 * changes to the same file; a caller that sees true after a rebuild
 * reopens to let go of the old file.
 */
bool vindex_changed(struct vindex *vx);

/*
 * The k best chunks for query, best first. On success returns 0 with
 * *hits (free with vindex_hits_free) and *n <= k; an empty index or a
 * query with nothing to match gives 0 hits. -1 on a database error, or
 * when the embedder configured is not the one the index was built with;
 * -2 when the embeddings endpoint failed, so that the caller may search
 * again by words alone (VINDEX_BM25). Messages in vindex_error. Never
 * writes.
 */
int vindex_search(struct vindex *vx, const char *query, size_t k,
                  struct vindex_hit **hits, size_t *n) SCRIM_MUSTCHECK;
void vindex_hits_free(struct vindex_hit *hits, size_t n);
void vindex_set_mode(struct vindex *vx, enum vindex_mode mode);
/* The embedder for queries (not owned; NULL, the default: built in). An
 * index built by the built-in embedder computes its query vectors
 * itself, whatever its dimension; one built by an endpoint needs that
 * endpoint and model here, and any other is refused. */
void vindex_set_embedder(struct vindex *vx, struct embedder *e);

int vindex_stats(struct vindex *vx, struct vindex_stats *st) SCRIM_MUSTCHECK;

/* ---- writing (read-write handles; the `scrim index` command) ------------- */

/*
 * Start a write transaction made with embedder spec (its dimension
 * known). A new index records spec; an index built by another embedder
 * (name, model, dimension or version) is refused, with a message naming
 * both. spec may be NULL for a transaction that only removes. Returns 0
 * or -1 (vindex_error).
 */
int vindex_begin(struct vindex *vx, const struct embed_spec *spec)
	SCRIM_MUSTCHECK;
/* Recount how many chunks hold each word (the statistics a search uses
 * to pick query words; see vindex.c). A full pass over the full-text
 * index, about a second per 100k chunks: call it once, before the last
 * commit of an update, not after every file. Nothing to do when the
 * transaction changed nothing. */
int vindex_refresh_terms(struct vindex *vx) SCRIM_MUSTCHECK;
/* Commit, bumping the generation so readers notice. */
int vindex_commit(struct vindex *vx) SCRIM_MUSTCHECK;
void vindex_rollback(struct vindex *vx);

/* 1 and *out when path is indexed, 0 when not, -1 on error. */
int vindex_file_get(struct vindex *vx, const char *path,
                    struct vindex_file *out) SCRIM_MUSTCHECK;
/* The text a chunk's vector is made of (the document's name, the
 * heading path and the text, at most 64 KiB); owned by the caller,
 * NUL-terminated, *len bytes. */
char *vindex_embed_text(const char *path, const struct chunk *c,
                        size_t *len);
/* Replace path's chunks with chunks[0..n), whose vectors are vecs (n
 * times the transaction's dim floats, of vindex_embed_text's texts, by
 * the embedder given to vindex_begin). */
int vindex_file_put(struct vindex *vx, const char *path,
                    const struct vindex_file *f, const char *kind,
                    const struct chunk *chunks, size_t n, const float *vecs)
	SCRIM_MUSTCHECK;
/* Record a new size/mtime for a file whose content did not change. */
int vindex_file_touch(struct vindex *vx, const char *path,
                      const struct vindex_file *f) SCRIM_MUSTCHECK;
/* Remove path and, when it is a folder, every file under it. Counts what
 * went in *files and *chunks (either may be NULL). */
int vindex_remove(struct vindex *vx, const char *path, int64_t *files,
                  int64_t *chunks) SCRIM_MUSTCHECK;
/* Remove the file path only (not what may be under it, were it once a
 * folder): 1 when it was indexed (its chunk count in *chunks, which may
 * be NULL), 0 when not, -1 on error. What an update uses for one file;
 * vindex_remove of an encrypted index reads every path. */
int vindex_remove_file(struct vindex *vx, const char *path, int64_t *chunks)
	SCRIM_MUSTCHECK;
/* Call fn for every indexed file under folder dir (its path). */
int vindex_files_under(struct vindex *vx, const char *dir,
                       void (*fn)(void *arg, const char *path), void *arg)
	SCRIM_MUSTCHECK;

#endif
