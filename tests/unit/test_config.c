/*
 * test_config.c - the config reader: the shipped default loads, every
 * kind of mistake is refused with its line, ${VAR} expansion, units.
 */
#include "config.h"
#include "embed.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[] = "/tmp/scrim-test-config-XXXXXX";

static struct scrim_config *
load_text(const char *text)
{
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	/* Errors go to stderr, where a failing run shows them. */
	return config_load(path, true);
}

static const char base[] = "[gateway]\nlisten = 127.0.0.1:1\n"
                           "admin_listen = 127.0.0.1:2\n"
                           "[provider p]\nbase_url = http://127.0.0.1:3/v1/\n"
                           "auth_header = none\n"
                           "[route r]\nprefix = /v1/\nprovider = p\n";

static void
test_default(void)
{
	struct scrim_config *c = config_load(SCRIM_SOURCE_DIR "/conf/scrim.conf",
	                                     true);
	CHECK(c != NULL, "conf/scrim.conf loads");
	if (c == NULL)
		return;
	CHECK(strcmp(c->listen, "127.0.0.1:8080") == 0, "default listen");
	CHECK(!c->auth_off, "auth on by default");
	CHECK(c->max_body_size == 8 * 1024 * 1024, "8m body cap");
	CHECK(c->header_timeout_ms == 10000, "10s header deadline");
	CHECK(c->nproviders == 3 && c->nroutes == 4, "providers and routes");
	CHECK(strcmp(c->routes[0].strip, "/v1") == 0, "default strip");
	config_unref(c);
}

static void
test_good(void)
{
	struct scrim_config *c;

	setenv("SCRIM_T_URL", "http://127.0.0.1:9", 1);
	setenv("SCRIM_T_KEY", "sk-test-abc", 1);
	c = load_text("[gateway]\nlisten = 127.0.0.1:1\nadmin_listen = "
	              "127.0.0.1:2\nmax_body_size = 64k\nheader_timeout = 250ms\n"
	              "[keys]\nalice = sha256:"
	              "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
	              "[provider p]\nbase_url = ${SCRIM_T_URL}/v1\n"
	              "api_key_env = SCRIM_T_KEY\n"
	              "header = a-b: c; d # e\nheader = x: ${UNSET_VAR_T:-dflt}\n"
	              "[route r]\nprefix = /v1/\nmodels = gpt-* o[0-9]*\n"
	              "provider = p\n");
	CHECK(c != NULL, "good config loads");
	if (c == NULL)
		return;
	CHECK(c->max_body_size == 65536, "size units");
	CHECK(c->header_timeout_ms == 250, "ms durations");
	CHECK(c->nkeys == 1 && strcmp(c->keys[0].id, "alice") == 0, "keys");
	CHECK(strcmp(c->providers[0].base_url, "http://127.0.0.1:9/v1") == 0,
	      "${VAR} expansion");
	CHECK(c->providers[0].api_key &&
	      strcmp(c->providers[0].api_key, "sk-test-abc") == 0,
	      "key from env");
	CHECK(c->providers[0].nheaders == 2 &&
	      strcmp(c->providers[0].headers[0], "a-b: c; d # e") == 0,
	      "';' and '#' inside values");
	CHECK(strcmp(c->providers[0].headers[1], "x: dflt") == 0,
	      "${VAR:-fallback}");
	CHECK(c->routes[0].nmodels == 2 && c->routes[0].provider ==
	      &c->providers[0], "route resolved");
	config_unref(c);
}

static void
test_bad(void)
{
	static const char *const bad[] = {
	    "[gateway]\nbogus = 1\n",
	    "[gateway]\nmax_body_size = lots\n",
	    "[gateway]\nheader_timeout = 10\n",
	    "[gateway]\nlisten = nowhere\n",
	    "[gateway]\nlisten = 0.0.0.0:8080\nauth = off\n",
	    "[gateway]\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:2\n",
	    "[nonsense]\n",
	    "key = value\n",
	    "[gateway\n",
	    "[keys]\nbob = 0123\n",
	    "[keys]\nbob = sha256:zz\n",
	    "[provider p]\nbase_url = ftp://x\n[route r]\nprefix = /\nprovider = p\n",
	    "[provider p]\nbase_url = http://x\napi_key = sk-plain\n",
	    "[provider p]\nbase_url = http://x\nheader = no colon\n",
	    "[provider p]\nbase_url = http://x\n[provider p]\nbase_url = http://y\n",
	    "[route r]\nprefix = /v1/\nprovider = missing\n",
	    "[route r]\nprefix = v1\nprovider = p\n[provider p]\nbase_url = http://x\n",
	    "[provider p]\nbase_url = ${SCRIM_NOT_SET_EVER}\n",
	    "[provider p]\nbase_url = http://x\napi_key_file = /nonexistent/key\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scrim_config *c = load_text(bad[i]);
		CHECK(c == NULL, "bad config %zu refused", i);
		config_unref(c);
	}
}

