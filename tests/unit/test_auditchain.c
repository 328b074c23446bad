/*
 * test_auditchain.c - the audit chain format on its own, with no writer
 * thread and no files beyond key files (RELIABILITY.md section 8, L1):
 * known answers for the epoch key and the MAC, a seal that runs out of
 * room leaves the chain where it was, every way a line's fixed tail can
 * be wrong, the key file's refusals, the line reader's limits and errors
 * (EINTR, a directory, an endless line), and the verifier on whole chains:
 * every byte of every record flipped, a record deleted, two swapped or
 * one replayed is refused at exactly that record, and an epoch holds
 * 10,000 records, then rolls over to the next key.
 */
#include "auditchain.h"
#include "buf.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static char dir[] = "/tmp/scrim-test-auditchain-XXXXXX";

/* ---- helpers ----------------------------------------------------------- */

static char *
path_in(const char *name)
{
	static char p[4][256];
	static int next;
	char *s = p[next++ % 4];

	snprintf(s, sizeof(p[0]), "%s/%s", dir, name);
	return s;
}

static void
write_file(const char *path, const void *p, size_t n, mode_t mode)
{
	int fd;

	(void)unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0 || write(fd, p, n) != (ssize_t)n || fchmod(fd, mode) != 0 ||
	    close(fd) != 0)
		abort();
}

static void
hex_of(const unsigned char *p, size_t n, char *out)
{
	auditchain_hex(p, n, out);
}

/* Seal body under st and key into line (no newline); its length. */
static size_t
seal_into(char *line, size_t cap, const char *body,
          struct auditchain_state *st,
          const unsigned char key[AUDITCHAIN_KEY_LEN])
{
	struct buf b;
	size_t n;

	buf_init(&b, 1 << 16);
	if (!buf_add(&b, body, strlen(body)) || !auditchain_seal(&b, 0, st, key))
		abort();
	n = b.len - 1;
	if (n >= cap || b.p[n] != '\n')
		abort();
	memcpy(line, b.p, n);
	line[n] = '\0';
	buf_free(&b);
	return n;
}

static const char genesis_body[] =
    "{\"type\":\"checkpoint\",\"prev_seq\":0,\"prev_mac\":"
    "\"0000000000000000000000000000000000000000000000000000000000000000\"";

/* 00 01 02 ... 1f: the key of the known answers. */
static void
key_0_to_31(unsigned char k[AUDITCHAIN_KEY_LEN])
{
	for (int i = 0; i < AUDITCHAIN_KEY_LEN; i++)
		k[i] = (unsigned char)i;
}

/* ---- known answers ----------------------------------------------------- */

/*
 * Computed outside scrim (Python hashlib/hmac, `openssl dgst -mac HMAC`):
 *   SHA-256("scrim-audit-epoch" || 00..1f)            epoch 1
 *   SHA-256("scrim-audit-epoch" || that)              epoch 2
 *   HMAC-SHA256(00..1f, "abcdef")
 *   HMAC-SHA256(00..1f, 32 zero bytes || genesis ,"seq":1,"epoch":0)
 */
static void
test_known_answers(void)
{
	unsigned char k[AUDITCHAIN_KEY_LEN], k0[AUDITCHAIN_KEY_LEN],
	    mac[AUDITCHAIN_MAC_LEN];
	char hex[2 * AUDITCHAIN_MAC_LEN + 1], line[512], want[512];
	struct auditchain_keyring kr;
	struct auditchain_state st;
	size_t n;

	key_0_to_31(k0);
	memcpy(k, k0, sizeof(k));
	auditchain_key_next(k);
	hex_of(k, sizeof(k), hex);
	CHECK(strcmp(hex, "9fbb5c708770d9ada6bac916c5c27421f96f4689cf8af2ab4c8"
	                  "2db1d02ec4d00") == 0,
	      "epoch 1 key: %s", hex);
	auditchain_key_next(k);
	hex_of(k, sizeof(k), hex);
	CHECK(strcmp(hex, "b9b9b8fab2a5c18833cbf90662f91653105c5f11a9455d534"
	                  "6b9598d387cc4f2") == 0,
	      "epoch 2 key: %s", hex);

	/* The keyring gets there the same way, and only forward. */
	auditchain_keyring_init(&kr, k0);
	CHECK(auditchain_keyring_seek(&kr, 2) && kr.epoch == 2 &&
	          memcmp(kr.key, k, sizeof(k)) == 0,
	      "keyring at epoch 2 holds the epoch 2 key");
	CHECK(auditchain_keyring_seek(&kr, 2) && kr.epoch == 2,
	      "seeking the epoch it is at is a no-op");
	CHECK(!auditchain_keyring_seek(&kr, 1) && kr.epoch == 2 &&
	          memcmp(kr.key, k, sizeof(k)) == 0,
	      "a keyring does not go back, and is unchanged");
	CHECK(!auditchain_keyring_seek(&kr, AUDITCHAIN_MAX_EPOCH + 1) &&
	          kr.epoch == 2 && memcmp(kr.key, k, sizeof(k)) == 0,
	      "an epoch past AUDITCHAIN_MAX_EPOCH is refused without hashing");
	auditchain_keyring_wipe(&kr);
	CHECK(kr.epoch == 0 && kr.key[0] == 0 && kr.key[31] == 0,
	      "wipe clears the keyring");

	CHECK(auditchain_hmac(k0, "abc", 3, "def", 3, mac), "hmac");
	hex_of(mac, sizeof(mac), hex);
	CHECK(strcmp(hex, "2867d85143fa9948833a5ec6f3c7d31068cc5a9ba587e08b1e8"
	                  "ad88e1a30acb3") == 0,
	      "HMAC over a || b: %s", hex);

	/* The sealed genesis line, byte for byte. */
	memset(&st, 0, sizeof(st));
	n = seal_into(line, sizeof(line), genesis_body, &st, k0);
	snprintf(want, sizeof(want),
	         "%s,\"seq\":1,\"epoch\":0,\"mac\":\"89d2abb69b6a9450717e2890dc1a"
	         "365b3ab4bf4b2a29ee563feb5227a50e20d3\"}",
	         genesis_body);
	CHECK(n == strlen(want) && strcmp(line, want) == 0, "sealed genesis: %s",
	      line);
	CHECK(st.seq == 1 && st.epoch == 0 && st.count == 1,
	      "seal advances seq and count, not the epoch");
	CHECK(auditchain_unhex("89d2abb69b6a9450717e2890dc1a365b3ab4bf4b2a29ee"
	                       "563feb5227a50e20d3", AUDITCHAIN_MAC_LEN, mac) &&
	          memcmp(st.mac, mac, sizeof(mac)) == 0,
	      "the state carries the new mac");
}

