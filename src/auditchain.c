/*
 * auditchain.c - the audit chain format: key file, epoch keys, sealing,
 * parsing a sealed line, a bounded line reader and the verifier's rules.
 * See auditchain.h for the line layout. The writer thread (audit.c) and
 * the offline commands (auditcmd.c) both build on this, so what one
 * seals the other checks with the same code.
 */
#include "auditchain.h"

#include "digest.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char hexdigits[] = "0123456789abcdef";

void
auditchain_hex(const unsigned char *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hexdigits[p[i] >> 4];
		out[2 * i + 1] = hexdigits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int
hexval(char c, bool upper_ok)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (upper_ok && c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Sealed lines use lower case only, so one record has one spelling. */
static bool
unhex(const char *s, size_t n, unsigned char *out, bool upper_ok)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i], upper_ok), lo = hexval(s[2 * i + 1],
		                                                  upper_ok);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

bool
auditchain_unhex(const char *s, size_t n, unsigned char *out)
{
	return unhex(s, n, out, false);
}

/* ---- key file ---------------------------------------------------------- */

static bool
key_create(const char *path, unsigned char key[AUDITCHAIN_KEY_LEN],
           char *err, size_t errlen)
{
	char hex[2 * AUDITCHAIN_KEY_LEN + 2];
	int fd;
	bool ok;

	if (RAND_priv_bytes(key, AUDITCHAIN_KEY_LEN) != 1) {
		snprintf(err, errlen, "no randomness for a new audit key");
		return false;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create audit key %s: %s", path,
		         strerror(errno));
		OPENSSL_cleanse(key, AUDITCHAIN_KEY_LEN);
		return false;
	}
	auditchain_hex(key, AUDITCHAIN_KEY_LEN, hex);
	hex[2 * AUDITCHAIN_KEY_LEN] = '\n';
	ok = write(fd, hex, 2 * AUDITCHAIN_KEY_LEN + 1) ==
	         2 * AUDITCHAIN_KEY_LEN + 1 &&
	     fsync(fd) == 0;
	if (!ok)
		snprintf(err, errlen, "cannot write audit key %s: %s", path,
		         strerror(errno));
	close(fd);
	OPENSSL_cleanse(hex, sizeof(hex));
	if (!ok) {
		unlink(path);
		OPENSSL_cleanse(key, AUDITCHAIN_KEY_LEN);
	}
	return ok;
}

bool
auditchain_key_load(const char *path, bool create,
                    unsigned char key[AUDITCHAIN_KEY_LEN], char *err,
                    size_t errlen)
{
	char text[2 * AUDITCHAIN_KEY_LEN + 64];
	struct stat st;
	ssize_t n;
	size_t len;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (key_create(path, key, err, errlen))
			return true;
		/* Someone else made it between our open and our O_EXCL. */
		if (errno != EEXIST)
			return false;
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0) {
		snprintf(err, errlen, "cannot open audit key %s: %s", path,
		         strerror(errno));
		return false;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "audit key %s is not a regular file", path);
		close(fd);
		return false;
	}
	/* A key others can read lets them forge the log; refuse it rather
	 * than seal with a secret that is not one. */
	if ((st.st_mode & 077) != 0) {
		snprintf(err, errlen,
		         "audit key %s is accessible to group or others (mode "
		         "%04o): chmod 600 it",
		         path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return false;
	}
	n = read(fd, text, sizeof(text));
	close(fd);
	len = n > 0 ? (size_t)n : 0;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
	                   text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	if (len != 2 * AUDITCHAIN_KEY_LEN ||
	    !unhex(text, AUDITCHAIN_KEY_LEN, key, true)) {
		snprintf(err, errlen, "audit key %s must hold 64 hex digits",
		         path);
		OPENSSL_cleanse(text, sizeof(text));
		OPENSSL_cleanse(key, AUDITCHAIN_KEY_LEN);
		return false;
	}
	OPENSSL_cleanse(text, sizeof(text));
	return true;
}

/* ---- epoch keys and the MAC -------------------------------------------- */

