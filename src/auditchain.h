/*
 * auditchain.h - the audit chain format, shared by the writer (audit.c)
 * and the offline commands (auditcmd.c): the key file, the epoch keys,
 * sealing a line with its chained MAC, reading a sealed line back, and
 * the rules a verifier applies. It owns no log file and no thread; the
 * writer and the commands decide where lines come from and go to.
 *
 * A sealed line is a JSON object whose last three members are always
 *   ,"seq":N,"epoch":E,"mac":"<64 hex>"}
 * in that order. The MAC is HMAC-SHA256 keyed with the epoch key over the
 * previous record's MAC (32 raw bytes) followed by every byte of the line
 * before ,"mac": so seq and epoch are sealed too. The fixed tail lets
 * both sides find what was sealed without re-serialising any JSON.
 */
#ifndef SCRIM_AUDITCHAIN_H
#define SCRIM_AUDITCHAIN_H

#include "buf.h"
#include "scrim.h"

#define AUDITCHAIN_KEY_LEN 32
#define AUDITCHAIN_MAC_LEN 32
/* An epoch ends after this many records or this long (the writer writes
 * an "epoch" checkpoint then), whichever comes first; its key is then
 * replaced by SHA-256("scrim-audit-epoch" || key) and erased. The
 * verifier enforces the count and that epochs only step by one, so a key
 * stolen at epoch E cannot re-seal anything sealed before E. */
#define AUDITCHAIN_EPOCH_RECORDS 10000
#define AUDITCHAIN_EPOCH_MS (15 * 60 * 1000)
/* Deriving epoch E costs E hashes: refuse numbers no writer reaches
 * (a year at 10k records/s is about 32M epochs). */
#define AUDITCHAIN_MAX_EPOCH ((uint64_t)1 << 28)
/* The longest line read back (records with stored bodies are large). */
#define AUDITCHAIN_MAX_LINE ((size_t)64 << 20)

/* Where a chain stands after a record: what the next record links to. */
struct auditchain_state {
	uint64_t seq;   /* last seq; 0 before the first record (genesis) */
	uint64_t epoch;
	uint64_t count; /* records sealed in this epoch */
	unsigned char mac[AUDITCHAIN_MAC_LEN]; /* all zero at genesis */
};

/* An epoch key that only moves forward; wiped when done. */
struct auditchain_keyring {
	unsigned char key[AUDITCHAIN_KEY_LEN];
	uint64_t epoch;
};

enum auditchain_type {
	AUDITCHAIN_REQUEST,
	AUDITCHAIN_CHECKPOINT,
	AUDITCHAIN_TOMBSTONE,
	AUDITCHAIN_OTHER,
};

/* A sealed line taken apart; offsets point into the caller's text. */
struct auditchain_line {
	enum auditchain_type type;
	size_t signed_len; /* bytes the MAC covers: before ,"mac": */
	size_t body_len;   /* bytes before ,"seq": */
	size_t core_len;   /* body without the trailing prev_* / resume_* */
	uint64_t seq, epoch;
	unsigned char mac[AUDITCHAIN_MAC_LEN];
	/* Checkpoints end their body with ,"prev_seq":N,"prev_mac":"hex":
	 * the record before them, possibly in the previous file. */
	bool has_prev;
	uint64_t prev_seq;
	unsigned char prev_mac[AUDITCHAIN_MAC_LEN];
	/* A tombstone written by `forget` may end with resume_seq, _epoch,
	 * _count and _mac: the original chain's end, which the record after
	 * it (in a file forget did not rewrite) links to. */
	bool has_resume;
	struct auditchain_state resume;
};

/*
 * Read the 32-byte key (64 hex digits) from path. With create, a missing
 * file is made with fresh random bytes, mode 0600. A file readable or
 * writable by group or others is refused. err is filled on failure.
 */
bool auditchain_key_load(const char *path, bool create,
                         unsigned char key[AUDITCHAIN_KEY_LEN], char *err,
                         size_t errlen) SCRIM_MUSTCHECK;

/* key := SHA-256("scrim-audit-epoch" || key), the old value erased. */
void auditchain_key_next(unsigned char key[AUDITCHAIN_KEY_LEN]);
void auditchain_keyring_init(struct auditchain_keyring *kr,
                             const unsigned char key0[AUDITCHAIN_KEY_LEN]);
