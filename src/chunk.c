/*
 * chunk.c - documents to chunks (see chunk.h). Two passes: a per-format
 * segmenter turns the document into segments (a heading, a paragraph, a
 * code block) that remember where in the source they came from; then one
 * packer, shared by every format, fills chunks with whole segments,
 * splits the few that are too long at the best break it can find, and
 * carries a short overlap across size breaks (never across headings: a
 * new section starts clean). HTML is the one format whose segment text is
 * not a copy of the source (tags go, entities are decoded), so its
 * segments live in an arena and report their element's whole range.
 */
#include "chunk.h"

#include "alloc.h"
#include "buf.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHUNK_MAX_LEVEL 6
#define CHUNK_TITLE_MAX 256
/* A section shorter than this does not end its chunk at the next
 * heading: many one-line sections would otherwise make many tiny
 * chunks, each too thin to rank. */
#define CHUNK_MIN_SECTION 200

enum seg_kind { SEG_HEADING, SEG_PROSE, SEG_CODE };

struct seg {
	enum seg_kind kind;
	int level;              /* headings: 1 (top) .. CHUNK_MAX_LEVEL */
	size_t src0, src1;      /* source bytes [src0, src1) */
	bool in_arena;          /* text in the arena (HTML) or the source */
	size_t t0, tlen;        /* the text: offset into its base, length */
};

struct segs {
	struct seg *v;
	size_t n, cap;
	struct buf arena;       /* HTML text; capped by the caller's size */
};

void
chunk_opts_default(struct chunk_opts *o)
{
	/* About 250 tokens: long enough to hold an answer with its context,
	 * short enough that a few fit a prompt's context budget. */
	o->target = 1000;
	o->max = 1600;
	o->overlap = 160;
}

/* ---- formats ------------------------------------------------------------------- */

struct kind_ext {
	const char *ext;
	enum chunk_kind kind;
};

static const struct kind_ext kind_exts[] = {
	{"md", CHUNK_MARKDOWN},   {"markdown", CHUNK_MARKDOWN},
	{"mdown", CHUNK_MARKDOWN}, {"mkd", CHUNK_MARKDOWN},
	{"org", CHUNK_ORG},
	{"html", CHUNK_HTML},     {"htm", CHUNK_HTML},
	{"xhtml", CHUNK_HTML},
	{"txt", CHUNK_TEXT},      {"text", CHUNK_TEXT},
	{"rst", CHUNK_TEXT},      {"adoc", CHUNK_TEXT},
	{"c", CHUNK_CODE},        {"h", CHUNK_CODE},
	{"cc", CHUNK_CODE},       {"cpp", CHUNK_CODE},
	{"hpp", CHUNK_CODE},      {"cxx", CHUNK_CODE},
	{"py", CHUNK_CODE},       {"js", CHUNK_CODE},
	{"mjs", CHUNK_CODE},      {"cjs", CHUNK_CODE},
	{"ts", CHUNK_CODE},       {"tsx", CHUNK_CODE},
	{"jsx", CHUNK_CODE},      {"go", CHUNK_CODE},
	{"rs", CHUNK_CODE},       {"java", CHUNK_CODE},
	{"kt", CHUNK_CODE},       {"scala", CHUNK_CODE},
	{"rb", CHUNK_CODE},       {"php", CHUNK_CODE},
	{"pl", CHUNK_CODE},       {"pm", CHUNK_CODE},
	{"sh", CHUNK_CODE},       {"bash", CHUNK_CODE},
	{"zsh", CHUNK_CODE},      {"lua", CHUNK_CODE},
	{"sql", CHUNK_CODE},      {"cs", CHUNK_CODE},
	{"swift", CHUNK_CODE},    {"m", CHUNK_CODE},
	{"el", CHUNK_CODE},       {"lisp", CHUNK_CODE},
	{"scm", CHUNK_CODE},      {"clj", CHUNK_CODE},
	{"hs", CHUNK_CODE},       {"ml", CHUNK_CODE},
	{"ex", CHUNK_CODE},       {"exs", CHUNK_CODE},
	{"erl", CHUNK_CODE},      {"css", CHUNK_CODE},
	{"scss", CHUNK_CODE},     {"toml", CHUNK_CODE},
	{"yaml", CHUNK_CODE},     {"yml", CHUNK_CODE},
	{"json", CHUNK_CODE},     {"ini", CHUNK_CODE},
	{"conf", CHUNK_CODE},     {"cfg", CHUNK_CODE},
	{"cmake", CHUNK_CODE},    {"mk", CHUNK_CODE},
	{"xml", CHUNK_CODE},      {"mjml", CHUNK_CODE},
	{"pdf", CHUNK_PDF},       {"png", CHUNK_UNSUPPORTED},
	{"jpg", CHUNK_UNSUPPORTED}, {"jpeg", CHUNK_UNSUPPORTED},
	{"gif", CHUNK_UNSUPPORTED}, {"webp", CHUNK_UNSUPPORTED},
	{"gz", CHUNK_UNSUPPORTED},  {"xz", CHUNK_UNSUPPORTED},
	{"zip", CHUNK_UNSUPPORTED}, {"zst", CHUNK_UNSUPPORTED},
	{"bz2", CHUNK_UNSUPPORTED}, {"tar", CHUNK_UNSUPPORTED},
	{"docx", CHUNK_UNSUPPORTED}, {"odt", CHUNK_UNSUPPORTED},
	{"db", CHUNK_UNSUPPORTED},  {"sqlite", CHUNK_UNSUPPORTED},
	{"so", CHUNK_UNSUPPORTED},  {"o", CHUNK_UNSUPPORTED},
	{"a", CHUNK_UNSUPPORTED},
};