void
auditchain_key_next(unsigned char key[AUDITCHAIN_KEY_LEN])
{
	static const char label[] = "scrim-audit-epoch";
	unsigned char in[sizeof(label) - 1 + AUDITCHAIN_KEY_LEN];
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned int outlen = 0;

	memcpy(in, label, sizeof(label) - 1);
	memcpy(in + sizeof(label) - 1, key, AUDITCHAIN_KEY_LEN);
	if (EVP_Digest(in, sizeof(in), out, &outlen, EVP_sha256(), NULL) != 1 ||
	    outlen != AUDITCHAIN_KEY_LEN) {
		/* Keeping the old key would silently void forward security. */
		fprintf(stderr, "scrim: SHA-256 failed evolving the audit key\n");
		abort();
	}
	memcpy(key, out, AUDITCHAIN_KEY_LEN);
	OPENSSL_cleanse(in, sizeof(in));
	OPENSSL_cleanse(out, sizeof(out));
}

void
auditchain_keyring_init(struct auditchain_keyring *kr,
                        const unsigned char key0[AUDITCHAIN_KEY_LEN])
{
	memcpy(kr->key, key0, AUDITCHAIN_KEY_LEN);
	kr->epoch = 0;
}

bool
auditchain_keyring_seek(struct auditchain_keyring *kr, uint64_t epoch)
{
	if (epoch < kr->epoch || epoch > AUDITCHAIN_MAX_EPOCH)
		return false;
	while (kr->epoch < epoch) {
		auditchain_key_next(kr->key);
		kr->epoch++;
	}
	return true;
}

void
auditchain_keyring_wipe(struct auditchain_keyring *kr)
{
	OPENSSL_cleanse(kr, sizeof(*kr));
}

/* digest_hmac_ctx keys with 32 bytes. */
_Static_assert(AUDITCHAIN_KEY_LEN == 32, "audit chain keys are 32 bytes");

bool
auditchain_hmac(const unsigned char key[AUDITCHAIN_KEY_LEN], const void *a,
                size_t an, const void *b, size_t bn,
                unsigned char out[AUDITCHAIN_MAC_LEN])
{
	EVP_MAC_CTX *ctx = digest_hmac_ctx(key);
	size_t outlen = 0;

	if (ctx == NULL)
		return false;
	return EVP_MAC_update(ctx, a, an) == 1 && EVP_MAC_update(ctx, b, bn) == 1 &&
	       EVP_MAC_final(ctx, out, &outlen, AUDITCHAIN_MAC_LEN) == 1 &&
	       outlen == AUDITCHAIN_MAC_LEN;
}

bool
auditchain_seal(struct buf *b, size_t start, struct auditchain_state *st,
                const unsigned char key[AUDITCHAIN_KEY_LEN])
{
	unsigned char mac[AUDITCHAIN_MAC_LEN];
	char hex[2 * AUDITCHAIN_MAC_LEN + 1];
	char nums[64], *w = nums; /* two 20-digit numbers and their names */

	/* By hand: once per record on the writer, whose time is taken from
	 * the loop's CPU when both share one. */
	memcpy(w, ",\"seq\":", 7);
	w = scrim_put_u64(w + 7, st->seq + 1);
	memcpy(w, ",\"epoch\":", 9);
	w = scrim_put_u64(w + 9, st->epoch);
	if (!buf_add(b, nums, (size_t)(w - nums)) ||
	    !auditchain_hmac(key, st->mac, AUDITCHAIN_MAC_LEN, b->p + start,
	                     b->len - start, mac))
		return false;
	auditchain_hex(mac, AUDITCHAIN_MAC_LEN, hex);
	if (!buf_add(b, ",\"mac\":\"", 8) ||
	    !buf_add(b, hex, 2 * AUDITCHAIN_MAC_LEN) || !buf_add(b, "\"}\n", 3))
		return false;
	st->seq++;
	st->count++;
	memcpy(st->mac, mac, AUDITCHAIN_MAC_LEN);
	return true;
}

/* ---- reading a sealed line --------------------------------------------- */

