/*
 * main.c - the `scrim` command line: parses the subcommand and its
 * options and hands over to the module that does the work.
 */
#include "alloc.h"
#include "audit.h"
#include "auth.h"
#include "ca.h"
#include "config.h"
#include "indexcmd.h"
#include "log.h"
#include "pdf.h"
#include "rules.h"
#include "keyscmd.h"
#include "scrubcmd.h"
#include "server.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/scrim/scrim.conf"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: scrim COMMAND [OPTIONS]\n"
	        "\n"
	        "A privacy gateway for LLM APIs.\n"
	        "\n"
	        "commands:\n"
	        "  serve [-c FILE]        run the gateway in the foreground\n"
	        "                         (SIGHUP reloads, SIGTERM drains)\n"
	        "  check [-c FILE]        validate a configuration; exit 1 on "
	        "error\n"
	        "  keys create|list|show|revoke|rotate|usage\n"
	        "                         virtual keys and their limits in "
	        "Redis\n"
	        "  keys generate NAME     make a config key and print its "
	        "[keys] line\n"
	        "  ca init | ca show      create / show the local CA for HTTPS "
	        "interception\n"
	        "  scrub [--rules DIR] [--jsonl] [--explain]\n"
	        "                         scrub stdin to stdout\n"
	        "  index add|search|stats|remove|list\n"
	        "                         the local document index\n"
	        "  audit verify|forget    check / redact the audit log chain\n"
	        "  version                versions of scrim and its libraries\n"
	        "  help                   this text\n"
	        "\n"
	        "FILE defaults to $SCRIM_CONFIG, else %s.\n"
	        "Run `scrim COMMAND --help` for a command's options.\n",
	        DEFAULT_CONFIG);
}

static const char *
default_config(void)
{
	const char *e = getenv("SCRIM_CONFIG");
	return e && *e ? e : DEFAULT_CONFIG;
}

/* Options shared by serve and check: -c FILE / --config FILE. */
static int
parse_config_opt(int argc, char **argv, const char *cmd, const char **path)
{
	*path = default_config();
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			printf("usage: scrim %s [-c FILE]\n\n", cmd);
			if (strcmp(cmd, "serve") == 0)
				printf("Run the gateway in the foreground with the "
				       "configuration in FILE.\n"
				       "SIGHUP reloads FILE (a broken file is refused "
				       "and the running one stays);\n"
				       "SIGTERM stops accepting and lets answers in "
				       "flight finish.\n");
			else
				printf("Validate FILE: syntax, every key's type and "
				       "range, routes, providers and\n"
				       "their keys. Problems are printed as "
				       "FILE:LINE: message; exit status 1.\n");
			printf("\n  -c, --config FILE   configuration (default "
			       "$SCRIM_CONFIG, else %s)\n",
			       DEFAULT_CONFIG);
			return 2;
		}
		if ((strcmp(argv[i], "-c") == 0 ||
		     strcmp(argv[i], "--config") == 0) &&
		    i + 1 < argc) {
			*path = argv[++i];
			continue;
		}
		fprintf(stderr, "scrim %s: unexpected argument '%s' (see --help)\n",
		        cmd, argv[i]);
		return 1;
	}
	return 0;
}

static int
cmd_check(int argc, char **argv)
{
	const char *path;
	struct scrim_config *c;
	int rc = parse_config_opt(argc, argv, "check", &path);

	if (rc != 0)
		return rc == 2 ? 0 : 2;
	struct ruleset *rs;
	int bad;

	c = config_load(path, true);
	if (c == NULL) {
		fprintf(stderr, "%s: configuration is invalid\n", path);
		return 1;
	}
	rs = rules_load(c->rules_dir, true);
	if (rs == NULL) {
		fprintf(stderr, "%s: rules are invalid\n", c->rules_dir);
		config_unref(c);
		return 1;
	}
	bad = rules_check_examples(rs, true);
	if (bad > 0) {
		fprintf(stderr, "%s: %d rule example%s failed\n", c->rules_dir, bad,
		        bad == 1 ? "" : "s");
	} else {
		size_t nex = 0;
		for (size_t i = 0; i < rs->nrules; i++)
			nex += rs->rules[i].nexamples;
		printf("%s: ok (%zu providers, %zu routes, %zu keys)\n", path,
		       c->nproviders, c->nroutes, c->nkeys);
		printf("%s: ok (%zu rules, %zu examples pass%s)\n", c->rules_dir,
		       rs->nrules, nex, rs->jit ? "" : "; PCRE2 JIT unavailable");
	}
	rules_unref(rs);
	config_unref(c);
	return bad > 0 ? 1 : 0;
}

