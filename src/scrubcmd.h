/*
 * scrubcmd.h - `scrim scrub`: the scrubber on stdin/stdout, for shell
 * pipelines, rule authors (--explain) and labelled corpora (--jsonl).
 */
#ifndef SCRIM_SCRUBCMD_H
#define SCRIM_SCRUBCMD_H

int scrubcmd_run(int argc, char **argv);
/* The rules directory when none is given: $SCRIM_RULES, /etc/scrim/rules,
 * else ./rules. */
const char *scrubcmd_default_rules(void);

#endif