enum chunk_kind
chunk_kind_of(const char *path)
{
	const char *base = strrchr(path, '/');
	const char *dot;

	base = base ? base + 1 : path;
	if (strcmp(base, "Makefile") == 0 || strcmp(base, "makefile") == 0 ||
	    strcmp(base, "CMakeLists.txt") == 0 ||
	    strcmp(base, "Dockerfile") == 0)
		return CHUNK_CODE;
	dot = strrchr(base, '.');
	if (dot == NULL || dot == base)
		return CHUNK_TEXT;
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(kind_exts); i++)
		if (strcasecmp(dot + 1, kind_exts[i].ext) == 0)
			return kind_exts[i].kind;
	return CHUNK_TEXT;
}

const char *
chunk_kind_name(enum chunk_kind k)
{
	switch (k) {
	case CHUNK_TEXT:
		return "text";
	case CHUNK_MARKDOWN:
		return "markdown";
	case CHUNK_ORG:
		return "org";
	case CHUNK_HTML:
		return "html";
	case CHUNK_CODE:
		return "code";
	case CHUNK_PDF:
		return "pdf";
	case CHUNK_UNSUPPORTED:
		break;
	}
	return "unsupported";
}

bool
chunk_is_binary(const char *s, size_t n)
{
	size_t ctl = 0;

	/* The head is enough: text files do not turn binary halfway. */
	if (n > 8192)
		n = 8192;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == 0)
			return true;
		if (c < 0x20 && c != '\n' && c != '\r' && c != '\t' &&
		    c != '\f' && c != '\v' && c != 0x1b)
			ctl++;
	}
	return ctl * 20 > n; /* over 5% control bytes */
}

/* ---- segments ---------------------------------------------------------------- */

static void
seg_push(struct segs *ss, enum seg_kind kind, int level, size_t src0,
         size_t src1, bool in_arena, size_t t0, size_t tlen)
{
	struct seg *g;

	if (ss->n == ss->cap) {
		ss->cap = ss->cap ? ss->cap * 2 : 64;
		ss->v = xrealloc(ss->v, ss->cap * sizeof(*ss->v));
	}
	g = &ss->v[ss->n++];
	g->kind = kind;
	g->level = level;
	g->src0 = src0;
	g->src1 = src1;
	g->in_arena = in_arena;
	g->t0 = t0;
	g->tlen = tlen;
}

/* A source slice as a segment; empty slices are dropped. */
static void
seg_src(struct segs *ss, enum seg_kind kind, int level, size_t a, size_t b)
{
	if (b > a)
		seg_push(ss, kind, level, a, b, false, a, b - a);
}

static bool
is_blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f')
			return false;
	return true;
}

/* A line [a, b) of s, b at its '\n' or the end. */
static size_t
line_end(const char *s, size_t n, size_t a)
{
	const char *nl = memchr(s + a, '\n', n - a);
	return nl ? (size_t)(nl - s) : n;
}

/* Leading spaces (at most max) of the line at a. */
static size_t
indent(const char *s, size_t b, size_t a, size_t max)
{
	size_t i = 0;
	while (a + i < b && i < max && s[a + i] == ' ')
		i++;
	return i;
}

