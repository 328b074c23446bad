/*
 * ratelimit.c - a token bucket per client, for the upload service.
 *
 * Each client has a bucket that holds at most `burst` tokens and refills
 * at `rate` tokens per second. A request takes one token; when the bucket
 * is empty the request is refused with 429 and a Retry-After header that
 * says when the next token arrives.
 */
#include <stdint.h>
#include <time.h>

struct bucket {
	double tokens;          /* tokens left, fractional */
	double rate;            /* tokens added per second */
	double burst;           /* most tokens the bucket holds */
	int64_t last_ns;        /* when tokens was last brought up to date */
};

/* Bring the bucket up to date: add the tokens earned since last_ns, but
 * never more than burst, so an idle client cannot save up unlimited
 * requests. */
static void
bucket_refill(struct bucket *b, int64_t now_ns)
{
	double elapsed = (double)(now_ns - b->last_ns) / 1e9;

	b->tokens += elapsed * b->rate;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	b->last_ns = now_ns;
}

/* Take one token. Returns 0 when allowed; otherwise the number of
 * milliseconds until a token is available, for Retry-After. */
int64_t
bucket_take(struct bucket *b, int64_t now_ns)
{
	bucket_refill(b, now_ns);
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return 0;
	}
	return (int64_t)((1.0 - b->tokens) / b->rate * 1000.0) + 1;
}

/* Clock jumps: a monotonic clock never goes backwards, so elapsed time is
 * never negative; the wall clock could jump back after an NTP step and
 * would then drain the bucket. */
int64_t
bucket_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
