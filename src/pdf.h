/*
 * pdf.h - the text of PDF documents, for `scrim index add`. Built on
 * poppler-glib when the build found it (CMake option SCRIM_PDF); without
 * it pdf_supported() is false and PDFs are skipped. The PDF is parsed in
 * a child process under a CPU limit and a deadline, so that a hostile or
 * broken file can crash or hang only that child: the command skips the
 * file and goes on. This file owns the extraction and its bounds; cutting
 * the text into chunks is chunk.c's. The gateway never parses PDF.
 */
#ifndef SCRIM_PDF_H
#define SCRIM_PDF_H

#include "scrim.h"

/* Pages read from one document, at most. */
#define PDF_MAX_PAGES 20000

/* A document's text: page i is text[page_start[i] .. page_start[i + 1])
 * (the last runs to len); pages are joined by a blank line. Owned. */
struct pdf_text {
	char *text;             /* NUL-terminated; UTF-8 as poppler gives it */
	size_t len;
	size_t *page_start;
	size_t npages;
};

enum pdf_result {
	PDF_OK,
	PDF_UNSUPPORTED,        /* this build has no PDF reader */
	PDF_ENCRYPTED,          /* needs a password */
	PDF_TOO_LARGE,          /* its text is longer than max_text */
	PDF_FAILED,             /* not a PDF, damaged, or the reader died */
};

bool pdf_supported(void);
/* "poppler-glib 22.12.0", or NULL without PDF support. */
const char *pdf_reader_version(void);

/*
 * The text of the PDF data[0..n), at most max_text bytes, into out. On
 * anything but PDF_OK, out is empty and err says why (no document text
 * in it).
 */
enum pdf_result pdf_extract(const char *data, size_t n, size_t max_text,
                            struct pdf_text *out, char *err, size_t errlen)
	SCRIM_MUSTCHECK;
void pdf_text_free(struct pdf_text *t);

#endif