/* Plain text and source code: blocks between blank lines. */
static void
seg_blocks(const char *s, size_t n, enum seg_kind kind, struct segs *ss)
{
	size_t a = 0, para = SIZE_MAX;

	while (a < n) {
		size_t b = line_end(s, n, a);

		if (is_blank(s + a, b - a)) {
			if (para != SIZE_MAX)
				seg_src(ss, kind, 0, para, a);
			para = SIZE_MAX;
		} else if (para == SIZE_MAX) {
			para = a;
		}
		a = b + 1;
	}
	if (para != SIZE_MAX)
		seg_src(ss, kind, 0, para, n);
}

/* An ATX heading ("## Title ##"): its level and text, or 0. */
static int
md_atx(const char *s, size_t a, size_t b, size_t *t0, size_t *t1)
{
	size_t i = a + indent(s, b, a, 3), lvl = 0;

	while (i < b && s[i] == '#' && lvl <= CHUNK_MAX_LEVEL) {
		i++;
		lvl++;
	}
	if (lvl == 0 || lvl > CHUNK_MAX_LEVEL ||
	    (i < b && s[i] != ' ' && s[i] != '\t'))
		return 0;
	while (i < b && (s[i] == ' ' || s[i] == '\t'))
		i++;
	while (b > i && (s[b - 1] == ' ' || s[b - 1] == '\t' ||
	                 s[b - 1] == '\r' || s[b - 1] == '#'))
		b--;
	*t0 = i;
	*t1 = b;
	return (int)lvl;
}

/* A code fence: ``` or ~~~ (three or more). Returns its length. */
static size_t
md_fence(const char *s, size_t a, size_t b, char *ch)
{
	size_t i = a + indent(s, b, a, 3), k = 0;

	if (i >= b || (s[i] != '`' && s[i] != '~'))
		return 0;
	while (i + k < b && s[i + k] == s[i])
		k++;
	if (k < 3)
		return 0;
	*ch = s[i];
	return k;
}

/* A setext underline: a line of '=' (level 1) or '-' (level 2). */
static int
md_setext(const char *s, size_t a, size_t b)
{
	size_t i = a + indent(s, b, a, 3), k = 0;
	char c;

	if (i >= b || (s[i] != '=' && s[i] != '-'))
		return 0;
	c = s[i];
	while (i < b && s[i] == c) {
		i++;
		k++;
	}
	if (!is_blank(s + i, b - i) || (c == '-' && k < 3))
		return 0;
	return c == '=' ? 1 : 2;
}

static void
seg_markdown(const char *s, size_t n, struct segs *ss)
{
	size_t a = 0, para = SIZE_MAX, para_lines = 0, fence_at = 0,
	       fence_len = 0;
	char fence_ch = 0;

	while (a < n) {
		size_t b = line_end(s, n, a), t0, t1, k;
		char ch;
		int lvl;

		if (fence_len > 0) {
			k = md_fence(s, a, b, &ch);
			if (k >= fence_len && ch == fence_ch &&
			    is_blank(s + a + indent(s, b, a, 3) + k,
			             b - a - indent(s, b, a, 3) - k)) {
				seg_src(ss, SEG_CODE, 0, fence_at, b);
				fence_len = 0;
			}
		} else if (is_blank(s + a, b - a)) {
			if (para != SIZE_MAX)
				seg_src(ss, SEG_PROSE, 0, para, a);
			para = SIZE_MAX;
		} else if ((k = md_fence(s, a, b, &ch)) > 0) {
			if (para != SIZE_MAX)
				seg_src(ss, SEG_PROSE, 0, para, a);
			para = SIZE_MAX;
			fence_at = a;
			fence_len = k;
			fence_ch = ch;
		} else if ((lvl = md_atx(s, a, b, &t0, &t1)) > 0) {
			if (para != SIZE_MAX)
				seg_src(ss, SEG_PROSE, 0, para, a);
			para = SIZE_MAX;
			seg_push(ss, SEG_HEADING, lvl, a, b, false, t0, t1 - t0);
		} else if (para != SIZE_MAX && para_lines == 1 &&
		           (lvl = md_setext(s, a, b)) > 0) {
			size_t pb = line_end(s, n, para);

			while (pb > para && (s[pb - 1] == ' ' || s[pb - 1] == '\r'))
				pb--;
			seg_push(ss, SEG_HEADING, lvl, para, b, false, para,
			         pb - para);
			para = SIZE_MAX;
		} else {
			if (para == SIZE_MAX) {
				para = a;
				para_lines = 0;
			}
			para_lines++;
		}
		a = b + 1;
	}
	if (fence_len > 0)
		seg_src(ss, SEG_CODE, 0, fence_at, n);
	else if (para != SIZE_MAX)
		seg_src(ss, SEG_PROSE, 0, para, n);
}

