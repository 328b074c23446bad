/*
 * audit_bench.c - how many records per second the audit writer sustains,
 * and what audit_write costs the caller (the event loop). It writes N
 * typical records as fast as the bounded queue takes them (a full queue
 * is waited out, as a loop at saturation would see it), and times until
 * the writer reports all of them written. Then `scrim audit verify` runs
 * over the file. Build: cmake --build build --target audit_bench.
 *
 *   audit_bench [--fsync always|interval|never] [--records N]
 *               [--queue N] [--dir DIR] [--body BYTES] [--rate N]
 *               [--syslog]
 *
 * --rate N paces the writes at N per second (as a loop finishing N
 * requests a second would) instead of as fast as possible: the figure
 * that matters then is what audit_write adds to the loop.
 */
#include "audit.h"
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static long
num(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v <= 0) {
		fprintf(stderr, "audit_bench: '%s' is not a positive number\n", s);
		exit(2);
	}
	return v;
}

int
main(int argc, char **argv)
{
	static const struct audit_count red[] = {{"email", 2}, {"phone", 1}};
	static const struct audit_count rules[] = {{"contact.email", 2},
	                                           {"contact.phone", 1}};
	static const char *const ctx[] = {"kb-12#3"};
	const char *mode = "interval", *dirarg = NULL;
	long records = 200000, queue = 10000, body = 0, rate = 0;
	bool use_syslog = false;
	char dir[256] = "/var/tmp/scrim-audit-bench-XXXXXX", file[300],
	     key[300], err[256], id[32], *bodybuf = NULL;
	struct scrim_config cfg;
	struct audit_record r;
	struct audit_stats st;
	struct audit *a;
	uint64_t *lat, t0, t1, t2, full_waits = 0;
	char *vargv[5];

	for (int i = 1; i < argc; i++) {
		bool more = i + 1 < argc;
		if (strcmp(argv[i], "--fsync") == 0 && more)
			mode = argv[++i];
		else if (strcmp(argv[i], "--records") == 0 && more)
			records = num(argv[++i]);
		else if (strcmp(argv[i], "--queue") == 0 && more)
			queue = num(argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && more)
			dirarg = argv[++i];
		else if (strcmp(argv[i], "--body") == 0 && more)
			body = num(argv[++i]);
		else if (strcmp(argv[i], "--rate") == 0 && more)
			rate = num(argv[++i]);
		else if (strcmp(argv[i], "--syslog") == 0)
			use_syslog = true;
		else {
			fprintf(stderr, "usage: audit_bench [--fsync always|interval|"
			                "never] [--records N] [--queue N] [--dir DIR] "
			                "[--body BYTES] [--rate N] [--syslog]\n");
			return 2;
		}
	}
	if (dirarg != NULL)
		snprintf(dir, sizeof(dir), "%s", dirarg);
	else if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(file, sizeof(file), "%s/audit.jsonl", dir);
	snprintf(key, sizeof(key), "%s/audit.key", dir);
	memset(&cfg, 0, sizeof(cfg));
	cfg.audit_on = true;
	cfg.audit_file = file;
	cfg.audit_key_file = key;
	cfg.audit_fsync = strcmp(mode, "always") == 0   ? 0
	                  : strcmp(mode, "interval") == 0 ? 1
	                                                  : 2;
	cfg.audit_fsync_interval_ms = 1000;
	cfg.audit_client_address = 1;
	cfg.audit_queue = queue;
	cfg.audit_store_bodies = body > 0;
	cfg.audit_syslog = use_syslog;
	cfg.state_dir = dir;
	if (body > 0) {
		bodybuf = malloc((size_t)body);
		memset(bodybuf, 'x', (size_t)body);
	}
	a = audit_open(&cfg, NULL, err, sizeof(err));
	if (a == NULL) {
		fprintf(stderr, "audit_bench: %s\n", err);
		return 1;
	}
	lat = calloc((size_t)records, sizeof(uint64_t));
	memset(&r, 0, sizeof(r));
	r.key_id = "team-a";
	r.client_addr = "203.0.113.77:5555";
	r.way_in = "base_url";
	r.method = "POST";
	r.path = "/v1/chat/completions";
	r.provider = "openai";
	r.model = "gpt-4o-mini";
	r.status = 200;
	r.decision = "forwarded";
	r.bytes_in = 2048;
	r.bytes_out = 4096;
	r.tokens_in = 500;
	r.tokens_out = 900;
	r.cost_usd = 0.00061;
	r.redactions = red;
	r.nredactions = 2;
	r.rules = rules;
	r.nrules = 2;
	r.context_ids = ctx;
	r.ncontext = 1;
	r.ms_total = 812;
	r.ms_upstream = 790;
	r.us_scrub = 412;
	r.request_id = id;
	r.scrubbed_request = bodybuf;
	r.scrubbed_request_len = (size_t)body;

	t0 = now_ns();
	for (long i = 0; i < records; i++) {
		uint64_t s;

		if (rate > 0) {
			uint64_t due = t0 + (uint64_t)i * 1000000000u / (uint64_t)rate;
			struct timespec ts = {(time_t)(due / 1000000000u),
			                      (long)(due % 1000000000u)};
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}
		snprintf(id, sizeof(id), "r%016lx", (unsigned long)i);
		r.time_ms = 1700000000000ULL + (uint64_t)i;
		for (;;) {
			bool ok;
			s = now_ns();
			ok = audit_write(a, &r);
			lat[i] = now_ns() - s;
			if (ok)
				break;
			/* Queue full: a loop at this rate would refuse (block)
			 * or count (continue); the bench waits to measure the
			 * writer, not the refusals. */
			full_waits++;
			usleep(200);
		}
	}
	t1 = now_ns();
	do {
		audit_get_stats(a, &st);
		if (st.written < (uint64_t)records)
			usleep(500);
	} while (st.written < (uint64_t)records);
	t2 = now_ns();
	audit_close(a);
	qsort(lat, (size_t)records, sizeof(uint64_t), cmp_u64);
	if (rate > 0)
		printf("fsync=%s records=%ld queue=%ld body=%ld rate=%ld/s\n", mode,
		       records, queue, body, rate);
	else
		printf("fsync=%s records=%ld queue=%ld body=%ld rate=max\n", mode,
		       records, queue, body);
	printf("writer: %.0f records/s sustained (%.2f s for all to be "
	       "written%s)\n",
	       (double)records * 1e9 / (double)(t2 - t0),
	       (double)(t2 - t0) / 1e9, cfg.audit_fsync == 0 ? ", fdatasync per "
	                                                       "batch" : "");
	printf("audit_write on the caller: p50 %.1f us, p99 %.1f us, max %.1f us "
	       "(queue-full waits: %" PRIu64 ", producer done after %.2f s)\n",
	       (double)lat[records / 2] / 1e3,
	       (double)lat[(size_t)records * 99 / 100] / 1e3,
	       (double)lat[records - 1] / 1e3, full_waits,
	       (double)(t1 - t0) / 1e9);
	vargv[0] = "verify";
	vargv[1] = "--key";
	vargv[2] = key;
	vargv[3] = file;
	vargv[4] = NULL;
	t0 = now_ns();
	fflush(stdout);
	if (audit_cmd(4, vargv) != 0)
		return 1;
	t1 = now_ns();
	printf("verify: %.0f records/s\n",
	       (double)(records + 2) * 1e9 / (double)(t1 - t0));
	if (dirarg == NULL) {
		unlink(file);
		unlink(key);
		char anchor[320];
		snprintf(anchor, sizeof(anchor), "%s.anchor", file);
		unlink(anchor);
		rmdir(dir);
	}
	free(lat);
	free(bodybuf);
	return 0;
}