/* s[0..*n) ends with ,"name":DIGITS: take it off into *v. */
static bool
tail_uint(const char *s, size_t *n, const char *name, uint64_t *v)
{
	size_t end = *n, i = end, nl = strlen(name), p;
	uint64_t x = 0;

	while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9')
		i--;
	/* 19 digits always fit in 64 bits. */
	if (i == end || end - i > 19 || i < nl + 4)
		return false;
	p = i - (nl + 4);
	if (s[p] != ',' || s[p + 1] != '"' || memcmp(s + p + 2, name, nl) != 0 ||
	    s[p + 2 + nl] != '"' || s[p + 3 + nl] != ':')
		return false;
	for (size_t j = i; j < end; j++)
		x = x * 10 + (uint64_t)(s[j] - '0');
	*v = x;
	*n = p;
	return true;
}

/* s[0..*n) ends with ,"name":"<64 lower-case hex>": take it off. */
static bool
tail_hex(const char *s, size_t *n, const char *name,
         unsigned char out[AUDITCHAIN_MAC_LEN])
{
	size_t nl = strlen(name), need = nl + 6 + 2 * AUDITCHAIN_MAC_LEN, p;

	if (*n < need)
		return false;
	p = *n - need;
	if (s[p] != ',' || s[p + 1] != '"' || memcmp(s + p + 2, name, nl) != 0 ||
	    s[p + 2 + nl] != '"' || s[p + 3 + nl] != ':' ||
	    s[p + 4 + nl] != '"' || s[*n - 1] != '"' ||
	    !unhex(s + p + 5 + nl, AUDITCHAIN_MAC_LEN, out, false))
		return false;
	*n = p;
	return true;
}

bool
auditchain_parse(const char *s, size_t n, struct auditchain_line *l,
                 const char **why)
{
	static const char prefix[] = "{\"type\":\"";
	static const struct {
		const char *name;
		enum auditchain_type type;
	} types[] = {
		{"request", AUDITCHAIN_REQUEST},
		{"checkpoint", AUDITCHAIN_CHECKPOINT},
		{"tombstone", AUDITCHAIN_TOMBSTONE},
	};
	const size_t plen = sizeof(prefix) - 1;
	const char *q;
	size_t m, c, tlen;

	memset(l, 0, sizeof(*l));
	if (n < 2 || s[n - 1] != '}') {
		*why = "it does not end with }";
		return false;
	}
	m = n - 1;
	if (!tail_hex(s, &m, "mac", l->mac)) {
		*why = "no \"mac\" member at its end";
		return false;
	}
	l->signed_len = m;
	if (!tail_uint(s, &m, "epoch", &l->epoch) ||
	    !tail_uint(s, &m, "seq", &l->seq)) {
		*why = "no \"seq\" and \"epoch\" before \"mac\"";
		return false;
	}
	l->body_len = l->core_len = m;
	if (m < plen || memcmp(s, prefix, plen) != 0 ||
	    (q = memchr(s + plen, '"', m - plen)) == NULL) {
		*why = "no \"type\" member first";
		return false;
	}
	tlen = (size_t)(q - (s + plen));
	l->type = AUDITCHAIN_OTHER;
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(types); i++)
		if (strlen(types[i].name) == tlen &&
		    memcmp(types[i].name, s + plen, tlen) == 0)
			l->type = types[i].type;
	c = m;
	if (l->type == AUDITCHAIN_CHECKPOINT) {
		if (!tail_hex(s, &c, "prev_mac", l->prev_mac) ||
		    !tail_uint(s, &c, "prev_seq", &l->prev_seq)) {
			*why = "a checkpoint without prev_seq and prev_mac";
			return false;
		}
		l->has_prev = true;
		l->core_len = c;
	} else if (l->type == AUDITCHAIN_TOMBSTONE &&
	           tail_hex(s, &c, "resume_mac", l->resume.mac)) {
		if (!tail_uint(s, &c, "resume_count", &l->resume.count) ||
		    !tail_uint(s, &c, "resume_epoch", &l->resume.epoch) ||
		    !tail_uint(s, &c, "resume_seq", &l->resume.seq)) {
			*why = "a tombstone with an incomplete resume point";
			return false;
		}
		l->has_resume = true;
		l->core_len = c;
	}
	return true;
}

void
auditchain_after(const struct auditchain_line *l, struct auditchain_state *st)
{
	if (l->has_resume) {
		*st = l->resume;
		return;
	}
	st->seq = l->seq;
	st->epoch = l->epoch;
	memcpy(st->mac, l->mac, AUDITCHAIN_MAC_LEN);
}

