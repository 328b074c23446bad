/*
 * embedapi.c - see embedapi.h. One blocking POST per batch of texts:
 *
 *   {"model": M, "input": ["text 1", "text 2", ...]}
 *   -> {"data": [{"index": 0, "embedding": [0.1, ...]}, ...]}
 *
 * Every answer is checked whole (as many vectors as texts, each index
 * once, one dimension throughout, finite numbers) before any vector is
 * used, so a confused endpoint can fail an update but never store a
 * half-answered batch. Vectors are normalised here: endpoints differ on
 * whether theirs are, and the index compares by cosine.
 *
 * After a failure the endpoint is left alone for EMBEDAPI_BACKOFF_MS:
 * the gateway's context worker asks once per request, and an endpoint
 * that hangs must not cost every queued request its full timeout.
 */
#include "embedapi.h"

#include "alloc.h"
#include "buf.h"
#include "embed.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EMBEDAPI_BACKOFF_MS 5000
/* Connecting is quick on the loopback endpoints this is for; a longer
 * wait means nothing is listening there. */
#define EMBEDAPI_CONNECT_MS 5000
/* A request body: the texts, JSON-escaped (at most 6 bytes per byte). */
#define EMBEDAPI_MAX_REQUEST (64u * 1024 * 1024)
/* An answer: about 20 bytes of JSON per float. */
#define EMBEDAPI_BYTES_PER_VECTOR ((size_t)EMBED_MAX_DIM * 24 + 256)

struct embedapi {
	char *endpoint;         /* BASE/embeddings */
	char *model;
	CURL *curl;             /* kept: the connection is reused */
	struct curl_slist *headers; /* holds the Authorization line: wiped */
	long timeout_ms;
	size_t batch;
	bool verbose_errors;
	int64_t down_until_ms;  /* backing off after a failure until then */
	char down_why[200];
};

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct embedapi *
embedapi_new(const char *url, const char *model, const char *api_key,
             long timeout_ms, size_t batch, bool verbose_errors)
{
	struct embedapi *a = xcalloc(1, sizeof(*a));
	size_t ul = strlen(url);

	while (ul > 0 && url[ul - 1] == '/')
		ul--;
	a->endpoint = xasprintf("%.*s/embeddings", (int)ul, url);
	a->model = xstrdup(model);
	a->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
	a->batch = batch > 0 ? batch : 1;
	a->verbose_errors = verbose_errors;
	a->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (api_key != NULL && *api_key != '\0') {
		char *line = xasprintf("Authorization: Bearer %s", api_key);
		struct curl_slist *h = curl_slist_append(a->headers, line);

		xfree_secret(line);
		if (h != NULL)
			a->headers = h;
	}
	return a;
}

void
embedapi_free(struct embedapi *a)
{
	if (a == NULL)
		return;
	if (a->curl != NULL)
		curl_easy_cleanup(a->curl);
	/* curl copied the Authorization line: wipe its copy. */
	for (struct curl_slist *h = a->headers; h != NULL; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(a->headers);
	free(a->endpoint);
	free(a->model);
	free(a);
}

static size_t
on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb;

	/* Returning short makes curl fail with CURLE_WRITE_ERROR. */
	return buf_add(b, p, n) ? n : 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned long cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and past U+10FFFF are not text. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/* Append s as a JSON string, quotes included. Bytes that are not UTF-8
 * become '?': an endpoint would refuse the whole batch for one of them
 * (a command-line query can hold any bytes). */
static bool
add_string(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	if (!buf_addc(b, '"'))
		return false;
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		size_t k = utf8_seq((const unsigned char *)s + i, n - i);
		bool ok;

		if (k == 0) {
			ok = buf_addc(b, '?');
			k = 1;
		} else if (c == '"' || c == '\\') {
			ok = buf_addc(b, '\\') && buf_addc(b, (char)c);
		} else if (c == '\n') {
			ok = buf_add(b, "\\n", 2);
		} else if (c < 0x20 || c == 0x7f) {
			char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			ok = buf_add(b, u, sizeof(u));
		} else {
			ok = buf_add(b, s + i, k);
		}
		if (!ok)
			return false;
		i += k;
	}
	return buf_addc(b, '"');
}

