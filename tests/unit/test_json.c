/* test_json.c - the JSON rewriter: byte-exact pass-through, replacement,
 * paths, and every kind of invalid input refused. */
#include "buf.h"
#include "harness.h"
#include "json.h"

#include <stdlib.h>
#include <string.h>

static enum json_cb_result
upper_content(void *arg, const struct json_path *p, const char *s, size_t n,
              struct buf *repl)
{
	const struct json_seg *last = json_path_last(p);
	(void)arg;
	if (last == NULL || last->key_len != 7 ||
	    memcmp(last->key, "content", 7) != 0)
		return JSON_KEEP;
	for (size_t i = 0; i < n; i++) {
		char c = s[i] >= 'a' && s[i] <= 'z' ? (char)(s[i] - 32) : s[i];
		if (!buf_addc(repl, c))
			return JSON_CB_ERROR;
	}
	return JSON_REPLACE;
}

static enum json_result
run(const char *in, size_t n, struct buf *out, size_t *rep)
{
	size_t pos;
	buf_reset(out);
	return json_rewrite(in, n, upper_content, NULL, out, 1 << 20, rep, &pos);
}

static void
check_valid(const char *in, const char *want)
{
	struct buf out;
	size_t rep;
	enum json_result r;

	buf_init(&out, 1 << 20);
	r = run(in, strlen(in), &out, &rep);
	CHECK(r == JSON_OK, "valid: %s (got %d)", in, r);
	if (r == JSON_OK)
		CHECK(out.len == strlen(want) && memcmp(out.p, want, out.len) == 0,
		      "rewrite of %s gave %.*s", in, (int)out.len, out.p);
	buf_free(&out);
}

static void
check_invalid(const char *in, size_t n, enum json_result want)
{
	struct buf out;
	size_t rep;
	enum json_result r;

	buf_init(&out, 1 << 20);
	r = run(in, n, &out, &rep);
	CHECK(r == want, "invalid input %.*s: got %d want %d", (int)n, in, r,
	      want);
	buf_free(&out);
}

/* json_escape_into against a byte-at-a-time reference, on strings built
 * to put escapes at every offset around the 16-byte blocks of the SIMD
 * path (this file is also built without SIMD: both must agree). */
static void
check_escape(void)
{
	static const unsigned char pick[] = {'a', ' ', '"', '\\', '\n', 0x01,
	                                     0x1f, 0x7f, 0x80, 0xc3, 0xe9, 0xff};
	unsigned seed = 12345;
	int bad = 0;

	for (int t = 0; t < 4000 && bad == 0; t++) {
		unsigned char in[80];
		size_t n = (size_t)(t % 80);
		struct buf got, want;
		static const char hx[] = "0123456789abcdef";
		bool ok = true;

		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			/* Mostly plain text, so that blocks run clean. */
			in[i] = (seed >> 16) % 8 ? 'a' + (unsigned char)((seed >> 8) % 26)
			                         : pick[(seed >> 20) % sizeof(pick)];
		}
		buf_init(&got, 1 << 16);
		buf_init(&want, 1 << 16);
		CHECK(json_escape_into(&got, (const char *)in, n), "escape %d", t);
		for (size_t i = 0; i < n; i++) {
			unsigned char c = in[i];
			char e[7];
			if (c == '"' || c == '\\') {
				e[0] = '\\', e[1] = (char)c;
				ok = ok && buf_add(&want, e, 2);
			} else if (c < 0x20) {
				const char *named = c == '\n' ? "\\n" : NULL;
				if (named != NULL) {
					ok = ok && buf_add(&want, named, 2);
				} else {
					memcpy(e, "\\u00", 4);
					e[4] = hx[c >> 4];
					e[5] = hx[c & 15];
					ok = ok && buf_add(&want, e, 6);
				}
			} else {
				ok = ok && buf_addc(&want, (char)c);
			}
		}
		if (!ok || got.len != want.len ||
		    (got.len > 0 && memcmp(got.p, want.p, got.len) != 0))
			bad = t + 1;
		buf_free(&got);
		buf_free(&want);
	}
	CHECK(bad == 0, "json_escape_into matches the reference (case %d)", bad - 1);
}

/* Each string value, decoded, joined with '|': what callbacks see. */
static enum json_cb_result
collect(void *arg, const struct json_path *p, const char *s, size_t n,
        struct buf *repl)
{
	struct buf *seen = arg;
	(void)p;
	(void)repl;
	if (!buf_add(seen, s, n) || !buf_addc(seen, '|'))
		return JSON_CB_ERROR;
	return JSON_KEEP;
}

static void
check_decoded(const char *in, size_t max_string, enum json_result want_r,
              const char *want)
{
	struct buf seen;
	size_t pos;
	enum json_result r;

	buf_init(&seen, 1 << 20);
	r = json_walk(in, strlen(in), collect, NULL, &seen, max_string, &pos);
	CHECK(r == want_r, "walk of %s: got %d want %d", in, r, want_r);
	if (r == JSON_OK)
		CHECK(seen.len == strlen(want) && memcmp(seen.p, want, seen.len) == 0,
		      "decoded strings of %s: %.*s", in, (int)seen.len,
		      seen.p ? seen.p : "");
	buf_free(&seen);
}