static bool
has_prefix_ci(const char *s, size_t n, const char *p)
{
	size_t k = strlen(p);
	return n >= k && strncasecmp(s, p, k) == 0;
}

static void
seg_org(const char *s, size_t n, struct segs *ss)
{
	size_t a = 0, para = SIZE_MAX, block_at = SIZE_MAX;

	while (a < n) {
		size_t b = line_end(s, n, a);
		size_t i = a;

		while (i < b && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (block_at != SIZE_MAX) {
			if (has_prefix_ci(s + i, b - i, "#+end_")) {
				seg_src(ss, SEG_CODE, 0, block_at, b);
				block_at = SIZE_MAX;
			}
		} else if (is_blank(s + a, b - a)) {
			if (para != SIZE_MAX)
				seg_src(ss, SEG_PROSE, 0, para, a);
			para = SIZE_MAX;
		} else if (has_prefix_ci(s + i, b - i, "#+begin_")) {
			if (para != SIZE_MAX)
				seg_src(ss, SEG_PROSE, 0, para, a);
			para = SIZE_MAX;
			block_at = a;
		} else if (s[a] == '*') {
			size_t lvl = 0, t0, t1 = b;

			while (a + lvl < b && s[a + lvl] == '*')
				lvl++;
			if (a + lvl < b && s[a + lvl] == ' ') {
				if (para != SIZE_MAX)
					seg_src(ss, SEG_PROSE, 0, para, a);
				para = SIZE_MAX;
				t0 = a + lvl;
				while (t0 < b && s[t0] == ' ')
					t0++;
				while (t1 > t0 && (s[t1 - 1] == ' ' ||
				                   s[t1 - 1] == '\r'))
					t1--;
				seg_push(ss, SEG_HEADING,
				         lvl > CHUNK_MAX_LEVEL ? CHUNK_MAX_LEVEL
				                               : (int)lvl,
				         a, b, false, t0, t1 - t0);
			} else if (para == SIZE_MAX) {
				para = a; /* "*bold* text" */
			}
		} else if (para == SIZE_MAX) {
			para = a;
		}
		a = b + 1;
	}
	if (block_at != SIZE_MAX)
		seg_src(ss, SEG_CODE, 0, block_at, n);
	else if (para != SIZE_MAX)
		seg_src(ss, SEG_PROSE, 0, para, n);
}

/* ---- HTML ---------------------------------------------------------------------- */

/* Elements whose content is not text for a reader. */
static const char *const html_skip[] = {
	"script", "style", "noscript", "template", "svg", "head", "iframe",
	"object", "math",
};

/* Elements that end a paragraph (open or close). */
static const char *const html_block[] = {
	"address", "article", "aside",  "blockquote", "body",   "br",
	"dd",      "details", "dialog", "div",        "dl",     "dt",
	"fieldset", "figcaption", "figure", "footer", "form",   "header",
	"hr",      "html",    "li",     "main",       "nav",    "ol",
	"p",       "section", "summary", "table",     "tbody",  "thead",
	"tfoot",   "tr",      "ul",     "caption",    "title",
};

static bool
in_list(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(name, list[i]) == 0)
			return true;
	return false;
}

struct html {
	const char *s;
	size_t n;
	struct segs *ss;
	enum seg_kind mode;     /* what the open text becomes */
	int level;              /* of an open heading */
	size_t t0;              /* open text's start in the arena */
	size_t src0, src1;      /* its source range; src0 SIZE_MAX: none */
	bool space;             /* a space is pending before the next word */
};

static void
html_flush(struct html *h)
{
	struct buf *a = &h->ss->arena;
	size_t tlen;

	if (h->src0 != SIZE_MAX) {
		/* Trailing whitespace collapsed into one pending space. */
		tlen = a->len - h->t0;
		while (tlen > 0 && (a->p[h->t0 + tlen - 1] == ' ' ||
		                    a->p[h->t0 + tlen - 1] == '\n'))
			tlen--;
		if (tlen > 0)
			seg_push(h->ss, h->mode, h->level, h->src0, h->src1,
			         true, h->t0, tlen);
	}
	h->t0 = a->len;
	h->src0 = SIZE_MAX;
	h->space = false;
}