static int
cmd_serve(int argc, char **argv)
{
	const char *path;
	int rc = parse_config_opt(argc, argv, "serve", &path);

	if (rc != 0)
		return rc == 2 ? 0 : 2;
	return server_run(path);
}

static int
cmd_ca(int argc, char **argv)
{
	const char *path = default_config(), *dir = NULL;
	bool force = false, have_path = false;
	struct scrim_config *c = NULL;
	bool help = false;
	int rc;

	/* `scrim ca --help` and `scrim ca show --help` alike. */
	for (int i = 0; i < argc; i++)
		help = help || strcmp(argv[i], "-h") == 0 ||
		       strcmp(argv[i], "--help") == 0;
	if (argc < 1 || help ||
	    (strcmp(argv[0], "init") != 0 && strcmp(argv[0], "show") != 0)) {
		FILE *f = help ? stdout : stderr;
		fprintf(f, "usage: scrim ca init [-c FILE] [--dir DIR] [--force]\n"
		           "       scrim ca show [-c FILE] [--dir DIR]\n\n"
		           "init creates the local root CA that signs the "
		           "certificates scrim presents\nfor intercepted AI hosts "
		           "(ECDSA P-256, 10 years; the key is written mode\n0600). "
		           "show prints where it is, its fingerprint and how to make "
		           "clients\ntrust it. DIR defaults to the configuration's "
		           "state_dir.\n");
		return f == stdout ? 0 : 2;
	}
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
		    && i + 1 < argc) {
			path = argv[++i];
			have_path = true;
		} else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strcmp(argv[i], "--force") == 0 && argv[0][0] == 'i')
			force = true;
		else {
			fprintf(stderr, "scrim ca: unexpected argument '%s'\n",
			        argv[i]);
			return 2;
		}
	}
	if (dir == NULL || (argv[0][0] == 's' && have_path)) {
		c = config_load(path, true);
		if (c == NULL)
			return 1;
		if (dir == NULL)
			dir = c->state_dir;
	}
	if (argv[0][0] == 'i') {
		rc = ca_init(dir, force);
	} else {
		char proxy[300];
		const char *l = c ? c->listen : "127.0.0.1:8080";
		const char *port = strrchr(l, ':');
		/* A wildcard listener has no address a client could use. */
		if (port != NULL && (strncmp(l, "0.0.0.0:", 8) == 0 ||
		                     strncmp(l, "[::]:", 5) == 0 ||
		                     strncmp(l, "*:", 2) == 0))
			snprintf(proxy, sizeof(proxy), "THIS-HOST%s", port);
		else
			snprintf(proxy, sizeof(proxy), "%s", l);
		rc = ca_show(dir, proxy);
	}
	config_unref(c);
	return rc;
}

static int
cmd_version(int argc, char **argv)
{
	curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);

	if (argc > 0) {
		bool help = strcmp(argv[0], "-h") == 0 ||
		            strcmp(argv[0], "--help") == 0;
		fprintf(help ? stdout : stderr,
		        "usage: scrim version\n\nPrint the versions of scrim and "
		        "of the libraries it runs on.\n");
		return help ? 0 : 2;
	}
	printf("scrim %s (commit %s)\n", SCRIM_VERSION, SCRIM_COMMIT);
	printf("libevent %s\n", event_get_version());
	printf("libcurl %s (%s%s)\n", cv->version,
	       cv->ssl_version ? cv->ssl_version : "no TLS",
	       (cv->features & CURL_VERSION_HTTP2) ? ", HTTP/2" : "");
	printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("jansson %s\n", jansson_version_str());
	printf("%s\n", pdf_reader_version() ? pdf_reader_version()
	                                    : "PDF: not built (no poppler-glib)");
	return 0;
}

int
main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "serve") == 0)
		return cmd_serve(argc - 2, argv + 2);
	if (strcmp(cmd, "check") == 0)
		return cmd_check(argc - 2, argv + 2);
	if (strcmp(cmd, "ca") == 0)
		return cmd_ca(argc - 2, argv + 2);
	if (strcmp(cmd, "scrub") == 0)
		return scrubcmd_run(argc - 2, argv + 2);
	if (strcmp(cmd, "keys") == 0)
		return keyscmd_run(argc - 2, argv + 2);
	if (strcmp(cmd, "index") == 0)
		return indexcmd_run(argc - 2, argv + 2);
	if (strcmp(cmd, "audit") == 0)
		return audit_cmd(argc - 2, argv + 2);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0)
		return cmd_version(argc - 2, argv + 2);
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "scrim: unknown command '%s'\n\n", cmd);
	usage(stderr);
	return 2;
}
