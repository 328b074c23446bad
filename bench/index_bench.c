/*
 * index_bench.c - the document index's figures (bench/INDEX.md; run by
 * bench/index_bench.sh).
 *
 *   index_bench gen DIR BYTES QUERIES
 *       writes Markdown files totalling about BYTES into DIR, and QUERIES
 *       (a file, one query a line) drawn from the same text. The text is
 *       real prose (the licence texts and copyright files Debian ships,
 *       the test documents) cut into sentences, with a fifth of the words
 *       replaced by words of a synthetic Zipf-distributed vocabulary, so
 *       that a large corpus keeps growing its vocabulary the way real
 *       collections do instead of repeating one small text.
 *   index_bench query DB QUERIES [MODE [KEYFILE]]
 *       opens DB read-only and times vindex_search (k = 5) for every
 *       query: open and first search (which loads the signatures), then
 *       p50 / p90 / p99 / max over all queries, in microseconds. An
 *       encrypted index is opened with the key in KEYFILE.
 *
 * Deterministic: one fixed seed.
 */
#include "vindex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define BENCH_VOCAB 60000
#define BENCH_FILE_BYTES 24000

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint64_t
next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static size_t
rand_below(size_t n)
{
	return (size_t)(next_rand() % (n ? n : 1));
}

/* ---- the word pool ------------------------------------------------------------------ */

struct pool {
	char **w;
	size_t n, cap;
};

static void
pool_add_text(struct pool *p, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t a;

		while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' ||
		                 s[i] == '\r' || s[i] == '\f'))
			i++;
		a = i;
		while (i < n && !(s[i] == ' ' || s[i] == '\n' || s[i] == '\t' ||
		                  s[i] == '\r' || s[i] == '\f'))
			i++;
		if (i == a || i - a > 30)
			continue;
		if (p->n == p->cap) {
			p->cap = p->cap ? p->cap * 2 : 65536;
			p->w = realloc(p->w, p->cap * sizeof(char *));
			if (p->w == NULL)
				abort();
		}
		p->w[p->n] = malloc(i - a + 1);
		if (p->w[p->n] == NULL)
			abort();
		memcpy(p->w[p->n], s + a, i - a);
		p->w[p->n][i - a] = '\0';
		p->n++;
	}
}

static void
pool_add_file(struct pool *p, const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (f == NULL)
		return;
	buf = malloc(1 << 20);
	if (buf == NULL)
		abort();
	n = fread(buf, 1, 1 << 20, f);
	fclose(f);
	pool_add_text(p, buf, n);
	free(buf);
}

static void
pool_load(struct pool *p, const char *srcdir)
{
	static const char *const lic[] = {
		"Apache-2.0", "Artistic", "BSD", "CC0-1.0", "GFDL-1.3", "GPL-2",
		"GPL-3", "LGPL-2.1", "MPL-1.1", "MPL-2.0",
	};
	static const char *const mine[] = {
		"handbook.md", "oncall.org", "kitchen.html", "ratelimit.c",
		"meeting-notes.txt",
	};
	char path[4096];
	FILE *ls;

	for (size_t i = 0; i < sizeof(lic) / sizeof(lic[0]); i++) {
		snprintf(path, sizeof(path), "/usr/share/common-licenses/%s", lic[i]);
		pool_add_file(p, path);
	}
	for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
		snprintf(path, sizeof(path), "%s/tests/unit/vindex/%s", srcdir,
		         mine[i]);
		pool_add_file(p, path);
	}
	/* Every copyright file there is: more authors, more projects. */
	ls = popen("ls /usr/share/doc/*/copyright 2>/dev/null", "r");
	if (ls != NULL) {
		while (fgets(path, sizeof(path), ls) != NULL) {
			path[strcspn(path, "\n")] = '\0';
			pool_add_file(p, path);
		}
		pclose(ls);
	}
}

/* A synthetic word for rank r: syllables from its digits. */
static void
synth_word(size_t r, char *out, size_t len)
{
	static const char *const syl[] = {
		"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "da",
		"pe", "qui", "bro", "sta", "ver", "nol", "gra", "fen", "tul", "mor",
	};
	size_t o = 0;

	r += 20;
	while (r > 0 && o + 4 < len) {
		const char *s = syl[r % 20];
		size_t k = strlen(s);

		memcpy(out + o, s, k);
		o += k;
		r /= 20;
	}
	out[o] = '\0';
}