static void
html_put(struct html *h, const char *p, size_t k, size_t src0, size_t src1)
{
	/* The arena is capped at four times the document (entities grow by
	 * at most that); a failure here is a bug, and loses text only. */
	if (h->src0 == SIZE_MAX) {
		h->src0 = src0;
		h->space = false;
	} else if (h->space) {
		if (!buf_addc(&h->ss->arena, ' '))
			return;
	}
	h->space = false;
	if (!buf_add(&h->ss->arena, p, k))
		return;
	h->src1 = src1;
}

/* Encode code point cp as UTF-8 into out (4 bytes); its length, 0 if
 * not a scalar value worth keeping. */
static size_t
utf8_put(unsigned long cp, char *out)
{
	if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* An entity at s[i] ('&'): its decoded bytes in out and the source bytes
 * it took, or 0 when it is not one (then '&' is literal). */
static size_t
html_entity(const char *s, size_t n, size_t i, char *out, size_t *outlen)
{
	static const struct {
		const char *name;
		const char *text;
	} named[] = {
		{"amp", "&"},  {"lt", "<"},       {"gt", ">"},      {"quot", "\""},
		{"apos", "'"}, {"nbsp", " "},     {"mdash", "\xe2\x80\x94"},
		{"ndash", "\xe2\x80\x93"},        {"hellip", "\xe2\x80\xa6"},
		{"copy", "\xc2\xa9"},             {"rsquo", "\xe2\x80\x99"},
		{"lsquo", "\xe2\x80\x98"},        {"rdquo", "\xe2\x80\x9d"},
		{"ldquo", "\xe2\x80\x9c"},
	};
	size_t j = i + 1, end;

	end = j;
	while (end < n && end - j < 10 && s[end] != ';' && s[end] != '&' &&
	       s[end] != '<' && s[end] != ' ')
		end++;
	if (end >= n || s[end] != ';' || end == j)
		return 0;
	if (s[j] == '#') {
		unsigned long cp = 0;
		size_t d = j + 1;
		bool hex = d < end && (s[d] == 'x' || s[d] == 'X');

		if (hex)
			d++;
		if (d == end)
			return 0;
		for (; d < end; d++) {
			char c = s[d];
			int v;

			if (c >= '0' && c <= '9')
				v = c - '0';
			else if (hex && c >= 'a' && c <= 'f')
				v = c - 'a' + 10;
			else if (hex && c >= 'A' && c <= 'F')
				v = c - 'A' + 10;
			else
				return 0;
			cp = cp * (hex ? 16 : 10) + (unsigned long)v;
			if (cp > 0x10ffff)
				return 0;
		}
		*outlen = utf8_put(cp, out);
		return end + 1 - i;
	}
	for (size_t k = 0; k < SCRIM_ARRAY_LEN(named); k++) {
		size_t nl = strlen(named[k].name);

		if (nl == end - j && memcmp(s + j, named[k].name, nl) == 0) {
			*outlen = strlen(named[k].text);
			memcpy(out, named[k].text, *outlen);
			return end + 1 - i;
		}
	}
	return 0;
}

/* The end of the tag that starts at s[i] ('<'): just past its '>',
 * stepping over quoted attribute values. */
static size_t
html_tag_end(const char *s, size_t n, size_t i)
{
	char q = 0;

	for (i++; i < n; i++) {
		if (q) {
			if (s[i] == q)
				q = 0;
		} else if (s[i] == '"' || s[i] == '\'') {
			q = s[i];
		} else if (s[i] == '>') {
			return i + 1;
		}
	}
	return n;
}

/* Skip to just past "</name>" (case-insensitive), or to the end. */
static size_t
html_skip_to_close(const char *s, size_t n, size_t i, const char *name)
{
	size_t k = strlen(name);

	for (; i + 2 + k <= n; i++)
		if (s[i] == '<' && s[i + 1] == '/' &&
		    strncasecmp(s + i + 2, name, k) == 0 &&
		    (i + 2 + k == n || s[i + 2 + k] == '>' ||
		     s[i + 2 + k] == ' '))
			return html_tag_end(s, n, i);
	return n;
}

static void
seg_html(const char *s, size_t n, struct segs *ss)
{
	struct html h = {.s = s, .n = n, .ss = ss, .mode = SEG_PROSE,
	                 .src0 = SIZE_MAX};
	size_t i = 0;

	h.t0 = ss->arena.len;
	while (i < n) {
		char c = s[i];

		if (c == '<') {
			char name[16];
			size_t j = i + 1, k = 0, end;
			bool closing = false;

			if (i + 4 <= n && memcmp(s + i, "<!--", 4) == 0) {
				const char *e = memmem(s + i + 4, n - i - 4, "-->", 3);
				i = e ? (size_t)(e - s) + 3 : n;
				h.space = true;
				continue;
			}
			end = html_tag_end(s, n, i);
			if (j < n && s[j] == '/') {
				closing = true;
				j++;
			}
			while (j < n && k + 1 < sizeof(name) &&
			       ((s[j] >= 'a' && s[j] <= 'z') ||
			        (s[j] >= 'A' && s[j] <= 'Z') ||
			        (s[j] >= '0' && s[j] <= '9')))
				name[k++] = s[j++];
			name[k] = '\0';
			if (k == 0) {
				/* "<!DOCTYPE", "<?xml", or a lone '<'. */
				if (j < n && (s[j] == '!' || s[j] == '?')) {
					i = end;
					continue;
				}
				html_put(&h, "<", 1, i, i + 1);
				i++;
				continue;
			}
			i = end;
			if (!closing && in_list(name, html_skip,
			                        SCRIM_ARRAY_LEN(html_skip))) {
				i = html_skip_to_close(s, n, i, name);
				h.space = true;
			} else if ((name[0] == 'h' || name[0] == 'H') &&
			           name[1] >= '1' && name[1] <= '6' &&
			           name[2] == '\0') {
				html_flush(&h);
				h.mode = closing ? SEG_PROSE : SEG_HEADING;
				h.level = closing ? 0 : name[1] - '0';
			} else if (strcasecmp(name, "pre") == 0) {
				html_flush(&h);
				h.mode = closing ? SEG_PROSE : SEG_CODE;
			} else if (in_list(name, html_block,
			                   SCRIM_ARRAY_LEN(html_block))) {
				if (h.mode == SEG_CODE && strcasecmp(name, "br") == 0)
					html_put(&h, "\n", 1, i, i);
				else if (h.mode != SEG_HEADING)
					html_flush(&h);
			} else {
				/* Inline elements (a, em, td, span...) may
				 * separate words. */
				if (strcasecmp(name, "td") == 0 ||
				    strcasecmp(name, "th") == 0)
					h.space = true;
			}
			continue;
		}
		if (c == '&') {
			char out[8];
			size_t olen = 0, took = html_entity(s, n, i, out, &olen);

			if (took > 0) {
				if (olen == 1 && out[0] == ' ' && h.mode != SEG_CODE)
					h.space = h.src0 != SIZE_MAX;
				else if (olen > 0)
					html_put(&h, out, olen, i, i + took);
				i += took;
				continue;
			}
		}
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
			if (h.mode == SEG_CODE && h.src0 != SIZE_MAX)
				html_put(&h, c == '\r' ? "" : &s[i], c == '\r' ? 0 : 1,
				         i, i + 1);
			else
				h.space = h.src0 != SIZE_MAX;
			i++;
			continue;
		}
		{
			/* A run of ordinary text. */
			size_t j = i;

			while (j < n && s[j] != '<' && s[j] != '&' && s[j] != ' ' &&
			       s[j] != '\t' && s[j] != '\n' && s[j] != '\r' &&
			       s[j] != '\f')
				j++;
			if (j == i)
				j++; /* '&' that was no entity */
			html_put(&h, s + i, j - i, i, j);
			i = j;
		}
	}
	html_flush(&h);
}