int
main(void)
{
	check_escape();
	/* Strings without escapes reach the callback in place, the others
	 * decoded from their first escape on: long plain runs (past the
	 * 16-byte scan), UTF-8 either side of an escape, an escaped string
	 * followed by a plain one (nothing of the first left over), keys. */
	check_decoded("{\"k\":\"plain text longer than sixteen bytes\",\"e\":\"\"}",
	              64, JSON_OK, "plain text longer than sixteen bytes||");
	check_decoded("[\"caf\xc3\xa9 and a long plain prefix \\n then \xe2\x82\xac "
	              "and \\u00e9\\\" end\", \"next plain one\", \"x\\/y\"]",
	              256, JSON_OK,
	              "caf\xc3\xa9 and a long plain prefix \n then \xe2\x82\xac and "
	              "\xc3\xa9\" end|next plain one|x/y|");
	check_decoded("{\"a\\u0062\":[\"\\u0041\",\"z\"]}", 8, JSON_OK,
	              "A|z|");
	/* max_string holds whether or not the string was copied. */
	check_decoded("[\"0123456789\"]", 10, JSON_OK, "0123456789|");
	check_decoded("[\"0123456789a\"]", 10, JSON_TOO_BIG, "");
	check_decoded("[\"0123456789\\na\"]", 10, JSON_TOO_BIG, "");
	check_valid("{\"a\": 0.7, \"b\" : [1, 2e-3, -0, true, false, null]}",
	            "{\"a\": 0.7, \"b\" : [1, 2e-3, -0, true, false, null]}");
	check_valid("{\"messages\":[{\"role\":\"user\",\"content\":\"hi \\u00e9\"}]}",
	            "{\"messages\":[{\"role\":\"user\",\"content\":\"HI \xc3\xa9\"}]}");
	check_valid("{\"content\":\"a\\\"b\\\\c\\n\\u0000d\"}",
	            "{\"content\":\"A\\\"B\\\\C\\n\\u0000D\"}");
	check_valid("{\"content\":\"\\ud83d\\ude00\"}",
	            "{\"content\":\"\xf0\x9f\x98\x80\"}");
	check_valid("  \"content\"  ", "  \"content\"  ");
	check_valid("[]", "[]");
	check_valid("{}", "{}");
	check_valid("{\"x\":{},\"content\":\"q\"}", "{\"x\":{},\"content\":\"Q\"}");

	check_invalid("{\"a\":1,}", 8, JSON_INVALID);
	check_invalid("[1 2]", 5, JSON_INVALID);
	check_invalid("{\"a\" 1}", 7, JSON_INVALID);
	check_invalid("{\"a\":01}", 8, JSON_INVALID);
	check_invalid("{\"a\":1.}", 8, JSON_INVALID);
	check_invalid("{\"a\":tru}", 9, JSON_INVALID);
	check_invalid("{\"a\":\"\\ud800\"}", 14, JSON_INVALID);
	check_invalid("{\"a\":\"\\udc00\"}", 14, JSON_INVALID);
	check_invalid("{\"a\":\"\\ud800\\u0041\"}", 20, JSON_INVALID);
	check_invalid("{\"a\":\"\\x\"}", 10, JSON_INVALID);
	check_invalid("{\"a\":\"\xc3\x28\"}", 10, JSON_INVALID);
	check_invalid("{\"a\":\"\xed\xa0\x80\"}", 11, JSON_INVALID);
	check_invalid("{\"a\":\"\xf5\x80\x80\x80\"}", 12, JSON_INVALID);
	check_invalid("{\"a\":\"tab\there\"}", 15, JSON_INVALID);
	check_invalid("{\"a\":\"unterminated", 18, JSON_INVALID);
	check_invalid("{} x", 4, JSON_INVALID);
	check_invalid("", 0, JSON_INVALID);
	check_invalid("{\"a\":1}\0", 8, JSON_INVALID);

	/* Depth: 64 fits, 65 does not, a million does not crash. */
	{
		size_t n = 1000000;
		char *deep = malloc(2 * n);
		for (size_t i = 0; i < n; i++) {
			deep[i] = '[';
			deep[2 * n - 1 - i] = ']';
		}
		struct buf out;
		buf_init(&out, 1 << 20);
		CHECK(json_rewrite(deep + n - 64, 128, NULL, NULL, &out, 1 << 20,
		                   NULL, NULL) == JSON_OK, "depth 64 ok");
		CHECK(json_rewrite(deep + n - 65, 130, NULL, NULL, &out, 1 << 20,
		                   NULL, NULL) == JSON_TOO_DEEP, "depth 65 refused");
		CHECK(json_rewrite(deep, 2 * n, NULL, NULL, &out, 1 << 20, NULL,
		                   NULL) == JSON_TOO_DEEP, "depth 10^6 refused");
		buf_free(&out);
		free(deep);
	}
	/* Output cap. */
	{
		struct buf out;
		const char *in = "{\"content\":\"abcdefgh\"}";
		buf_init(&out, 10);
		CHECK(json_rewrite(in, strlen(in), upper_content, NULL, &out, 100,
		                   NULL, NULL) == JSON_TOO_BIG, "output cap");
		buf_free(&out);
	}
	return harness_done();
}