/* ---- sealing into a full buffer ---------------------------------------- */

/* Every cap short of the sealed line fails and leaves st as it was; the
 * exact cap succeeds. Two records in one buffer: the MAC covers only the
 * second one's bytes from start. */
static void
test_seal_full(void)
{
	unsigned char k0[AUDITCHAIN_KEY_LEN];
	struct auditchain_state st, saved;
	struct auditchain_verifier v;
	char ref[512];
	size_t reflen, body = strlen(genesis_body), max, bad = 0;
	struct buf b;

	key_0_to_31(k0);
	memset(&st, 0, sizeof(st));
	reflen = seal_into(ref, sizeof(ref), genesis_body, &st, k0) + 1;
	for (max = body; max < reflen; max++) {
		memset(&st, 0, sizeof(st));
		saved = st;
		buf_init(&b, max);
		if (!buf_add(&b, genesis_body, body))
			abort();
		if (auditchain_seal(&b, 0, &st, k0) ||
		    memcmp(&st, &saved, sizeof(st)) != 0)
			bad++;
		buf_free(&b);
	}
	CHECK(bad == 0, "%zu of %zu short caps sealed or moved the state", bad,
	      reflen - body);
	memset(&st, 0, sizeof(st));
	buf_init(&b, reflen);
	CHECK(buf_add(&b, genesis_body, body) && auditchain_seal(&b, 0, &st, k0) &&
	          b.len == reflen && memcmp(b.p, ref, reflen - 1) == 0 &&
	          b.p[reflen - 1] == '\n',
	      "the exact cap seals the reference line");

	/* A second record after the first, in the same buffer. */
	b.max = 1 << 16;
	{
		size_t start = b.len, first = b.len - 1;

		CHECK(buf_add(&b, "{\"type\":\"request\"", 17) &&
		          auditchain_seal(&b, start, &st, k0) && st.seq == 2,
		      "second seal");
		auditchain_verifier_init(&v, k0);
		CHECK(auditchain_verifier_feed(&v, b.p, first, true) &&
		          auditchain_verifier_feed(&v, b.p + start,
		                                   b.len - start - 1, false) &&
		          v.records == 2 && v.st.seq == 2,
		      "both verify: %s", v.why);
		auditchain_verifier_wipe(&v);
	}
	buf_free(&b);
}

/* ---- parsing a line's tail --------------------------------------------- */

#define W_END "it does not end with }"
#define W_MAC "no \"mac\" member at its end"
#define W_SEQ "no \"seq\" and \"epoch\" before \"mac\""
#define W_TYPE "no \"type\" member first"
#define W_CKPT "a checkpoint without prev_seq and prev_mac"
#define W_TOMB "a tombstone with an incomplete resume point"

static void
parse_bad(const char *txt, const char *want_why, const char *what)
{
	struct auditchain_line l;
	const char *why = NULL;
	bool ok = auditchain_parse(txt, strlen(txt), &l, &why);

	CHECK(!ok && why != NULL && strcmp(why, want_why) == 0,
	      "%s: %s (%s)", what, ok ? "accepted" : "refused",
	      why != NULL ? why : "no reason");
}