/* [index] and [index NAME]: the embedder of each index. */
static void
test_index(void)
{
	char text[2048];
	struct scrim_config *c;
	const struct cfg_index *ix;
	struct embed_conf ec;
	static const char *const bad[] = {
	    "[index]\nembedder = openai\n",                      /* no url */
	    "[index]\nembedder = openai\nembed_url = http://127.0.0.1:1/v1\n",
	    "[index]\nembedder = openai\nembed_model = m\n"
	    "embed_url = http://10.1.2.3:1/v1\n",               /* not local */
	    "[index]\nembedder = openai\nembed_model = m\n"
	    "embed_url = ftp://127.0.0.1/\n",
	    "[index]\nembedder = openai\nembed_model = a b\n"
	    "embed_url = http://127.0.0.1:1/v1\n",
	    "[index]\nembedder = word2vec\n",
	    "[index]\ndim = 500\n",
	    "[index]\nembed_api_key = sk-plain\n",
	    "[index]\n[index]\n",
	    "[index a.b]\n",
	    "[index t]\n[index t]\n",
	};

	snprintf(text, sizeof(text), "%s[index]\ndim = 256\n"
	         "[index team]\nembedder = openai\n"
	         "embed_url = http://localhost:11434/v1/\nembed_model = "
	         "nomic-embed-text:latest\nembed_batch = 8\n"
	         "embed_query_timeout = 500ms\n"
	         "[index far]\nembedder = openai\nembed_remote = yes\n"
	         "embed_url = https://embed.example/v1\nembed_model = m\n"
	         "embed_api_key_env = SCRIM_T_KEY\n", base);
	setenv("SCRIM_T_KEY", "sk-test-abc", 1);
	c = load_text(text);
	CHECK(c != NULL, "[index] sections load");
	if (c == NULL)
		return;
	ix = config_index(c, "default");
	CHECK(ix == &c->index && ix->embedder == EMBED_BUILTIN && ix->dim == 256,
	      "an index without a section takes [index]");
	ix = config_index(c, "team");
	CHECK(ix != &c->index && ix->embedder == EMBED_OPENAI &&
	      ix->embed_batch == 8 && ix->dim == 512,
	      "[index team] starts from the defaults");
	config_embed_conf(ix, true, &ec);
	CHECK(ec.kind == EMBED_OPENAI && ec.timeout_ms == 500 &&
	      !ec.verbose_errors && ec.api_key == NULL &&
	      strcmp(ec.model, "nomic-embed-text:latest") == 0,
	      "query embed conf");
	config_embed_conf(ix, false, &ec);
	CHECK(ec.timeout_ms == 60000 && ec.verbose_errors, "index embed conf");
	ix = config_index(c, "far");
	CHECK(ix->embed_api_key != NULL &&
	      strcmp(ix->embed_api_key, "sk-test-abc") == 0,
	      "embed_remote = yes takes a remote endpoint, key from env");
	config_unref(c);
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(bad); i++) {
		snprintf(text, sizeof(text), "%s%s", base, bad[i]);
		c = load_text(text);
		CHECK(c == NULL, "bad [index] %zu refused", i);
		config_unref(c);
	}
}

static void
test_units(void)
{
	long v;
	CHECK(config_parse_duration("1.5s", &v) && v == 1500, "1.5s");
	CHECK(config_parse_duration("2m", &v) && v == 120000, "2m");
	CHECK(!config_parse_duration("2", &v), "unitless duration refused");
	CHECK(!config_parse_duration("-1s", &v), "negative duration refused");
	CHECK(config_parse_size("16k", &v) && v == 16384, "16k");
	CHECK(config_parse_size("8m", &v) && v == 8388608, "8m");
	CHECK(!config_parse_size("8x", &v), "bad size unit");
	CHECK(config_addr_is_loopback("127.0.0.1:80"), "v4 loopback");
	CHECK(config_addr_is_loopback("[::1]:80"), "v6 loopback");
	CHECK(!config_addr_is_loopback("0.0.0.0:80"), "any is not loopback");
	(void)base;
}

