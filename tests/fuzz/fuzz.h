/*
 * fuzz.h - what the libFuzzer drivers in tests/fuzz share: the entry
 * points libFuzzer calls, an oracle check that aborts (so libFuzzer keeps
 * the input as a crash), and a private temporary folder for the targets
 * that read files. scripts/fuzz.sh builds and runs the drivers;
 * ../shared/RELIABILITY.md §8 L3 says what each one must hold.
 */
#ifndef SCRIM_FUZZ_H
#define SCRIM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An oracle failure: print why, then abort so libFuzzer saves the input. */
#define FUZZ_CHECK(cond, ...)                                                  \
	do {                                                                   \
		if (!(cond))                                                   \
			fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);     \
	} while (0)

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt,
               ...) __attribute__((noreturn, format(printf, 4, 5)));

/* No log lines: a run prints millions of inputs' worth of complaints. */
void fuzz_quiet(void);

/*
 * A folder of this process's own under $TMPDIR (or /tmp), removed at exit
 * with what fuzz_write_file put in it. Aborts when it cannot be made.
 */
const char *fuzz_tmpdir(void);
/* Write data to dir/name (replacing it); returns the path (static). */
const char *fuzz_write_file(const char *name, const uint8_t *data,
                            size_t size);

#endif