static void
test_parse(void)
{
	char m[65], m2[65], s[800];
	struct auditchain_line l;
	struct auditchain_state st;
	unsigned char a[AUDITCHAIN_MAC_LEN], bb[AUDITCHAIN_MAC_LEN];
	const char *why = NULL;
	static const struct {
		const char *pre; /* what stands for ,"mac":" */
		const char *what;
	} macs[] = {
		{";\"mac\":\"", "mac not after a comma"},
		{",'mac\":\"", "mac name without its opening quote"},
		{",\"mak\":\"", "mac misnamed, same length"},
		{",\"mac':\"", "mac name without its closing quote"},
		{",\"mac\"=\"", "mac without its colon"},
		{",\"mac\":'", "mac value without its opening quote"},
	};
	static const char *const epochs[] = {
		";\"epoch\":1", ",'epoch\":1", ",\"epocx\":1", ",\"epoch':1",
		",\"epoch\"=1",
	};

	memset(m, 'a', 64);
	m[64] = '\0';
	memset(m2, '5', 64);
	m2[64] = '\0';

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(macs); i++) {
		snprintf(s, sizeof(s),
		         "{\"type\":\"request\",\"seq\":1,\"epoch\":1%s%s\"}",
		         macs[i].pre, m);
		parse_bad(s, W_MAC, macs[i].what);
	}
	snprintf(s, sizeof(s), "{\"type\":\"request\",\"seq\":1,\"epoch\":1,"
	                       "\"mac\":\"%s\"", m);
	parse_bad(s, W_END, "the closing brace missing");
	snprintf(s, sizeof(s), "{\"type\":\"request\",\"seq\":1,\"epoch\":1,"
	                       "\"mac\":\"%.62s\"}", m);
	parse_bad(s, W_MAC, "a mac of 62 digits");

	for (size_t i = 0; i < SCRIM_ARRAY_LEN(epochs); i++) {
		snprintf(s, sizeof(s), "{\"type\":\"request\",\"seq\":1%s,"
		                       "\"mac\":\"%s\"}", epochs[i], m);
		parse_bad(s, W_SEQ, epochs[i]);
	}
	snprintf(s, sizeof(s), "{\"type\":\"request\",\"epoch\":1,\"mac\":\"%s\"}",
	         m);
	parse_bad(s, W_SEQ, "no seq");
	snprintf(s, sizeof(s), "{\"type\":\"request\",\"seq\":-1,\"epoch\":1,"
	                       "\"mac\":\"%s\"}", m);
	parse_bad(s, W_SEQ, "a negative seq");
	snprintf(s, sizeof(s), "1234,\"mac\":\"%s\"}", m);
	parse_bad(s, W_SEQ, "nothing but digits before the mac");
	snprintf(s, sizeof(s), ",\"seq\":1,\"epoch\":1,\"mac\":\"%s\"}", m);
	parse_bad(s, W_TYPE, "nothing before seq");
	snprintf(s, sizeof(s), "{\"type\":\"request,\"seq\":1,\"epoch\":1,"
	                       "\"mac\":\"%s\"}", m);
	parse_bad(s, W_TYPE, "a type whose closing quote is missing");

	/* 19 digits are the most a number may have: the largest fits. */
	snprintf(s, sizeof(s), "{\"type\":\"request\",\"seq\":9999999999999999999,"
	                       "\"epoch\":0,\"mac\":\"%s\"}", m);
	CHECK(auditchain_parse(s, strlen(s), &l, &why) &&
	          l.seq == UINT64_C(9999999999999999999),
	      "a seq of 19 digits");

	/* The type decides by name and length, not a prefix. */
	snprintf(s, sizeof(s), "{\"type\":\"reqXest\",\"seq\":3,\"epoch\":0,"
	                       "\"mac\":\"%s\"}", m);
	CHECK(auditchain_parse(s, strlen(s), &l, &why) &&
	          l.type == AUDITCHAIN_OTHER && l.seq == 3,
	      "a seven-letter type that is not request");
	snprintf(s, sizeof(s), "{\"type\":\"requests\",\"seq\":3,\"epoch\":0,"
	                       "\"mac\":\"%s\"}", m);
	CHECK(auditchain_parse(s, strlen(s), &l, &why) &&
	          l.type == AUDITCHAIN_OTHER,
	      "request with a suffix is another type");

	/* A good request: where each part ends. */
	snprintf(s, sizeof(s), "{\"type\":\"request\",\"id\":\"r1\",\"seq\":42,"
	                       "\"epoch\":7,\"mac\":\"%s\"}", m2);
	CHECK(auditchain_unhex(m2, 32, a), "unhex");
	CHECK(auditchain_parse(s, strlen(s), &l, &why) &&
	          l.type == AUDITCHAIN_REQUEST && l.seq == 42 && l.epoch == 7 &&
	          memcmp(l.mac, a, sizeof(a)) == 0 && !l.has_prev &&
	          !l.has_resume &&
	          l.signed_len == (size_t)(strstr(s, ",\"mac\"") - s) &&
	          l.body_len == (size_t)(strstr(s, ",\"seq\"") - s) &&
	          l.core_len == l.body_len,
	      "request parsed");
	memset(&st, 0, sizeof(st));
	st.count = 9;
	auditchain_after(&l, &st);
	CHECK(st.seq == 42 && st.epoch == 7 && st.count == 9 &&
	      memcmp(st.mac, a, sizeof(a)) == 0,
	      "after a request: its seq, epoch and mac; the count is the "
	      "caller's");

	/* A checkpoint: prev_seq and prev_mac come off the body. */
	snprintf(s, sizeof(s), "{\"type\":\"checkpoint\",\"why\":\"start\","
	                       "\"prev_seq\":41,\"prev_mac\":\"%s\",\"seq\":42,"
	                       "\"epoch\":7,\"mac\":\"%s\"}", m, m2);
	CHECK(auditchain_unhex(m, 32, bb), "unhex");
	CHECK(auditchain_parse(s, strlen(s), &l, &why) &&
	          l.type == AUDITCHAIN_CHECKPOINT && l.has_prev &&
	          l.prev_seq == 41 && memcmp(l.prev_mac, bb, sizeof(bb)) == 0 &&
	          l.core_len == (size_t)(strstr(s, ",\"prev_seq\"") - s) &&
	          l.body_len == (size_t)(strstr(s, ",\"seq\"") - s),
	      "checkpoint parsed");
	snprintf(s, sizeof(s), "{\"type\":\"checkpoint\",\"prev_seq\":41,"
	                       "\"prev_mac\":\"%.63sA\",\"seq\":42,\"epoch\":7,"
	                       "\"mac\":\"%s\"}", m, m2);
	parse_bad(s, W_CKPT, "upper-case hex in prev_mac");

	/* Tombstones: a resume point whole, or refused if part of it is
	 * missing; without resume_mac it is a plain tombstone. */
	snprintf(s, sizeof(s), "{\"type\":\"tombstone\",\"forgot\":3,"
	                       "\"resume_seq\":41,\"resume_epoch\":3,"
	                       "\"resume_count\":17,\"resume_mac\":\"%s\","
	                       "\"seq\":42,\"epoch\":7,\"mac\":\"%s\"}", m, m2);
	CHECK(auditchain_parse(s, strlen(s), &l, &why) &&
	          l.type == AUDITCHAIN_TOMBSTONE && l.has_resume &&
	          l.resume.seq == 41 && l.resume.epoch == 3 &&
	          l.resume.count == 17 &&
	          memcmp(l.resume.mac, bb, sizeof(bb)) == 0 &&
	          l.core_len == (size_t)(strstr(s, ",\"resume_seq\"") - s),
	      "tombstone with a resume point parsed");
	memset(&st, 0, sizeof(st));
	auditchain_after(&l, &st);
	CHECK(st.seq == 41 && st.epoch == 3 && st.count == 17 &&
	          memcmp(st.mac, bb, sizeof(bb)) == 0,
	      "after a tombstone the chain stands at its resume point");
	snprintf(s, sizeof(s), "{\"type\":\"tombstone\",\"resume_seq\":41,"
	                       "\"resume_count\":17,\"resume_mac\":\"%s\","
	                       "\"seq\":42,\"epoch\":7,\"mac\":\"%s\"}", m, m2);
	parse_bad(s, W_TOMB, "resume point without its epoch");
	snprintf(s, sizeof(s), "{\"type\":\"tombstone\",\"resume_epoch\":3,"
	                       "\"resume_count\":17,\"resume_mac\":\"%s\","
	                       "\"seq\":42,\"epoch\":7,\"mac\":\"%s\"}", m, m2);
	parse_bad(s, W_TOMB, "resume point without its seq");
	snprintf(s, sizeof(s), "{\"type\":\"tombstone\",\"resume_mac\":\"%s\","
	                       "\"seq\":42,\"epoch\":7,\"mac\":\"%s\"}", m, m2);
	parse_bad(s, W_TOMB, "resume point with only its mac");
}