static void
test_secret_file(void)
{
	/* A secret from /dev/urandom holds NUL bytes often (1 in 8 for 32
	 * bytes): they are key material, not a text file's corruption. */
	char spath[] = "/tmp/scrim-test-secret-XXXXXX", text[1024];
	static const char secret[40] = "abc\0def\0ghijklmnopqrstuvwxyz0123456";
	struct scrim_config *c;
	int fd = mkstemp(spath);

	CHECK(fd >= 0 && write(fd, secret, sizeof(secret)) ==
	                     (ssize_t)sizeof(secret),
	      "secret written");
	close(fd);
	snprintf(text, sizeof(text),
	         "[gateway]\nlisten = 127.0.0.1:1\nadmin_listen = 127.0.0.1:2\n"
	         "scrub_secret_file = %s\n%s", spath,
	         strstr(base, "[provider"));
	c = load_text(text);
	CHECK(c != NULL && !c->scrub_secret_random,
	      "a secret file with NUL bytes loads");
	if (c != NULL)
		config_unref(c);
	unlink(spath);
}

/* encrypt_key_file: a path relative to the configuration file, read at
 * load and refused unless 0600; credential:NAME from
 * $CREDENTIALS_DIRECTORY; [index NAME] with its own key. */
static void
test_encrypt_key(void)
{
	char kdir[] = "/tmp/scrim-test-ekey-XXXXXX", kp[200], text[2048];
	static const char key[32] = "0123456789abcdefghijklmnopqrstu";
	const struct cfg_index *ix;
	struct scrim_config *c;
	FILE *f;

	if (mkdtemp(kdir) == NULL)
		return;
	snprintf(kp, sizeof(kp), "%s/index.key", kdir);
	f = fopen(kp, "wb");
	fwrite(key, 1, sizeof(key), f);
	fclose(f);
	chmod(kp, 0600);
	setenv("CREDENTIALS_DIRECTORY", kdir, 1);
	snprintf(text, sizeof(text), "%s[index]\nencrypt_key_file = %s\n"
	         "[index team]\nencrypt_key_file = credential:index.key\n"
	         "[index plain]\n[index rel]\nencrypt_key_file = %s/index.key\n",
	         base, kp, strrchr(kdir, '/') + 1);
	c = load_text(text);
	CHECK(c != NULL, "encrypt_key_file loads");
	if (c != NULL) {
		ix = config_index(c, "default");
		CHECK(ix->encrypt_key.set, "[index] has its key");
		CHECK(config_index(c, "team")->encrypt_key.set &&
		      vcrypt_key_equal(&ix->encrypt_key,
		                       &config_index(c, "team")->encrypt_key),
		      "credential:NAME reads the same file");
		CHECK(!config_index(c, "plain")->encrypt_key.set,
		      "[index NAME] starts from the defaults: no key");
		CHECK(vcrypt_key_equal(&ix->encrypt_key,
		                       &config_index(c, "rel")->encrypt_key),
		      "a relative path is relative to the configuration file");
		config_unref(c);
	}
	unsetenv("CREDENTIALS_DIRECTORY");
	c = load_text(text);
	CHECK(c == NULL, "credential: without $CREDENTIALS_DIRECTORY refused");
	config_unref(c);
	chmod(kp, 0644);
	snprintf(text, sizeof(text), "%s[index]\nencrypt_key_file = %s\n",
	         base, kp);
	c = load_text(text);
	CHECK(c == NULL, "a key file others can read is refused");
	config_unref(c);
	unlink(kp);
	c = load_text(text);
	CHECK(c == NULL, "a missing key file is refused");
	config_unref(c);
	rmdir(kdir);
}

int
main(void)
{
	int fd = mkstemp(path);
	if (fd < 0)
		return 1;
	close(fd);
	test_default();
	test_good();
	test_bad();
	test_units();
	test_index();
	test_secret_file();
	test_encrypt_key();
	unlink(path);
	return harness_done();
}