/* Zipf(1) rank in [0, n) by inverting the harmonic CDF approximately. */
static size_t
zipf(size_t n)
{
	double u = (double)(next_rand() >> 11) / 9007199254740992.0;
	/* H(n) ~ ln n + 0.577; rank ~ exp(u * H(n)) - 1 */
	double h = 0.5772;
	double x;
	size_t r;

	for (size_t k = n; k > 1; k /= 2)
		h += 0.6931471805599453; /* ln 2 per halving: ln n */
	x = u * h;
	/* exp by series is enough for a benchmark's word choice. */
	{
		double e = 1, t = 1;
		for (int i = 1; i < 40; i++) {
			t *= x / i;
			e += t;
		}
		r = (size_t)e - 1;
	}
	return r < n ? r : n - 1;
}

/* A sentence of real words with a fifth replaced. */
static size_t
sentence(const struct pool *p, char *out, size_t len)
{
	size_t at = rand_below(p->n), k = 8 + rand_below(22), o = 0;

	for (size_t i = 0; i < k && o + 40 < len; i++) {
		char syn[64];
		const char *w;

		if (rand_below(5) == 0) {
			synth_word(zipf(BENCH_VOCAB), syn, sizeof(syn));
			w = syn;
		} else {
			w = p->w[(at + i) % p->n];
		}
		o += (size_t)snprintf(out + o, len - o, "%s%s", i ? " " : "", w);
	}
	if (o + 2 < len) {
		out[o++] = '.';
		out[o] = '\0';
	}
	return o;
}