static void SCRIM_PRINTF(4, 5)
fail_with(struct embedapi *a, char *err, size_t errlen, const char *fmt, ...)
{
	char what[160];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "embeddings endpoint %s: %s", a->endpoint, what);
	snprintf(a->down_why, sizeof(a->down_why), "%s", what);
	a->down_until_ms = mono_ms() + EMBEDAPI_BACKOFF_MS;
}

/* The endpoint's own error message, for the command line only: a server
 * may quote the input it refused. */
static void
error_detail(const struct embedapi *a, const struct buf *resp, char *out,
             size_t len)
{
	json_t *j, *e, *m;

	out[0] = '\0';
	if (!a->verbose_errors || resp->len == 0)
		return;
	j = json_loadb(resp->p, resp->len, 0, NULL);
	e = json_object_get(j, "error");
	m = json_is_object(e) ? json_object_get(e, "message") : e;
	if (json_is_string(m))
		snprintf(out, len, ": %.150s", json_string_value(m));
	json_decref(j);
}

/* Check and copy one answer for texts [base, base + n). */
static int
take_answer(struct embedapi *a, const struct buf *resp, size_t base,
            size_t n, float *out, unsigned *dim, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j = json_loadb(resp->p, resp->len, 0, &jerr);
	json_t *data = json_object_get(j, "data");
	unsigned char *seen = NULL;
	int ret = -1;

	if (!json_is_array(data)) {
		fail_with(a, err, errlen, "%s", j == NULL
		          ? "the answer is not JSON"
		          : "the answer has no \"data\" array (is this an "
		            "OpenAI-compatible /embeddings?)");
		goto out;
	}
	if (json_array_size(data) != n) {
		fail_with(a, err, errlen, "answered %zu vectors for %zu texts",
		          json_array_size(data), n);
		goto out;
	}
	seen = xcalloc(n, 1);
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_array_get(data, i);
		json_t *ix = json_object_get(item, "index");
		json_t *v = json_object_get(item, "embedding");
		size_t at = json_is_integer(ix) ? (size_t)json_integer_value(ix) : i;
		size_t d = json_array_size(v);
		double norm = 0;
		float *o;

		if (!json_is_array(v) || d == 0 || d > EMBED_MAX_DIM ||
		    (json_is_integer(ix) && json_integer_value(ix) < 0) ||
		    at >= n || seen[at]) {
			fail_with(a, err, errlen, "%s", "an item of \"data\" is not "
			          "{\"index\", \"embedding\": [up to 4096 numbers]} "
			          "for one text");
			goto out;
		}
		seen[at] = 1;
		if (*dim == 0)
			*dim = (unsigned)d;
		if (d != *dim) {
			fail_with(a, err, errlen, "answered %zu dimensions where "
			          "%u were expected", d, *dim);
			goto out;
		}
		o = out + (base + at) * d;
		for (size_t k = 0; k < d; k++) {
			double x = json_number_value(json_array_get(v, k));

			if (!json_is_number(json_array_get(v, k)) || !isfinite(x) ||
			    fabs(x) > 1e30) {
				fail_with(a, err, errlen, "%s", "a vector holds "
				          "something other than a finite number");
				goto out;
			}
			o[k] = (float)x;
			norm += x * x;
		}
		if (norm > 0) {
			float inv = (float)(1.0 / sqrt(norm));
			for (size_t k = 0; k < d; k++)
				o[k] *= inv;
		}
	}
	ret = 0;
out:
	free(seen);
	json_decref(j);
	return ret;
}