/* Move forward to epoch; false if that is backwards or implausible. */
bool auditchain_keyring_seek(struct auditchain_keyring *kr,
                             uint64_t epoch) SCRIM_MUSTCHECK;
void auditchain_keyring_wipe(struct auditchain_keyring *kr);

/* HMAC-SHA256(key, a || b) into out; false only if OpenSSL fails. */
bool auditchain_hmac(const unsigned char key[AUDITCHAIN_KEY_LEN],
                     const void *a, size_t an, const void *b, size_t bn,
                     unsigned char out[AUDITCHAIN_MAC_LEN]) SCRIM_MUSTCHECK;

void auditchain_hex(const unsigned char *p, size_t n, char *out /* 2n+1 */);
/* 2n lower-case hex digits at s into out[0..n); false if any is not. */
bool auditchain_unhex(const char *s, size_t n,
                      unsigned char *out) SCRIM_MUSTCHECK;

/*
 * b->p[start..] holds a record body: '{' and members, no closing brace.
 * Append seq (st->seq + 1) and epoch (st->epoch), MAC it with key over
 * st->mac || those bytes, append the mac, "}" and a newline, and advance
 * st (seq, count, mac). The caller decides epochs. On false (the buffer
 * is full) st is unchanged and b->len should be put back to start.
 */
bool auditchain_seal(struct buf *b, size_t start, struct auditchain_state *st,
                     const unsigned char key[AUDITCHAIN_KEY_LEN])
	SCRIM_MUSTCHECK;

/* Take apart s[0..n) (no newline). false with *why when it is not a
 * sealed record; the JSON inside is not validated here. */
bool auditchain_parse(const char *s, size_t n, struct auditchain_line *l,
                      const char **why) SCRIM_MUSTCHECK;

/* The state a record leaves the chain in (its resume point, if any). */
void auditchain_after(const struct auditchain_line *l,
                      struct auditchain_state *st);

/*
 * Reads lines of at most AUDITCHAIN_MAX_LINE bytes from an fd it does not
 * own. next() returns 1 with a line (without its newline; *nl says if it
 * had one: only a file's last line may lack it), 0 at the end, -1 on a
 * read error or an over-long line (errno set).
 */
struct auditchain_reader {
	int fd;
	char *buf;
	size_t start, len, cap;
	bool eof;
	uint64_t lineno; /* of the line last returned, from 1 */
};
void auditchain_reader_init(struct auditchain_reader *r, int fd);
int auditchain_reader_next(struct auditchain_reader *r, const char **line,
                           size_t *n, bool *nl);
void auditchain_reader_free(struct auditchain_reader *r);

/* Why a record was refused; seq faults get a second look (auditcmd). */
enum auditchain_fault {
	AUDITCHAIN_OK,
	AUDITCHAIN_FAULT_FORMAT,  /* not a sealed record, or not JSON */
	AUDITCHAIN_FAULT_START,   /* a file does not open with a checkpoint */
	AUDITCHAIN_FAULT_LINK,    /* a checkpoint names another predecessor */
	AUDITCHAIN_FAULT_SEQ,
	AUDITCHAIN_FAULT_EPOCH,
	AUDITCHAIN_FAULT_MAC,
};

/*
 * The rules, one record at a time, in the order the records were
 * written. The first record must be a checkpoint: its prev_seq/prev_mac
 * say where the chain stands (genesis when both are zero, which must be
 * epoch 0); verification can start at any file that way.
 */
struct auditchain_verifier {
	unsigned char key0[AUDITCHAIN_KEY_LEN]; /* after a resume point the
	                                         * epoch may go back */
	struct auditchain_keyring kr;
	struct auditchain_state st; /* after the last record accepted */
	bool started;
	bool genesis;         /* the first record was the chain's first */
	uint64_t first_seq;
	uint64_t records, checkpoints, tombstones;
	struct auditchain_line last; /* offsets are stale; numbers are not */
	enum auditchain_fault fault;
	uint64_t expect_seq, found_seq; /* for AUDITCHAIN_FAULT_SEQ */
	char why[256];
};
void auditchain_verifier_init(struct auditchain_verifier *v,
                              const unsigned char key0[AUDITCHAIN_KEY_LEN]);
/* file_start: s is a file's first line. On false, v->fault and v->why. */
bool auditchain_verifier_feed(struct auditchain_verifier *v, const char *s,
                              size_t n, bool file_start) SCRIM_MUSTCHECK;
void auditchain_verifier_wipe(struct auditchain_verifier *v);

#endif