/* ---- packing --------------------------------------------------------------------- */

struct packer {
	const char *src;
	size_t n;
	const char *arena;
	const struct chunk_opts *o;
	struct chunk_list *out;
	size_t *lines;          /* offset of each line's first byte */
	size_t nlines;
	char titles[CHUNK_MAX_LEVEL + 1][CHUNK_TITLE_MAX];
	struct buf title;       /* the path of the current section */
	struct buf body;        /* the open chunk's text */
	size_t overlap;         /* leading bytes of body from the last one */
	size_t src0, src1;      /* the open chunk's own source range */
	bool open;              /* body holds text of its own */
};

static uint32_t
line_of(const struct packer *p, size_t off)
{
	size_t lo = 0, hi = p->nlines;

	/* The last line start <= off. */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (p->lines[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	return (uint32_t)(lo + 1);
}

/* Replace invalid UTF-8 and control bytes (but newline and tab) in place,
 * one byte for one, so lengths and offsets stay valid and JSON output
 * never meets a byte it cannot encode. */
static void
clean_utf8(char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
				s[i] = ' ';
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			k = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 4;
			cp = c & 0x07;
		} else {
			s[i++] = '?';
			continue;
		}
		if (i + k > n) {
			s[i++] = '?';
			continue;
		}
		for (size_t j = 1; j < k; j++) {
			unsigned char d = (unsigned char)s[i + j];
			if ((d & 0xc0) != 0x80) {
				k = 0;
				break;
			}
			cp = (cp << 6) | (d & 0x3f);
		}
		if (k == 0 || (k == 3 && (cp < 0x800 ||
		                          (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (k == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
			s[i++] = '?';
			continue;
		}
		i += k;
	}
}

static void
set_title(struct packer *p)
{
	buf_reset(&p->title);
	for (int l = 1; l <= CHUNK_MAX_LEVEL; l++) {
		if (p->titles[l][0] == '\0')
			continue;
		if (p->title.len > 0 && !buf_add(&p->title, " > ", 3))
			break;
		if (!buf_add(&p->title, p->titles[l], strlen(p->titles[l])))
			break;
	}
}

/* Close the open chunk. With keep_tail, the next one starts with the
 * last few words of this one. */
static void
emit(struct packer *p, bool keep_tail)
{
	struct chunk *c;
	size_t tail = 0;

	if (!p->open)
		return;
	if (p->out->n == p->out->cap) {
		p->out->cap = p->out->cap ? p->out->cap * 2 : 16;
		p->out->v = xrealloc(p->out->v, p->out->cap * sizeof(*p->out->v));
	}
	c = &p->out->v[p->out->n++];
	c->title = xstrndup(p->title.p ? p->title.p : "", p->title.len);
	c->text = xstrndup(p->body.p, p->body.len);
	c->len = p->body.len;
	clean_utf8(c->title, strlen(c->title));
	clean_utf8(c->text, c->len);
	c->overlap = p->overlap;
	c->byte_start = p->src0;
	c->byte_end = p->src1;
	c->line_start = line_of(p, p->src0);
	c->line_end = line_of(p, p->src1 > p->src0 ? p->src1 - 1 : p->src0);

	if (keep_tail && p->o->overlap > 0 && p->body.len > p->o->overlap * 2) {
		/* Start the tail at a word, and never inside a UTF-8
		 * sequence. */
		size_t at = p->body.len - p->o->overlap;

		while (at < p->body.len && p->body.p[at] != ' ' &&
		       p->body.p[at] != '\n')
			at++;
		while (at < p->body.len &&
		       (p->body.p[at] == ' ' || p->body.p[at] == '\n'))
			at++;
		tail = p->body.len - at;
		memmove(p->body.p, p->body.p + at, tail);
	}
	p->body.len = tail;
	if (p->body.p)
		p->body.p[tail] = '\0';
	p->overlap = tail;
	p->open = false;
	/* Headings taken inline by a short section belong to the chunks
	 * after this one. */
	set_title(p);
}

/* Add one piece of a segment: text t (k bytes) from source [a, b). */
static void
add_piece(struct packer *p, const char *t, size_t k, size_t a, size_t b,
          bool same_seg)
{
	if (p->open && p->body.len + 2 + k > p->o->target)
		emit(p, true);
	if (p->body.len > 0 && !buf_add(&p->body, same_seg ? "\n" : "\n\n",
	                                same_seg ? 1 : 2))
		return;
	/* The body's cap is the chunk maximum plus the overlap: pieces are
	 * never longer than max, so this cannot fail. */
	if (!buf_add(&p->body, t, k))
		return;
	if (!p->open) {
		p->src0 = a;
		p->open = true;
	}
	p->src1 = b;
}

/* Where to cut text t (k bytes) so the first part is at most lim: the
 * last paragraph break, line break, sentence end or space after lim / 2,
 * in that order of preference; else lim, backed off to a UTF-8 lead
 * byte. */
static size_t
find_cut(const char *t, size_t k, size_t lim, bool code)
{
	static const char *const prose[] = {"\n\n", "\n", ". ", "? ", "! ",
	                                    "; ", ", ", " "};
	static const char *const lines[] = {"\n\n", "\n", " "};
	const char *const *pref = code ? lines : prose;
	size_t npref = code ? SCRIM_ARRAY_LEN(lines) : SCRIM_ARRAY_LEN(prose);
	size_t lo = lim / 2;

	if (k <= lim)
		return k;
	for (size_t q = 0; q < npref; q++) {
		size_t pl = strlen(pref[q]);

		for (size_t at = lim; at > lo; at--)
			if (at >= pl && memcmp(t + at - pl, pref[q], pl) == 0)
				return at;
	}
	while (lim > 1 && ((unsigned char)t[lim] & 0xc0) == 0x80)
		lim--;
	return lim;
}

static void
pack_seg(struct packer *p, const struct seg *g)
{
	const char *t = (g->in_arena ? p->arena : p->src) + g->t0;
	size_t k = g->tlen, off = 0;
	bool first = true;

	if (g->kind == SEG_HEADING) {
		char *slot = p->titles[g->level];
		size_t tl = k < CHUNK_TITLE_MAX - 1 ? k : CHUNK_TITLE_MAX - 1;

		/* A long enough section ends at the next heading; a short one
		 * takes the heading inline, so one-line sections share a
		 * chunk. */
		if (p->open && p->body.len - p->overlap >= CHUNK_MIN_SECTION)
			emit(p, false);
		if (!p->open) {
			p->body.len = 0;
			p->overlap = 0;
		}
		/* A title cut inside a UTF-8 sequence is mended by
		 * clean_utf8 when the chunk is emitted. */
		memcpy(slot, t, tl);
		slot[tl] = '\0';
		for (int l = g->level + 1; l <= CHUNK_MAX_LEVEL; l++)
			p->titles[l][0] = '\0';
		if (p->open)
			add_piece(p, t, k, g->src0, g->src1, false);
		else
			set_title(p);
		return;
	}
	if (k <= p->o->max) {
		add_piece(p, t, k, g->src0, g->src1, false);
		return;
	}
	while (off < k) {
		size_t cut = find_cut(t + off, k - off, p->o->target,
		                      g->kind == SEG_CODE);
		size_t a = g->src0, b = g->src1;

		if (!g->in_arena) {
			/* Source text: the piece's own range is exact. */
			a = g->src0 + off;
			b = g->src0 + off + cut;
		}
		add_piece(p, t + off, cut, a, b, !first);
		first = false;
		off += cut;
		while (off < k && (t[off] == ' ' || t[off] == '\n'))
			off++;
	}
}

void
chunk_document(enum chunk_kind kind, const char *s, size_t n,
               const struct chunk_opts *o, struct chunk_list *out)
{
	struct segs ss = {0};
	struct packer *p;
	size_t nl = 1;

	if (kind == CHUNK_UNSUPPORTED || n == 0)
		return;
	buf_init(&ss.arena, n * 4 + 64);
	switch (kind) {
	case CHUNK_MARKDOWN:
		seg_markdown(s, n, &ss);
		break;
	case CHUNK_ORG:
		seg_org(s, n, &ss);
		break;
	case CHUNK_HTML:
		seg_html(s, n, &ss);
		break;
	case CHUNK_CODE:
		seg_blocks(s, n, SEG_CODE, &ss);
		break;
	case CHUNK_TEXT:
	case CHUNK_PDF:
	case CHUNK_UNSUPPORTED:
		seg_blocks(s, n, SEG_PROSE, &ss);
		break;
	}

	p = xcalloc(1, sizeof(*p));
	p->src = s;
	p->n = n;
	p->arena = ss.arena.p;
	p->o = o;
	p->out = out;
	for (size_t i = 0; i < n; i++)
		nl += s[i] == '\n';
	p->lines = xmalloc(nl * sizeof(*p->lines));
	p->lines[0] = 0;
	p->nlines = 1;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\n')
			p->lines[p->nlines++] = i + 1;
	buf_init(&p->title, CHUNK_TITLE_MAX * (CHUNK_MAX_LEVEL + 1));
	buf_init(&p->body, o->max + o->target + o->overlap + 8);

	for (size_t i = 0; i < ss.n; i++)
		pack_seg(p, &ss.v[i]);
	emit(p, false);

	buf_free(&p->title);
	buf_free(&p->body);
	free(p->lines);
	free(p);
	free(ss.v);
	buf_free(&ss.arena);
}

void
chunk_list_free(struct chunk_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].title);
		free(l->v[i].text);
	}
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}