/* ---- key files --------------------------------------------------------- */

static void
test_key_files(void)
{
	unsigned char k[AUDITCHAIN_KEY_LEN], k0[AUDITCHAIN_KEY_LEN],
	    k2[AUDITCHAIN_KEY_LEN];
	char err[512], text[80];
	const char *p = path_in("k.key");
	struct stat sb;

	key_0_to_31(k0);

	/* Upper case is accepted in the key file (people paste it). */
	snprintf(text, sizeof(text), "%s\n", "000102030405060708090A0B0C0D0E0F"
	                                     "101112131415161718191A1B1C1D1E1F");
	write_file(p, text, strlen(text), 0600);
	memset(k, 0xee, sizeof(k));
	CHECK(auditchain_key_load(p, false, k, err, sizeof(err)) &&
	          memcmp(k, k0, sizeof(k)) == 0,
	      "an upper-case key loads the same bytes: %s", err);
	/* Lower case, with trailing blanks of every kind. */
	snprintf(text, sizeof(text), "%s \t\r\n", "000102030405060708090a0b0c0d"
	                                          "0e0f101112131415161718191a1b"
	                                          "1c1d1e1f");
	write_file(p, text, strlen(text), 0600);
	memset(k, 0xee, sizeof(k));
	CHECK(auditchain_key_load(p, false, k, err, sizeof(err)) &&
	          memcmp(k, k0, sizeof(k)) == 0,
	      "a lower-case key with trailing blanks: %s", err);

	/* Not hex: a blank, a punctuation mark below '0', a letter past
	 * 'F'/'f'. The key is wiped, not left half decoded. */
	{
		static const char *const bad[] = {
			"00010203040506070809 a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
			"0001020304050607+8090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1:",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1G",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00",
		};

		for (size_t i = 0; i < SCRIM_ARRAY_LEN(bad); i++) {
			write_file(p, bad[i], strlen(bad[i]), 0600);
			memset(k, 0xee, sizeof(k));
			err[0] = '\0';
			CHECK(!auditchain_key_load(p, false, k, err, sizeof(err)) &&
			          strstr(err, "must hold 64 hex digits") != NULL &&
			          k[0] == 0 && k[31] == 0,
			      "bad key %zu refused and wiped: %s", i, err);
		}
	}

	/* Empty, and blank only. */
	write_file(p, "", 0, 0600);
	CHECK(!auditchain_key_load(p, false, k, err, sizeof(err)) &&
	          strstr(err, "must hold 64 hex digits") != NULL,
	      "an empty key file: %s", err);
	write_file(p, "\n \t\r\n", 5, 0600);
	CHECK(!auditchain_key_load(p, false, k, err, sizeof(err)) &&
	          strstr(err, "must hold 64 hex digits") != NULL,
	      "a blank key file: %s", err);

	/* Open to the group only, or writable by others: refused, with the
	 * mode in the message. */
	write_file(p, text, strlen(text), 0640);
	CHECK(!auditchain_key_load(p, false, k, err, sizeof(err)) &&
	          strstr(err, "(mode 0640)") != NULL,
	      "a group-readable key: %s", err);
	write_file(p, text, strlen(text), 0602);
	CHECK(!auditchain_key_load(p, true, k, err, sizeof(err)) &&
	          strstr(err, "(mode 0602)") != NULL,
	      "an others-writable key, even with create: %s", err);
	unlink(p);

	/* Not a regular file. */
	CHECK(!auditchain_key_load("/dev/null", false, k, err, sizeof(err)) &&
	          strstr(err, "not a regular file") != NULL,
	      "/dev/null is not a key: %s", err);

	/* A path through a regular file: not created, whatever create says
	 * (only a missing file is made). */
	write_file(path_in("plain"), "x", 1, 0600);
	CHECK(!auditchain_key_load(path_in("plain/k.key"), true, k, err,
	                           sizeof(err)) &&
	          strstr(err, "cannot open audit key") != NULL &&
	          strstr(err, strerror(ENOTDIR)) != NULL,
	      "a path under a file: %s", err);

	/* A dangling symlink: O_EXCL will not create through it, and the
	 * target is not made. */
	(void)unlink(path_in("link.key"));
	CHECK(symlink(path_in("target.key"), path_in("link.key")) == 0,
	      "symlink");
	CHECK(!auditchain_key_load(path_in("link.key"), true, k, err,
	                           sizeof(err)) &&
	          strstr(err, "cannot open audit key") != NULL &&
	          stat(path_in("target.key"), &sb) != 0,
	      "a dangling symlink is not followed to make a key: %s", err);
	unlink(path_in("link.key"));

	/* Made fresh: 0600, 64 hex digits and a newline, loads back the
	 * same; a second key is another. */
	p = path_in("new.key");
	(void)unlink(p);
	CHECK(auditchain_key_load(p, true, k, err, sizeof(err)), "create: %s",
	      err);
	CHECK(stat(p, &sb) == 0 && S_ISREG(sb.st_mode) &&
	          (sb.st_mode & 0777) == 0600 && sb.st_size == 65,
	      "created 0600 with 65 bytes");
	CHECK(auditchain_key_load(p, false, k2, err, sizeof(err)) &&
	          memcmp(k, k2, sizeof(k)) == 0,
	      "loads back the key it made: %s", err);
	unlink(p);
	CHECK(auditchain_key_load(p, true, k2, err, sizeof(err)) &&
	          memcmp(k, k2, sizeof(k)) != 0,
	      "a new key each time");
	unlink(p);

	/* No room to write it (RLIMIT_FSIZE 0): refused, and no empty or
	 * partial key file is left for the next start to trip on. */
	{
		struct rlimit old, lim;
		void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
		bool ok;

		CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0, "getrlimit");
		lim = old;
		lim.rlim_cur = 0;
		CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
		memset(k, 0xee, sizeof(k));
		ok = auditchain_key_load(p, true, k, err, sizeof(err));
		CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0, "setrlimit back");
		signal(SIGXFSZ, oldsig);
		CHECK(!ok && strstr(err, "cannot write audit key") != NULL &&
		          strstr(err, strerror(EFBIG)) != NULL,
		      "a key that cannot be written: %s", err);
		CHECK(stat(p, &sb) != 0 && errno == ENOENT,
		      "the unwritten key file is removed");
		CHECK(k[0] == 0 && k[31] == 0, "the unwritten key is wiped");
	}
}