static int
cmd_gen(const char *dir, long long bytes, const char *qpath)
{
	struct pool p = {0};
	long long written = 0;
	FILE *qf;
	char s[2048];
	int nfile = 0, nq = 0;

	pool_load(&p, SCRIM_SOURCE_DIR);
	if (p.n < 1000) {
		fprintf(stderr, "index_bench: word pool too small (%zu)\n", p.n);
		return 1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	qf = fopen(qpath, "w");
	if (qf == NULL) {
		perror(qpath);
		return 1;
	}
	while (written < bytes) {
		char path[4096];
		FILE *f;
		long long fb = 0;

		snprintf(path, sizeof(path), "%s/d%03d", dir, nfile / 1000);
		mkdir(path, 0700);
		snprintf(path, sizeof(path), "%s/d%03d/doc%06d.md", dir,
		         nfile / 1000, nfile);
		f = fopen(path, "w");
		if (f == NULL) {
			perror(path);
			return 1;
		}
		sentence(&p, s, 80);
		fb += fprintf(f, "# %s\n\n", s);
		while (fb < BENCH_FILE_BYTES) {
			int npara = 2 + (int)rand_below(3);

			sentence(&p, s, 60);
			fb += fprintf(f, "## %s\n\n", s);
			for (int i = 0; i < npara; i++) {
				int nsent = 3 + (int)rand_below(5);

				for (int j = 0; j < nsent; j++) {
					size_t n = sentence(&p, s, sizeof(s));

					fb += fprintf(f, "%s%s", j ? " " : "", s);
					/* One query for every 40 sentences: a
					 * few consecutive words of it. */
					if (rand_below(40) == 0 && nq < 2000) {
						size_t a = rand_below(n / 2);
						int words = 3 + (int)rand_below(5);

						for (size_t c = a; c < n && words > 0; c++) {
							if (s[c] == ' ')
								words--;
							if (words > 0)
								fputc(s[c], qf);
						}
						/* The file it came from: the known
						 * item a search should find. */
						fprintf(qf, "\t/doc%06d.md\n", nfile);
						nq++;
					}
				}
				fb += fprintf(f, "\n\n");
			}
		}
		fclose(f);
		written += fb;
		nfile++;
	}
	fclose(qf);
	printf("%d files, %.1f MB, %d queries\n", nfile, (double)written / 1e6,
	       nq);
	for (size_t i = 0; i < p.n; i++)
		free(p.w[i]);
	free(p.w);
	return 0;
}

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* CPU time of this thread: what a query costs when it has the core to
 * itself, whatever else the machine is running. */
static double
cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int
cmd_query(const char *db, const char *qpath, const char *mode,
          const char *keyfile)
{
	char err[600], line[4096];
	struct vcrypt_key key = {0};
	struct vindex *vx;
	struct vindex_hit *h;
	size_t n, nq = 0, cap = 0, empty = 0;
	double t0, t1, c0, *lat = NULL, *cpu = NULL;
	FILE *qf = fopen(qpath, "r");
	char **qs = NULL, **want = NULL;
	size_t known = 0, found = 0;

	if (qf == NULL) {
		perror(qpath);
		return 1;
	}
	while (fgets(line, sizeof(line), qf) != NULL) {
		char *tab;

		line[strcspn(line, "\n")] = '\0';
		/* "query<TAB>expected": a file name ending ("/doc000012.md")
		 * or, in questions.tsv, a phrase (not checked here). */
		tab = strchr(line, '\t');
		if (tab != NULL)
			*tab++ = '\0';
		if (line[0] == '\0' || line[0] == '#')
			continue;
		if (nq == cap) {
			cap = cap ? cap * 2 : 1024;
			qs = realloc(qs, cap * sizeof(char *));
			want = realloc(want, cap * sizeof(char *));
			if (qs == NULL || want == NULL)
				abort();
		}
		want[nq] = tab != NULL && tab[0] == '/' ? strdup(tab) : NULL;
		qs[nq++] = strdup(line);
	}
	fclose(qf);
	if (keyfile != NULL && !vcrypt_key_load(keyfile, &key, err, sizeof(err))) {
		fprintf(stderr, "index_bench: %s\n", err);
		return 1;
	}
	t0 = now_us();
	vx = vindex_open(db, true, &key, err, sizeof(err));
	vcrypt_key_wipe(&key);
	if (vx == NULL) {
		fprintf(stderr, "index_bench: %s\n", err);
		return 1;
	}
	if (mode != NULL && strcmp(mode, "bm25") == 0)
		vindex_set_mode(vx, VINDEX_BM25);
	else if (mode != NULL && strcmp(mode, "vector") == 0)
		vindex_set_mode(vx, VINDEX_VECTOR);
	if (vindex_search(vx, "warm up", 5, &h, &n) != 0) {
		fprintf(stderr, "index_bench: %s\n", vindex_error(vx));
		return 1;
	}
	vindex_hits_free(h, n);
	t1 = now_us();
	printf("open + first search: %.1f ms\n", (t1 - t0) / 1e3);
	lat = malloc(nq * 2 * sizeof(double));
	cpu = malloc(nq * 2 * sizeof(double));
	if (lat == NULL || cpu == NULL)
		abort();
	/* Two passes: the second is what a long-running gateway sees. */
	for (size_t pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < nq; i++) {
			c0 = cpu_us();
			t0 = now_us();
			if (vindex_search(vx, qs[i], 5, &h, &n) != 0) {
				fprintf(stderr, "index_bench: %s\n", vindex_error(vx));
				return 1;
			}
			t1 = now_us();
			cpu[pass * nq + i] = cpu_us() - c0;
			empty += n == 0;
			if (pass == 0 && want[i] != NULL) {
				size_t wl = strlen(want[i]);

				known++;
				for (size_t j = 0; j < n; j++) {
					size_t fl = strlen(h[j].file);
					if (fl >= wl &&
					    strcmp(h[j].file + fl - wl, want[i]) == 0) {
						found++;
						break;
					}
				}
			}
			vindex_hits_free(h, n);
			lat[pass * nq + i] = t1 - t0;
		}
	}
	qsort(lat, nq * 2, sizeof(double), cmp_double);
	qsort(cpu, nq * 2, sizeof(double), cmp_double);
	{
		size_t m = nq * 2;
		double sum = 0;

		for (size_t i = 0; i < m; i++)
			sum += lat[i];
		printf("queries %zu (x2), mode %s%s: mean %.0f us, p50 %.0f us, p90 "
		       "%.0f us, p99 %.0f us, max %.0f us; %zu without hits\n",
		       nq, mode ? mode : "hybrid", keyfile ? ", encrypted" : "",
		       sum / (double)m, lat[m / 2],
		       lat[m * 9 / 10], lat[m * 99 / 100], lat[m - 1], empty / 2);
		printf("  same, CPU time: p50 %.0f us, p90 %.0f us, p99 %.0f us, "
		       "max %.0f us\n",
		       cpu[m / 2], cpu[m * 9 / 10], cpu[m * 99 / 100], cpu[m - 1]);
		if (known > 0)
			printf("known-item recall@5 (the query's source file in "
			       "the top 5): %zu/%zu = %.3f\n",
			       found, known, (double)found / (double)known);
	}
	for (size_t i = 0; i < nq; i++) {
		free(qs[i]);
		free(want[i]);
	}
	free(qs);
	free(want);
	free(lat);
	free(cpu);
	vindex_close(vx);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc >= 5 && strcmp(argv[1], "gen") == 0)
		return cmd_gen(argv[2], strtoll(argv[3], NULL, 10), argv[4]);
	if (argc >= 4 && strcmp(argv[1], "query") == 0)
		return cmd_query(argv[2], argv[3], argc >= 5 ? argv[4] : NULL,
		                 argc >= 6 ? argv[5] : NULL);
	fprintf(stderr, "usage: index_bench gen DIR BYTES QUERIES\n"
	                "       index_bench query DB QUERIES [hybrid|bm25|"
	                "vector [KEYFILE]]\n");
	return 2;
}
