/*
 * pdf.c - see pdf.h. The parent forks; the child opens the document
 * with poppler and writes frames to a pipe:
 *
 *   page:   u64 length, then that many bytes of the page's text
 *   end:    u64 FRAME_END
 *   error:  u64 FRAME_ERROR, u64 enum pdf_result, u64 length, message
 *
 * and _exits. The parent reads with a deadline and a cap, and believes
 * nothing the child says past them: a child that is killed, crashes,
 * stops early or talks too much fails that one document. Pages are
 * joined here, so the child never holds more than one page's text.
 *
 * poppler-glib is loaded with dlopen(3), not linked: it brings GLib,
 * GObject and cairo, which cost every `scrim serve` about 8 MB of
 * resident memory at start for a feature only `scrim index add` uses.
 */
#include "pdf.h"

#include "alloc.h"
#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef SCRIM_HAVE_PDF
#include <dlfcn.h>
#include <poppler.h>
#endif

#define FRAME_END UINT64_MAX
#define FRAME_ERROR (UINT64_MAX - 1)
/* One document's parse, wall clock and CPU. */
#define PDF_DEADLINE_MS 60000
#define PDF_CPU_SECONDS 60

void
pdf_text_free(struct pdf_text *t)
{
	free(t->text);
	free(t->page_start);
	memset(t, 0, sizeof(*t));
}

#ifndef SCRIM_HAVE_PDF

bool
pdf_supported(void)
{
	return false;
}

const char *
pdf_reader_version(void)
{
	return NULL;
}

enum pdf_result
pdf_extract(const char *data, size_t n, size_t max_text, struct pdf_text *out,
            char *err, size_t errlen)
{
	(void)data;
	(void)n;
	(void)max_text;
	memset(out, 0, sizeof(*out));
	snprintf(err, errlen, "PDF support was not built (it needs "
	         "libpoppler-glib-dev when scrim is compiled)");
	return PDF_UNSUPPORTED;
}

#else

/* The soname the headers we build against belong to (Debian 12: 8). */
#define PDF_LIBRARY "libpoppler-glib.so.8"

static struct {
	__typeof__(poppler_get_version) *get_version;
	__typeof__(poppler_error_quark) *error_quark;
	__typeof__(poppler_document_new_from_bytes) *doc_new;
	__typeof__(poppler_document_get_n_pages) *n_pages;
	__typeof__(poppler_document_get_page) *get_page;
	__typeof__(poppler_page_get_text) *page_text;
	__typeof__(g_bytes_new_static) *bytes_new_static;
	__typeof__(g_free) *g_free;
	__typeof__(g_object_unref) *object_unref;
} P;
static int loaded; /* 0: not tried, 1: ready, -1: unavailable */
static char load_error[256];

/* POSIX's way to store a dlsym result in a function pointer. */
#define PDF_SYM(field, name) \
	(*(void **)(&P.field) = dlsym(h, name)) != NULL

static bool
pdf_load(void)
{
	void *h;

	if (loaded != 0)
		return loaded > 0;
	loaded = -1;
	h = dlopen(PDF_LIBRARY, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		snprintf(load_error, sizeof(load_error), "%s", dlerror());
		return false;
	}
	if (!(PDF_SYM(get_version, "poppler_get_version") &&
	      PDF_SYM(error_quark, "poppler_error_quark") &&
	      PDF_SYM(doc_new, "poppler_document_new_from_bytes") &&
	      PDF_SYM(n_pages, "poppler_document_get_n_pages") &&
	      PDF_SYM(get_page, "poppler_document_get_page") &&
	      PDF_SYM(page_text, "poppler_page_get_text") &&
	      PDF_SYM(bytes_new_static, "g_bytes_new_static") &&
	      PDF_SYM(g_free, "g_free") &&
	      PDF_SYM(object_unref, "g_object_unref"))) {
		snprintf(load_error, sizeof(load_error), "%s: %s", PDF_LIBRARY,
		         dlerror());
		dlclose(h);
		return false;
	}
	loaded = 1; /* h stays open for the life of the process */
	return true;
}

bool
pdf_supported(void)
{
	return pdf_load();
}

const char *
pdf_reader_version(void)
{
	static char v[300];

	if (v[0] == '\0') {
		if (pdf_load())
			snprintf(v, sizeof(v), "poppler-glib %s (loaded when "
			         "needed)", P.get_version());
		else
			snprintf(v, sizeof(v), "PDF: poppler-glib not found "
			         "(%s)", load_error);
	}
	return v;
}

/* write(2) all of it; false when the parent has gone. */
static bool
put(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		c += w;
		n -= (size_t)w;
	}
	return true;
}

static void
put_error(int fd, enum pdf_result r, const char *msg)
{
	uint64_t h[3] = {FRAME_ERROR, (uint64_t)r, strlen(msg)};

	if (put(fd, h, sizeof(h)))
		(void)put(fd, msg, strlen(msg));
}

