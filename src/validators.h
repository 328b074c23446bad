/*
 * validators.h - checks a regex cannot do: checksums and structure rules
 * for the identifiers scrim detects. A candidate that fails its validator
 * is not that entity (a 16-digit number failing Luhn is not a card).
 * Each takes the matched bytes as they appear in the text, separators
 * included, and ignores the separators it knows.
 */
#ifndef SCRIM_VALIDATORS_H
#define SCRIM_VALIDATORS_H

#include "scrim.h"

typedef bool (*validator_fn)(const char *s, size_t n);

/* Find a validator by its name in rule files; NULL if unknown. */
validator_fn validator_find(const char *name);
const char *validator_names(void); /* for error messages */

bool validate_luhn(const char *s, size_t n);
bool validate_iban(const char *s, size_t n);
bool validate_aba(const char *s, size_t n);
bool validate_us_ssn(const char *s, size_t n);
bool validate_ipv4(const char *s, size_t n);
bool validate_btc(const char *s, size_t n);
bool validate_uk_nino(const char *s, size_t n);
bool validate_phone(const char *s, size_t n);

#endif