/* ---- bounded line reader ----------------------------------------------- */

void
auditchain_reader_init(struct auditchain_reader *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
}

int
auditchain_reader_next(struct auditchain_reader *r, const char **line,
                       size_t *n, bool *nl)
{
	const size_t chunk = (size_t)1 << 16;
	size_t scanned = 0;

	for (;;) {
		size_t have = r->len - r->start;
		char *p = have > scanned ? memchr(r->buf + r->start + scanned,
		                                  '\n', have - scanned)
		                         : NULL;
		ssize_t got;

		if (p != NULL) {
			*line = r->buf + r->start;
			*n = (size_t)(p - *line);
			*nl = true;
			r->start = (size_t)(p - r->buf) + 1;
			r->lineno++;
			return 1;
		}
		scanned = have;
		if (have > AUDITCHAIN_MAX_LINE) {
			errno = EFBIG;
			return -1;
		}
		if (r->eof) {
			if (have == 0)
				return 0;
			*line = r->buf + r->start;
			*n = have;
			*nl = false;
			r->start = r->len;
			r->lineno++;
			return 1;
		}
		if (r->start > 0) {
			memmove(r->buf, r->buf + r->start, have);
			r->len = have;
			r->start = 0;
		}
		if (r->cap - r->len < chunk) {
			/* File-sized, so a failure is an error, not an abort. */
			size_t cap = r->cap ? r->cap * 2 : chunk * 2;
			char *nb;

			while (cap - r->len < chunk)
				cap *= 2;
			nb = realloc(r->buf, cap);
			if (nb == NULL) {
				errno = ENOMEM;
				return -1;
			}
			r->buf = nb;
			r->cap = cap;
		}
		do
			got = read(r->fd, r->buf + r->len, r->cap - r->len);
		while (got < 0 && errno == EINTR);
		if (got < 0)
			return -1;
		if (got == 0)
			r->eof = true;
		r->len += (size_t)got;
	}
}

void
auditchain_reader_free(struct auditchain_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = r->len = r->start = 0;
}

/* ---- the verifier ------------------------------------------------------ */

void
auditchain_verifier_init(struct auditchain_verifier *v,
                         const unsigned char key0[AUDITCHAIN_KEY_LEN])
{
	memset(v, 0, sizeof(*v));
	memcpy(v->key0, key0, AUDITCHAIN_KEY_LEN);
	auditchain_keyring_init(&v->kr, key0);
}

void
auditchain_verifier_wipe(struct auditchain_verifier *v)
{
	auditchain_keyring_wipe(&v->kr);
	OPENSSL_cleanse(v->key0, sizeof(v->key0));
}

SCRIM_PRINTF(3, 4) static bool
refuse(struct auditchain_verifier *v, enum auditchain_fault f,
       const char *fmt, ...)
{
	va_list ap;

	v->fault = f;
	va_start(ap, fmt);
	(void)vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
	return false;
}

