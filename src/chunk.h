/*
 * chunk.h - cuts a document into retrieval chunks along its structure:
 * headings start a section, paragraphs and code blocks are kept whole
 * when they fit, and a section longer than a chunk continues in the next
 * one with a little overlap. This file owns document formats (plain
 * text, Markdown, Org, HTML with tags stripped, source code; a PDF's
 * text once pdf.c has taken it out) and chunk boundaries; it reads no
 * files and knows nothing of the index.
 */
#ifndef SCRIM_CHUNK_H
#define SCRIM_CHUNK_H

#include "scrim.h"

enum chunk_kind {
	CHUNK_TEXT,
	CHUNK_MARKDOWN,
	CHUNK_ORG,
	CHUNK_HTML,
	CHUNK_CODE,
	CHUNK_PDF,              /* given its text (pdf.c), cut as plain text */
	CHUNK_UNSUPPORTED,      /* a known binary format (images, ...) */
};

/* Sizes in bytes of chunk text. */
struct chunk_opts {
	size_t target;          /* a chunk closes once it would pass this */
	size_t max;             /* a paragraph or code block longer than
	                         * this is split; shorter ones stay whole */
	size_t overlap;         /* tail of a chunk repeated at the start of
	                         * the next one in the same section */
};

struct chunk {
	char *title;            /* heading path "Install > Debian"; "" when
	                         * none; owned; valid UTF-8 */
	char *text;             /* owned; valid UTF-8; NUL-terminated */
	size_t len;             /* of text */
	size_t overlap;         /* leading bytes of text repeated from the
	                         * previous chunk (context, not position) */
	/* Where the chunk's own text came from in the file: bytes
	 * [byte_start, byte_end) and lines line_start..line_end (1-based). */
	uint64_t byte_start, byte_end;
	uint32_t line_start, line_end;
};

/* A growable array of chunks; owns every chunk's strings. */
struct chunk_list {
	struct chunk *v;
	size_t n;
	size_t cap;
};

void chunk_opts_default(struct chunk_opts *o);

/* The format for a file name (by extension or well-known name); names
 * it does not know are CHUNK_TEXT, to be checked with chunk_is_binary. */
enum chunk_kind chunk_kind_of(const char *path);
const char *chunk_kind_name(enum chunk_kind k);

/* True when the first bytes look like a binary file (NUL bytes, or many
 * control characters): such files are skipped, not indexed. */
bool chunk_is_binary(const char *s, size_t n);

/*
 * Append the chunks of document s (n bytes) of format kind to out, in
 * order. Invalid UTF-8 is replaced byte by byte with '?', so positions
 * stay true. Allocation failure aborts (alloc.h): callers cap the size of
 * what they pass (the index's max file size).
 */
void chunk_document(enum chunk_kind kind, const char *s, size_t n,
                    const struct chunk_opts *o, struct chunk_list *out);

void chunk_list_free(struct chunk_list *l);

#endif