/* One request for texts [base, base + n). */
static int
post_batch(struct embedapi *a, const char *const *texts, const size_t *lens,
           size_t base, size_t n, float *out, unsigned *dim, char *err,
           size_t errlen)
{
	struct buf req, resp;
	char cerr[CURL_ERROR_SIZE] = "";
	CURLcode rc;
	long status = 0;
	int ret = -1;

	buf_init(&req, EMBEDAPI_MAX_REQUEST);
	buf_init(&resp, n * EMBEDAPI_BYTES_PER_VECTOR + 65536);
	if (!buf_addf(&req, "{\"model\":") ||
	    !add_string(&req, a->model, strlen(a->model)) ||
	    !buf_addf(&req, ",\"input\":["))
		goto toobig;
	for (size_t i = 0; i < n; i++)
		if ((i > 0 && !buf_addc(&req, ',')) ||
		    !add_string(&req, texts[base + i], lens[base + i]))
			goto toobig;
	if (!buf_add(&req, "]}", 2))
		goto toobig;

	if (a->curl == NULL && (a->curl = curl_easy_init()) == NULL) {
		snprintf(err, errlen, "embeddings endpoint %s: cannot start "
		         "libcurl", a->endpoint);
		goto out;
	}
	curl_easy_reset(a->curl);
	curl_easy_setopt(a->curl, CURLOPT_URL, a->endpoint);
	curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(a->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	/* Documents and prompts go to this endpoint and nowhere else: no
	 * redirect, and no proxy from the environment. */
	curl_easy_setopt(a->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(a->curl, CURLOPT_PROXY, "");
	curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(a->curl, CURLOPT_CONNECTTIMEOUT_MS,
	                 a->timeout_ms < EMBEDAPI_CONNECT_MS ? a->timeout_ms
	                                                    : EMBEDAPI_CONNECT_MS);
	curl_easy_setopt(a->curl, CURLOPT_TIMEOUT_MS, a->timeout_ms);
	curl_easy_setopt(a->curl, CURLOPT_USERAGENT, "scrim");
	curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, a->headers);
	curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, req.p);
	curl_easy_setopt(a->curl, CURLOPT_POSTFIELDSIZE_LARGE,
	                 (curl_off_t)req.len);
	curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, &resp);
	rc = curl_easy_perform(a->curl);
	if (rc != CURLE_OK) {
		if (rc == CURLE_WRITE_ERROR)
			fail_with(a, err, errlen, "%s", "the answer is too large");
		else
			fail_with(a, err, errlen, "%s",
			          cerr[0] ? cerr : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		char d[200];

		error_detail(a, &resp, d, sizeof(d));
		fail_with(a, err, errlen, "answered HTTP %ld%s%s", status, d,
		          status == 404 ? " (is the URL the API's base, "
		                          "e.g. http://127.0.0.1:11434/v1?)"
		          : status == 413 ? " (a text too long for the model?)"
		                          : "");
		goto out;
	}
	ret = take_answer(a, &resp, base, n, out, dim, err, errlen);
	goto out;
toobig:
	snprintf(err, errlen, "embeddings endpoint %s: a batch is larger than "
	         "%u MB", a->endpoint, EMBEDAPI_MAX_REQUEST >> 20);
out:
	/* Both hold documents or a prompt. */
	buf_wipe(&req);
	buf_wipe(&resp);
	return ret;
}

int
embedapi_run(struct embedapi *a, const char *const *texts, const size_t *lens,
             size_t n, float *out, unsigned *dim, char *err, size_t errlen)
{
	int64_t now = mono_ms();

	if (now < a->down_until_ms) {
		snprintf(err, errlen, "embeddings endpoint %s: %s (not asked "
		         "again for %lld ms)", a->endpoint, a->down_why,
		         (long long)(a->down_until_ms - now));
		return -1;
	}
	for (size_t at = 0; at < n; at += a->batch) {
		size_t k = n - at < a->batch ? n - at : a->batch;

		if (post_batch(a, texts, lens, at, k, out, dim, err, errlen) < 0)
			return -1;
	}
	return 0;
}