static bool
is_zero(const unsigned char *p, size_t n)
{
	unsigned char acc = 0;

	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

bool
auditchain_verifier_feed(struct auditchain_verifier *v, const char *s,
                         size_t n, bool file_start)
{
	struct auditchain_line l;
	unsigned char mac[AUDITCHAIN_MAC_LEN];
	const char *why;
	size_t pos = 0;
	uint64_t count;

	v->fault = AUDITCHAIN_OK;
	if (!auditchain_parse(s, n, &l, &why))
		return refuse(v, AUDITCHAIN_FAULT_FORMAT,
		              "not a sealed audit record: %s", why);
	/* The MAC covers bytes, not JSON; still, a sealed line that is not
	 * one strict JSON object (parse checked the braces) could only come
	 * from a broken writer. json_walk validates without building a
	 * tree: verify spends most of its time here. */
	if (json_walk(s, n, NULL, NULL, NULL, n, &pos) != JSON_OK)
		return refuse(v, AUDITCHAIN_FAULT_FORMAT,
		              "not valid JSON (at byte %zu)", pos);

	if (file_start && l.type != AUDITCHAIN_CHECKPOINT)
		return refuse(v, AUDITCHAIN_FAULT_START,
		              "the file does not begin with a checkpoint: its "
		              "first records are missing");
	if (!v->started) {
		if (l.type != AUDITCHAIN_CHECKPOINT)
			return refuse(v, AUDITCHAIN_FAULT_START,
			              "the first record is not a checkpoint");
		v->st.seq = l.prev_seq;
		v->st.epoch = l.epoch;
		v->st.count = 0;
		memcpy(v->st.mac, l.prev_mac, AUDITCHAIN_MAC_LEN);
		v->genesis = l.prev_seq == 0 &&
		             is_zero(l.prev_mac, AUDITCHAIN_MAC_LEN);
		if (v->genesis && l.epoch != 0)
			return refuse(v, AUDITCHAIN_FAULT_EPOCH,
			              "the chain's first checkpoint is in epoch %" PRIu64
			              ", not 0",
			              l.epoch);
	} else if (l.type == AUDITCHAIN_CHECKPOINT &&
	           (l.prev_seq != v->st.seq ||
	            CRYPTO_memcmp(l.prev_mac, v->st.mac,
	                          AUDITCHAIN_MAC_LEN) != 0)) {
		if (file_start)
			return refuse(v, AUDITCHAIN_FAULT_LINK,
			              "checkpoint link broken: this file continues seq %"
			              PRIu64 ", the files before it end at seq %" PRIu64
			              " (files missing, spliced or out of order)",
			              l.prev_seq, v->st.seq);
		return refuse(v, AUDITCHAIN_FAULT_LINK,
		              "checkpoint link broken: it follows seq %" PRIu64
		              ", the record before it is seq %" PRIu64,
		              l.prev_seq, v->st.seq);
	}
	if (l.seq != v->st.seq + 1) {
		v->expect_seq = v->st.seq + 1;
		v->found_seq = l.seq;
		return refuse(v, AUDITCHAIN_FAULT_SEQ,
		              "seq %" PRIu64 " where %" PRIu64 " was expected",
		              l.seq, v->st.seq + 1);
	}
	if (l.epoch < v->st.epoch)
		return refuse(v, AUDITCHAIN_FAULT_EPOCH,
		              "epoch %" PRIu64 " after epoch %" PRIu64
		              ": sealed out of order",
		              l.epoch, v->st.epoch);
	if (l.epoch > v->st.epoch + 1)
		return refuse(v, AUDITCHAIN_FAULT_EPOCH,
		              "epoch jumps from %" PRIu64 " to %" PRIu64
		              ": re-sealed with a later key",
		              v->st.epoch, l.epoch);
	count = l.epoch == v->st.epoch ? v->st.count + 1 : 1;
	if (count > AUDITCHAIN_EPOCH_RECORDS)
		return refuse(v, AUDITCHAIN_FAULT_EPOCH,
		              "more than %d records in epoch %" PRIu64
		              ": re-sealed with a later key",
		              AUDITCHAIN_EPOCH_RECORDS, l.epoch);
	/* Only a tombstone's resume point sends the chain back to an
	 * epoch whose key this keyring already moved past. */
	if (l.epoch < v->kr.epoch)
		auditchain_keyring_init(&v->kr, v->key0);
	if (!auditchain_keyring_seek(&v->kr, l.epoch))
		return refuse(v, AUDITCHAIN_FAULT_EPOCH,
		              "epoch %" PRIu64 " is out of range", l.epoch);
	if (!auditchain_hmac(v->kr.key, v->st.mac, AUDITCHAIN_MAC_LEN, s,
	                     l.signed_len, mac))
		return refuse(v, AUDITCHAIN_FAULT_MAC, "HMAC failed in OpenSSL");
	if (CRYPTO_memcmp(mac, l.mac, AUDITCHAIN_MAC_LEN) != 0)
		return refuse(v, AUDITCHAIN_FAULT_MAC,
		              v->started ? "MAC mismatch: the record was edited"
		                         : "MAC mismatch on the first record: wrong "
		                           "key file, or the record was edited");
	if (!v->started)
		v->first_seq = l.seq;
	v->started = true;
	v->records++;
	if (l.type == AUDITCHAIN_CHECKPOINT)
		v->checkpoints++;
	else if (l.type == AUDITCHAIN_TOMBSTONE)
		v->tombstones++;
	v->st.count = count;
	auditchain_after(&l, &v->st);
	v->last = l;
	return true;
}