/* ---- the line reader --------------------------------------------------- */

static void
test_reader_lines(void)
{
	struct auditchain_reader r;
	const size_t longn = 300000;
	const char *line;
	char *text;
	size_t n, total = 2 + longn + 1 + 1 + 4;
	bool nl;
	int fd, got;

	/* "a\n", a 300,000-byte line (past the first buffer, so it grows
	 * twice), an empty line, then "tail" without a newline. */
	text = malloc(total);
	if (text == NULL)
		abort();
	memcpy(text, "a\n", 2);
	memset(text + 2, 'x', longn);
	memcpy(text + 2 + longn, "\n\ntail", 6);
	write_file(path_in("lines"), text, total, 0600);

	fd = open(path_in("lines"), O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open lines");
	auditchain_reader_init(&r, fd);
	got = auditchain_reader_next(&r, &line, &n, &nl);
	CHECK(got == 1 && n == 1 && line[0] == 'a' && nl && r.lineno == 1,
	      "line 1");
	got = auditchain_reader_next(&r, &line, &n, &nl);
	CHECK(got == 1 && n == longn && nl && r.lineno == 2 &&
	          memcmp(line, text + 2, longn) == 0,
	      "line 2, long (%d, %zu)", got, n);
	got = auditchain_reader_next(&r, &line, &n, &nl);
	CHECK(got == 1 && n == 0 && nl && r.lineno == 3, "line 3, empty");
	got = auditchain_reader_next(&r, &line, &n, &nl);
	CHECK(got == 1 && n == 4 && memcmp(line, "tail", 4) == 0 && !nl &&
	          r.lineno == 4,
	      "line 4 without its newline");
	CHECK(auditchain_reader_next(&r, &line, &n, &nl) == 0 && r.lineno == 4,
	      "then the end");
	CHECK(auditchain_reader_next(&r, &line, &n, &nl) == 0,
	      "and the end again");
	auditchain_reader_free(&r);
	CHECK(r.buf == NULL && r.cap == 0, "freed");
	close(fd);
	free(text);

	/* An empty file has no line at all. */
	write_file(path_in("empty"), "", 0, 0600);
	fd = open(path_in("empty"), O_RDONLY | O_CLOEXEC);
	auditchain_reader_init(&r, fd);
	CHECK(auditchain_reader_next(&r, &line, &n, &nl) == 0 && r.lineno == 0,
	      "an empty file");
	auditchain_reader_free(&r);
	close(fd);
}

static void
test_reader_errors(void)
{
	struct auditchain_reader r;
	const char *line;
	size_t n;
	bool nl;
	int fd;

	/* A read error is -1 with read's errno. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(fd >= 0, "open the directory");
	auditchain_reader_init(&r, fd);
	errno = 0;
	CHECK(auditchain_reader_next(&r, &line, &n, &nl) == -1 &&
	          errno == EISDIR,
	      "reading a directory: -1, EISDIR (%s)", strerror(errno));
	auditchain_reader_free(&r);
	close(fd);

	/* A line that never ends: refused past AUDITCHAIN_MAX_LINE bytes,
	 * not read until memory runs out. */
	fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open /dev/zero");
	auditchain_reader_init(&r, fd);
	errno = 0;
	CHECK(auditchain_reader_next(&r, &line, &n, &nl) == -1 &&
	          errno == EFBIG && r.len - r.start > AUDITCHAIN_MAX_LINE &&
	          r.len - r.start <= 2 * AUDITCHAIN_MAX_LINE,
	      "an endless line: -1, EFBIG (%s) after %zu bytes",
	      strerror(errno), r.len - r.start);
	auditchain_reader_free(&r);
	close(fd);
}

static volatile sig_atomic_t alarm_fd = -1, alarm_hits;

static void
on_alarm(int sig)
{
	(void)sig;
	alarm_hits++;
	if (alarm_fd >= 0) {
		ssize_t w = write(alarm_fd, "late\n", 5);

		(void)w;
		close(alarm_fd);
		alarm_fd = -1;
	}
}

/* A signal while read() waits (no SA_RESTART): the reader reads again
 * rather than report an error; the handler is what writes the line. */
static void
test_reader_eintr(void)
{
	struct auditchain_reader r;
	struct sigaction sa, old;
	struct itimerval it;
	const char *line;
	size_t n;
	bool nl;
	int pfd[2], got;

	if (pipe(pfd) != 0) {
		CHECK(false, "pipe");
		return;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;
	CHECK(sigaction(SIGALRM, &sa, &old) == 0, "sigaction");
	alarm_hits = 0;
	alarm_fd = pfd[1];
	memset(&it, 0, sizeof(it));
	it.it_value.tv_usec = 100000;
	CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer");
	auditchain_reader_init(&r, pfd[0]);
	got = auditchain_reader_next(&r, &line, &n, &nl);
	CHECK(got == 1 && n == 4 && memcmp(line, "late", 4) == 0 && nl,
	      "the line written after the signal (%d, %s)", got,
	      got < 0 ? strerror(errno) : "");
	CHECK(alarm_hits == 1, "one signal");
	CHECK(auditchain_reader_next(&r, &line, &n, &nl) == 0,
	      "then the end");
	auditchain_reader_free(&r);
	sigaction(SIGALRM, &old, NULL);
	close(pfd[0]);
	if (alarm_fd >= 0)
		close(alarm_fd);
}

/* ---- the verifier on whole chains -------------------------------------- */

#define CHAIN 21
static char chain[CHAIN][256];
static size_t chain_len[CHAIN];

/* A genesis checkpoint and 20 requests, seq 1..21, epoch 0. */
static void
make_chain(const unsigned char k0[AUDITCHAIN_KEY_LEN])
{
	struct auditchain_state st;
	char body[128];

	memset(&st, 0, sizeof(st));
	chain_len[0] = seal_into(chain[0], sizeof(chain[0]), genesis_body, &st,
	                         k0);
	for (int i = 1; i < CHAIN; i++) {
		snprintf(body, sizeof(body),
		         "{\"type\":\"request\",\"id\":\"r%02d\",\"status\":%d",
		         i, 200 + i);
		chain_len[i] = seal_into(chain[i], sizeof(chain[i]), body, &st,
		                         k0);
	}
}

/* Feed idx[0..n) in order; the position of the first refusal, or n. */
static size_t
feed_order(struct auditchain_verifier *v, const int *idx, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!auditchain_verifier_feed(v, chain[idx[i]], chain_len[idx[i]],
		                              i == 0))
			return i;
	return n;
}

static void
test_chain_tamper(void)
{
	unsigned char k0[AUDITCHAIN_KEY_LEN];
	struct auditchain_verifier base, v;
	int idx[CHAIN + 1];
	size_t at, flips = 0, missed = 0, wrong_k = 0;
	char line[256];

	key_0_to_31(k0);
	make_chain(k0);

	for (int i = 0; i < CHAIN; i++)
		idx[i] = i;
	auditchain_verifier_init(&v, k0);
	at = feed_order(&v, idx, CHAIN);
	CHECK(at == CHAIN && v.records == CHAIN && v.checkpoints == 1 &&
	          v.tombstones == 0 && v.genesis && v.first_seq == 1 &&
	          v.st.seq == CHAIN && v.st.count == CHAIN,
	      "the untouched chain verifies (stopped at %zu: %s)", at, v.why);
	auditchain_verifier_wipe(&v);

	/* Every byte of every record, one at a time: refused at that record,
	 * and the records before it were accepted. */
	auditchain_verifier_init(&base, k0);
	for (int k = 0; k < CHAIN; k++) {
		for (size_t j = 0; j < chain_len[k]; j++) {
			memcpy(line, chain[k], chain_len[k]);
			line[j] ^= 0x01;
			v = base;
			flips++;
			if (auditchain_verifier_feed(&v, line, chain_len[k], k == 0)) {
				if (missed++ == 0)
					fprintf(stderr, "accepted: record %d byte %zu\n",
					        k, j);
			} else if (v.fault == AUDITCHAIN_OK) {
				wrong_k++;
			}
		}
		if (!auditchain_verifier_feed(&base, chain[k], chain_len[k], k == 0))
			wrong_k++;
	}
	CHECK(missed == 0 && wrong_k == 0 && flips > 20 * 100,
	      "%zu flipped bytes: %zu accepted, %zu misreported", flips, missed,
	      wrong_k);
	auditchain_verifier_wipe(&base);

	/* Record k deleted: refused at position k, seq k+2 where k+1 was
	 * expected. */
	missed = 0;
	for (int k = 1; k < CHAIN - 1; k++) {
		int n = 0;

		for (int i = 0; i < CHAIN; i++)
			if (i != k)
				idx[n++] = i;
		auditchain_verifier_init(&v, k0);
		at = feed_order(&v, idx, (size_t)n);
		if (at != (size_t)k || v.fault != AUDITCHAIN_FAULT_SEQ ||
		    v.expect_seq != (uint64_t)k + 1 ||
		    v.found_seq != (uint64_t)k + 2) {
			missed++;
			fprintf(stderr, "delete %d: stopped at %zu, fault %d, %s\n",
			        k, at, (int)v.fault, v.why);
		}
		auditchain_verifier_wipe(&v);
	}
	CHECK(missed == 0, "each deleted record reported at its index");

	/* The first record deleted: the file no longer opens with its
	 * checkpoint. */
	auditchain_verifier_init(&v, k0);
	idx[0] = 1;
	at = feed_order(&v, idx, 1);
	CHECK(at == 0 && v.fault == AUDITCHAIN_FAULT_START,
	      "the checkpoint deleted: %s", v.why);
	auditchain_verifier_wipe(&v);

	/* The last record deleted: the file alone cannot tell (a tail cut
	 * needs an external anchor, RELIABILITY section 4); the verifier
	 * says where the chain ends. */
	for (int i = 0; i < CHAIN; i++)
		idx[i] = i;
	auditchain_verifier_init(&v, k0);
	at = feed_order(&v, idx, CHAIN - 1);
	CHECK(at == CHAIN - 1 && v.st.seq == CHAIN - 1,
	      "a tail cut verifies, ending at seq %" PRIu64, v.st.seq);
	auditchain_verifier_wipe(&v);

	/* Records k and k+1 swapped: refused at position k. */
	missed = 0;
	for (int k = 1; k < CHAIN - 1; k++) {
		for (int i = 0; i < CHAIN; i++)
			idx[i] = i;
		idx[k] = k + 1;
		idx[k + 1] = k;
		auditchain_verifier_init(&v, k0);
		at = feed_order(&v, idx, CHAIN);
		if (at != (size_t)k || v.fault != AUDITCHAIN_FAULT_SEQ ||
		    v.expect_seq != (uint64_t)k + 1 ||
		    v.found_seq != (uint64_t)k + 2) {
			missed++;
			fprintf(stderr, "swap %d: stopped at %zu, fault %d, %s\n",
			        k, at, (int)v.fault, v.why);
		}
		auditchain_verifier_wipe(&v);
	}
	CHECK(missed == 0, "each swap reported at the first swapped record");

	/* Record k replayed right after itself: refused at position k+1;
	 * the checkpoint's copy already by its link (it names seq 0). */
	missed = 0;
	for (int k = 0; k < CHAIN; k++) {
		int n = 0;

		for (int i = 0; i < CHAIN; i++) {
			idx[n++] = i;
			if (i == k)
				idx[n++] = i;
		}
		auditchain_verifier_init(&v, k0);
		at = feed_order(&v, idx, (size_t)n);
		if (at != (size_t)k + 1 ||
		    (k == 0 ? v.fault != AUDITCHAIN_FAULT_LINK
		            : v.fault != AUDITCHAIN_FAULT_SEQ ||
		                  v.expect_seq != (uint64_t)k + 2 ||
		                  v.found_seq != (uint64_t)k + 1)) {
			missed++;
			fprintf(stderr, "replay %d: stopped at %zu, fault %d, %s\n",
			        k, at, (int)v.fault, v.why);
		}
		auditchain_verifier_wipe(&v);
	}
	CHECK(missed == 0, "each replayed record reported where it repeats");
}

/* An epoch holds AUDITCHAIN_EPOCH_RECORDS records; the next goes to the
 * next epoch's key, and the old key no longer seals anything there. */
static void
test_epoch_rollover(void)
{
	unsigned char k0[AUDITCHAIN_KEY_LEN], k1[AUDITCHAIN_KEY_LEN];
	struct auditchain_verifier v, w;
	struct auditchain_state st, saved;
	char line[256];
	size_t n, refused = 0;

	key_0_to_31(k0);
	memcpy(k1, k0, sizeof(k1));
	auditchain_key_next(k1);
	auditchain_verifier_init(&v, k0);
	memset(&st, 0, sizeof(st));
	n = seal_into(line, sizeof(line), genesis_body, &st, k0);
	if (!auditchain_verifier_feed(&v, line, n, true))
		refused++;
	while (st.seq < AUDITCHAIN_EPOCH_RECORDS) {
		n = seal_into(line, sizeof(line), "{\"type\":\"request\"", &st, k0);
		if (!auditchain_verifier_feed(&v, line, n, false))
			refused++;
	}
	CHECK(refused == 0 && v.records == AUDITCHAIN_EPOCH_RECORDS &&
	          v.st.epoch == 0 && v.st.count == AUDITCHAIN_EPOCH_RECORDS,
	      "%d records in epoch 0 (%zu refused: %s)",
	      AUDITCHAIN_EPOCH_RECORDS, refused, v.why);
	saved = st;

	/* One more in epoch 0. */
	w = v;
	n = seal_into(line, sizeof(line), "{\"type\":\"request\"", &st, k0);
	CHECK(!auditchain_verifier_feed(&w, line, n, false) &&
	          w.fault == AUDITCHAIN_FAULT_EPOCH &&
	          strstr(w.why, "more than 10000 records in epoch 0") != NULL,
	      "record 10001 in epoch 0: %s", w.why);

	/* Epoch 1 sealed with the epoch 0 key. */
	st = saved;
	st.epoch = 1;
	st.count = 0;
	w = v;
	n = seal_into(line, sizeof(line), "{\"type\":\"request\"", &st, k0);
	CHECK(!auditchain_verifier_feed(&w, line, n, false) &&
	          w.fault == AUDITCHAIN_FAULT_MAC,
	      "epoch 1 under the old key: %s", w.why);

	/* Epoch 1 under its own key, opened by a checkpoint naming the
	 * record before it: the count starts again. */
	{
		char body[256], hex[2 * AUDITCHAIN_MAC_LEN + 1];

		st = saved;
		st.epoch = 1;
		st.count = 0;
		hex_of(saved.mac, AUDITCHAIN_MAC_LEN, hex);
		snprintf(body, sizeof(body),
		         "{\"type\":\"checkpoint\",\"why\":\"epoch\","
		         "\"prev_seq\":%" PRIu64 ",\"prev_mac\":\"%s\"",
		         saved.seq, hex);
		n = seal_into(line, sizeof(line), body, &st, k1);
	}
	CHECK(auditchain_verifier_feed(&v, line, n, false) && v.st.epoch == 1 &&
	          v.st.count == 1 && v.kr.epoch == 1 && v.checkpoints == 2,
	      "the epoch checkpoint under the epoch 1 key: %s", v.why);
	n = seal_into(line, sizeof(line), "{\"type\":\"request\"", &st, k1);
	CHECK(auditchain_verifier_feed(&v, line, n, false) && v.st.count == 2 &&
	          v.st.seq == AUDITCHAIN_EPOCH_RECORDS + 2,
	      "and a request after it: %s", v.why);
	auditchain_verifier_wipe(&v);
}

/* Where verification may start, and what it will not start from. */
static void
test_verifier_start(void)
{
	unsigned char k0[AUDITCHAIN_KEY_LEN], k3[AUDITCHAIN_KEY_LEN];
	struct auditchain_keyring kr;
	struct auditchain_verifier v;
	struct auditchain_state st;
	char body[300], line[512], hex[2 * AUDITCHAIN_MAC_LEN + 1], zeros[65];
	size_t n;

	memset(zeros, '0', 64);
	zeros[64] = '\0';
	key_0_to_31(k0);
	auditchain_keyring_init(&kr, k0);
	CHECK(auditchain_keyring_seek(&kr, 3), "epoch 3");
	memcpy(k3, kr.key, sizeof(k3));
	auditchain_keyring_wipe(&kr);

	/* Not a sealed line at all. */
	auditchain_verifier_init(&v, k0);
	CHECK(!auditchain_verifier_feed(&v, "hello", 5, true) &&
	          v.fault == AUDITCHAIN_FAULT_FORMAT &&
	          strcmp(v.why, "not a sealed audit record: " W_END) == 0,
	      "garbage: %s", v.why);
	CHECK(!v.started && v.records == 0, "nothing accepted");
	auditchain_verifier_wipe(&v);

	/* A later file: its checkpoint names seq 41 in epoch 3. */
	memset(&st, 0, sizeof(st));
	st.seq = 41;
	st.epoch = 3;
	memset(st.mac, 0x5a, sizeof(st.mac));
	hex_of(st.mac, AUDITCHAIN_MAC_LEN, hex);
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"prev_seq\":41,\"prev_mac\":\"%s\"",
	         hex);
	n = seal_into(line, sizeof(line), body, &st, k3);
	auditchain_verifier_init(&v, k0);
	CHECK(auditchain_verifier_feed(&v, line, n, true) && !v.genesis &&
	          v.first_seq == 42 && v.st.seq == 42 && v.st.epoch == 3,
	      "a file starting at seq 42, epoch 3: %s", v.why);
	auditchain_verifier_wipe(&v);

	/* prev_seq 0 with a mac that is not zero: not the genesis, so an
	 * epoch other than 0 is no fault. */
	memset(&st, 0, sizeof(st));
	st.epoch = 3;
	memset(st.mac, 0x5a, sizeof(st.mac));
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"prev_seq\":0,\"prev_mac\":\"%s\"",
	         hex);
	n = seal_into(line, sizeof(line), body, &st, k3);
	auditchain_verifier_init(&v, k0);
	CHECK(auditchain_verifier_feed(&v, line, n, true) && !v.genesis &&
	          v.first_seq == 1,
	      "prev_seq 0 with a mac is not the genesis: %s", v.why);
	auditchain_verifier_wipe(&v);

	/* prev_seq 41 with an all-zero mac: not the genesis either. */
	memset(&st, 0, sizeof(st));
	st.seq = 41;
	st.epoch = 3;
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"prev_seq\":41,\"prev_mac\":\"%s\"",
	         zeros);
	n = seal_into(line, sizeof(line), body, &st, k3);
	auditchain_verifier_init(&v, k0);
	CHECK(auditchain_verifier_feed(&v, line, n, true) && !v.genesis &&
	          v.first_seq == 42,
	      "a zero mac after seq 41 is not the genesis: %s", v.why);
	auditchain_verifier_wipe(&v);

	/* A start past AUDITCHAIN_MAX_EPOCH: refused before any hashing
	 * (deriving that key would take 2^28 hashes). */
	memset(&st, 0, sizeof(st));
	st.seq = 41;
	st.epoch = AUDITCHAIN_MAX_EPOCH + 1;
	memset(st.mac, 0x5a, sizeof(st.mac));
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"prev_seq\":41,\"prev_mac\":\"%s\"",
	         hex);
	n = seal_into(line, sizeof(line), body, &st, k0);
	auditchain_verifier_init(&v, k0);
	CHECK(!auditchain_verifier_feed(&v, line, n, true) &&
	          v.fault == AUDITCHAIN_FAULT_EPOCH &&
	          strstr(v.why, "epoch 268435457 is out of range") != NULL &&
	          v.kr.epoch == 0,
	      "an implausible first epoch: %s", v.why);
	auditchain_verifier_wipe(&v);

	/* Mid-chain, a checkpoint with the right prev_seq and another
	 * prev_mac: the link is broken, whatever its own MAC says. */
	auditchain_verifier_init(&v, k0);
	memset(&st, 0, sizeof(st));
	n = seal_into(line, sizeof(line), genesis_body, &st, k0);
	CHECK(auditchain_verifier_feed(&v, line, n, true), "genesis");
	n = seal_into(line, sizeof(line), "{\"type\":\"request\"", &st, k0);
	CHECK(auditchain_verifier_feed(&v, line, n, false), "request");
	hex_of(st.mac, AUDITCHAIN_MAC_LEN, hex);
	hex[0] = hex[0] == '0' ? '1' : '0';
	snprintf(body, sizeof(body),
	         "{\"type\":\"checkpoint\",\"prev_seq\":2,\"prev_mac\":\"%s\"",
	         hex);
	n = seal_into(line, sizeof(line), body, &st, k0);
	CHECK(!auditchain_verifier_feed(&v, line, n, false) &&
	          v.fault == AUDITCHAIN_FAULT_LINK &&
	          strstr(v.why, "it follows seq 2") != NULL,
	      "same seq, other mac, same file: %s", v.why);
	CHECK(!auditchain_verifier_feed(&v, line, n, true) &&
	          v.fault == AUDITCHAIN_FAULT_LINK &&
	          strstr(v.why, "files missing, spliced or out of order") != NULL,
	      "same seq, other mac, next file: %s", v.why);
	CHECK(v.records == 2 && v.st.seq == 2, "the chain stays at seq 2");
	auditchain_verifier_wipe(&v);
}

int
main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_known_answers();
	test_seal_full();
	test_parse();
	test_key_files();
	test_reader_lines();
	test_reader_errors();
	test_reader_eintr();
	test_chain_tamper();
	test_epoch_rollover();
	test_verifier_start();
	if (harness_failed == 0) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return harness_done();
}