/* The child: parse, write frames, never return. */
SCRIM_NORETURN static void
child(int fd, const char *data, size_t n)
{
	struct rlimit rl = {PDF_CPU_SECONDS, PDF_CPU_SECONDS};
	GError *ge = NULL;
	GBytes *b;
	PopplerDocument *doc;
	int np;

	(void)setrlimit(RLIMIT_CPU, &rl);
	b = P.bytes_new_static(data, n);
	doc = P.doc_new(b, NULL, &ge);
	if (doc == NULL) {
		bool enc = ge != NULL && ge->domain == P.error_quark() &&
		           ge->code == POPPLER_ERROR_ENCRYPTED;
		char msg[200];

		snprintf(msg, sizeof(msg), "%s", enc ? "encrypted (it needs a "
		         "password)" : ge ? ge->message : "not a readable PDF");
		put_error(fd, enc ? PDF_ENCRYPTED : PDF_FAILED, msg);
		_exit(0);
	}
	np = P.n_pages(doc);
	for (int i = 0; i < np && i < PDF_MAX_PAGES; i++) {
		PopplerPage *pg = P.get_page(doc, i);
		char *t = pg ? P.page_text(pg) : NULL;
		uint64_t len = t ? strlen(t) : 0;

		if (!put(fd, &len, sizeof(len)) || !put(fd, t ? t : "", len))
			_exit(1);
		P.g_free(t);
		if (pg != NULL)
			P.object_unref(pg);
	}
	{
		uint64_t end = FRAME_END;
		(void)put(fd, &end, sizeof(end));
	}
	/* No cleanup: the process ends here, and its memory with it. */
	_exit(0);
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read exactly n bytes before the deadline; false on EOF, error, time. */
static bool
get(int fd, void *p, size_t n, int64_t deadline)
{
	char *c = p;

	while (n > 0) {
		struct pollfd pfd = {fd, POLLIN, 0};
		int64_t left = deadline - mono_ms();
		ssize_t r;

		if (left <= 0)
			return false;
		if (poll(&pfd, 1, (int)(left > 1000 ? 1000 : left)) < 0 &&
		    errno != EINTR)
			return false;
		if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		r = read(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		c += r;
		n -= (size_t)r;
	}
	return true;
}

/* Parent side: frames from fd into out. */
static enum pdf_result
read_frames(int fd, size_t max_text, struct pdf_text *out, char *err,
            size_t errlen)
{
	int64_t deadline = mono_ms() + PDF_DEADLINE_MS;
	struct buf text;
	size_t cap = 0;

	/* Two bytes more than the cap: the blank line between pages. */
	buf_init(&text, max_text + 2 * PDF_MAX_PAGES + 1);
	for (;;) {
		uint64_t len;

		if (!get(fd, &len, sizeof(len), deadline)) {
			snprintf(err, errlen, "the PDF reader %s",
			         mono_ms() >= deadline ? "took too long" :
			                                 "stopped early");
			goto fail;
		}
		if (len == FRAME_END)
			break;
		if (len == FRAME_ERROR) {
			uint64_t h[2];
			char msg[200];

			if (!get(fd, h, sizeof(h), deadline) || h[1] >= sizeof(msg) ||
			    !get(fd, msg, h[1], deadline) || h[0] == PDF_OK) {
				snprintf(err, errlen, "the PDF reader failed");
				goto fail;
			}
			msg[h[1]] = '\0';
			snprintf(err, errlen, "%s", msg);
			buf_free(&text);
			return (enum pdf_result)h[0];
		}
		if (out->npages == PDF_MAX_PAGES || len > max_text ||
		    text.len + len > max_text + 2 * out->npages) {
			snprintf(err, errlen, "its text is larger than %zu bytes",
			         max_text);
			buf_free(&text);
			pdf_text_free(out);
			return PDF_TOO_LARGE;
		}
		if (out->npages == cap) {
			cap = cap ? cap * 2 : 64;
			out->page_start = xrealloc(out->page_start,
			                           cap * sizeof(size_t));
		}
		if (out->npages > 0 && !buf_add(&text, "\n\n", 2))
			goto toolarge;
		out->page_start[out->npages++] = text.len;
		{
			/* Document-sized, so not xmalloc: a failure fails this
			 * document only. */
			char *page = malloc(len ? (size_t)len : 1);
			bool got, added;

			if (page == NULL)
				goto toolarge;
			got = get(fd, page, (size_t)len, deadline);
			added = got && buf_add(&text, page, (size_t)len);
			free(page);
			if (!got) {
				snprintf(err, errlen, "the PDF reader stopped early");
				goto fail;
			}
			if (!added)
				goto toolarge;
		}
	}
	if (!buf_addc(&text, '\0'))
		goto toolarge;
	out->len = text.len - 1;
	out->text = text.p; /* ownership moves to out */
	return PDF_OK;
toolarge:
	snprintf(err, errlen, "its text is larger than %zu bytes", max_text);
	buf_free(&text);
	pdf_text_free(out);
	return PDF_TOO_LARGE;
fail:
	buf_free(&text);
	pdf_text_free(out);
	return PDF_FAILED;
}

enum pdf_result
pdf_extract(const char *data, size_t n, size_t max_text, struct pdf_text *out,
            char *err, size_t errlen)
{
	enum pdf_result r;
	int fds[2], status = 0;
	pid_t pid;

	memset(out, 0, sizeof(*out));
	if (!pdf_load()) {
		snprintf(err, errlen, "PDF support needs poppler-glib: %s",
		         load_error);
		return PDF_UNSUPPORTED;
	}
	if (pipe2(fds, O_CLOEXEC) != 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return PDF_FAILED;
	}
	(void)fflush(NULL);
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return PDF_FAILED;
	}
	if (pid == 0) {
		close(fds[0]);
		child(fds[1], data, n);
	}
	close(fds[1]);
	r = read_frames(fds[0], max_text, out, err, errlen);
	close(fds[0]);
	/* Whatever it was doing, it is done now. */
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r == PDF_FAILED && WIFSIGNALED(status) &&
	    WTERMSIG(status) != SIGKILL)
		snprintf(err, errlen, "the PDF reader crashed on it (signal %d)",
		         WTERMSIG(status));
	return r;
}

#endif
