/*
 * validators.c - Luhn, IBAN mod-97 with per-country lengths, ABA routing
 * checksum, US SSN area/group/serial rules, IPv4 octet ranges, Bitcoin
 * base58check and bech32/bech32m, UK NINO prefixes. Small, allocation-free
 * and exhaustively unit-tested; written here because no Debian library
 * offers them as a set.
 */
#include "validators.h"

#include "digest.h"

#include <string.h>

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_upper(char c)
{
	return c >= 'A' && c <= 'Z';
}

bool
validate_luhn(const char *s, size_t n)
{
	int sum = 0, digits = 0;
	bool dbl = false;

	for (size_t i = n; i-- > 0;) {
		int d;
		if (s[i] == ' ' || s[i] == '-')
			continue;
		if (!is_digit(s[i]))
			return false;
		d = s[i] - '0';
		if (dbl) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
		dbl = !dbl;
		digits++;
	}
	return digits >= 12 && digits <= 19 && sum % 10 == 0;
}

/* IBAN lengths per country (SWIFT IBAN registry). */
static const struct {
	char cc[3];
	unsigned char len;
} iban_len[] = {
	{"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20},
	{"BE", 16}, {"BG", 22}, {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28},
	{"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24}, {"DE", 22}, {"DJ", 27},
	{"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18},
	{"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23},
	{"GL", 18}, {"GR", 27}, {"GT", 28}, {"HN", 28}, {"HR", 21}, {"HU", 28},
	{"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30},
	{"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20},
	{"LU", 20}, {"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22},
	{"MK", 19}, {"MN", 20}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NI", 28},
	{"NL", 18}, {"NO", 15}, {"OM", 23}, {"PK", 24}, {"PL", 28}, {"PS", 29},
	{"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33}, {"SA", 24},
	{"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27},
	{"SO", 23}, {"ST", 25}, {"SV", 28}, {"TL", 23}, {"TN", 24}, {"TR", 26},
	{"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

bool
validate_iban(const char *s, size_t n)
{
	char c[40];
	size_t len = 0;
	unsigned rem = 0;
	bool known = false;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == ' ' || s[i] == '-')
			continue;
		if (len == sizeof(c))
			return false;
		c[len] = s[i];
		if (c[len] >= 'a' && c[len] <= 'z')
			c[len] = (char)(c[len] - 32);
		if (!is_digit(c[len]) && !is_upper(c[len]))
			return false;
		len++;
	}
	if (len < 15 || !is_upper(c[0]) || !is_upper(c[1]) || !is_digit(c[2]) ||
	    !is_digit(c[3]))
		return false;
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(iban_len); i++)
		if (c[0] == iban_len[i].cc[0] && c[1] == iban_len[i].cc[1]) {
			if (len != iban_len[i].len)
				return false;
			known = true;
			break;
		}
	if (!known)
		return false;
	/* ISO 13616: check digits run 02..98. */
	if ((c[2] == '0' && (c[3] == '0' || c[3] == '1')) ||
	    (c[2] == '9' && c[3] == '9'))
		return false;
	/* mod 97 of BBAN + country + check digits, letters as 10..35. */
	for (size_t k = 0; k < len; k++) {
		char ch = c[(k + 4) % len];
		if (is_digit(ch))
			rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
		else
			rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
	}
	return rem == 1;
}

/* Exactly nine digits, '-' and ' ' ignored (routing numbers, SSNs). */
static bool
nine_digits(const char *s, size_t n, int d[9])
{
	int k = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '-' || s[i] == ' ')
			continue;
		if (!is_digit(s[i]) || k == 9)
			return false;
		d[k++] = s[i] - '0';
	}
	return k == 9;
}

bool
validate_aba(const char *s, size_t n)
{
	static const int w[9] = {3, 7, 1, 3, 7, 1, 3, 7, 1};
	int d[9], sum = 0, prefix;

	if (!nine_digits(s, n, d))
		return false;
	/* First two digits: Federal Reserve district ranges. */
	prefix = d[0] * 10 + d[1];
	if (!((prefix <= 12) || (prefix >= 21 && prefix <= 32) ||
	      (prefix >= 61 && prefix <= 72) || prefix == 80))
		return false;
	for (int i = 0; i < 9; i++)
		sum += w[i] * d[i];
	return sum % 10 == 0 && sum > 0;
}

bool
validate_us_ssn(const char *s, size_t n)
{
	int d[9], area, group, serial;

	if (!nine_digits(s, n, d))
		return false;
	area = d[0] * 100 + d[1] * 10 + d[2];
	group = d[3] * 10 + d[4];
	serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
	/* Never issued: area 000, 666, 900-999; group 00; serial 0000. And
	 * the advertising sample 078-05-1120. */
	if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
		return false;
	if (area == 78 && group == 5 && serial == 1120)
		return false;
	return true;
}

bool
validate_ipv4(const char *s, size_t n)
{
	int parts = 0, val = -1, digits = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (val < 0 || val > 255 || (digits > 1 && s[i - digits] == '0'))
				return false;
			parts++;
			val = -1;
			digits = 0;
			continue;
		}
		if (!is_digit(s[i]) || ++digits > 3)
			return false;
		val = (val < 0 ? 0 : val * 10) + (s[i] - '0');
	}
	return parts == 4;
}

static const char b58[] =
    "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

static bool
base58check(const char *s, size_t n)
{
	unsigned char num[40];
	unsigned char h1[32], h2[32];
	size_t len = sizeof(num);

	if (n < 26 || n > 35)
		return false;
	memset(num, 0, sizeof(num));
	for (size_t i = 0; i < n; i++) {
		const char *p = memchr(b58, s[i], sizeof(b58) - 1);
		unsigned carry;
		if (p == NULL)
			return false;
		carry = (unsigned)(p - b58);
		for (size_t j = len; j-- > 0;) {
			carry += 58u * num[j];
			num[j] = (unsigned char)(carry & 0xff);
			carry >>= 8;
		}
		if (carry != 0)
			return false;
	}
	/* A P2PKH/P2SH payload is 25 bytes: version, 20-byte hash, checksum. */
	const unsigned char *payload = num + len - 25;
	for (size_t i = 0; i < len - 25; i++)
		if (num[i] != 0)
			return false;
	if (payload[0] != 0x00 && payload[0] != 0x05)
		return false;
	if (!digest_sha256(payload, 21, h1) || !digest_sha256(h1, 32, h2))
		return false;
	return memcmp(h2, payload + 21, 4) == 0;
}

static uint32_t
bech32_polymod(const unsigned char *v, size_t n)
{
	static const uint32_t gen[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa,
	                                0x3d4233dd, 0x2a1462b3};
	uint32_t chk = 1;

	for (size_t i = 0; i < n; i++) {
		uint32_t top = chk >> 25;
		chk = ((chk & 0x1ffffff) << 5) ^ v[i];
		for (int k = 0; k < 5; k++)
			if ((top >> k) & 1)
				chk ^= gen[k];
	}
	return chk;
}

static bool
bech32(const char *s, size_t n)
{
	static const char cs[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
	unsigned char v[100];
	size_t k = 0, sep;
	uint32_t pm;
	bool lower = false, upper = false;

	if (n < 14 || n > 90)
		return false;
	for (sep = n; sep-- > 0;)
		if (s[sep] == '1')
			break;
	if (sep != 2 || n - sep - 1 < 6)
		return false; /* "bc" + "1" + data */
	for (size_t i = 0; i < n; i++) {
		if (s[i] >= 'a' && s[i] <= 'z')
			lower = true;
		if (s[i] >= 'A' && s[i] <= 'Z')
			upper = true;
	}
	if (lower && upper)
		return false;
	/* hrp expansion */
	for (size_t i = 0; i < sep; i++)
		v[k++] = (unsigned char)((s[i] | 0x20) >> 5);
	v[k++] = 0;
	for (size_t i = 0; i < sep; i++)
		v[k++] = (unsigned char)((s[i] | 0x20) & 31);
	for (size_t i = sep + 1; i < n; i++) {
		/* The 32 letters of the alphabet, not its NUL. */
		/* NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
		const char *p = memchr(cs, s[i] | 0x20, 32);
		if (p == NULL || k == sizeof(v))
			return false;
		v[k++] = (unsigned char)(p - cs);
	}
	pm = bech32_polymod(v, k);
	return pm == 1 || pm == 0x2bc830a3; /* bech32, bech32m */
}

bool
validate_btc(const char *s, size_t n)
{
	if (n > 3 && (s[0] == 'b' || s[0] == 'B') && (s[1] == 'c' || s[1] == 'C')
	    && s[2] == '1')
		return bech32(s, n);
	return base58check(s, n);
}

bool
validate_uk_nino(const char *s, size_t n)
{
	char c[9];
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == ' ' || s[i] == '-')
			continue;
		if (k == 9)
			return false;
		c[k++] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
	}
	if (k != 9)
		return false;
	/* HMRC: first letter not D F I Q U V; second not D F I O Q U V;
	 * prefixes BG GB KN NK NT TN ZZ never used; suffix A-D. */
	if (strchr("DFIQUV", c[0]) || strchr("DFIOQUV", c[1]) || !is_upper(c[0])
	    || !is_upper(c[1]))
		return false;
	static const char *const bad[] = {"BG", "GB", "KN", "NK", "NT", "TN",
	                                  "ZZ"};
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(bad); i++)
		if (c[0] == bad[i][0] && c[1] == bad[i][1])
			return false;
	for (int i = 2; i < 8; i++)
		if (!is_digit(c[i]))
			return false;
	return c[8] >= 'A' && c[8] <= 'D';
}

bool
validate_phone(const char *s, size_t n)
{
	int digits = 0;

	/* E.164 allows at most 15 digits; real numbers have at least 7. */
	for (size_t i = 0; i < n; i++)
		digits += is_digit(s[i]);
	return digits >= 7 && digits <= 15;
}

static const struct {
	const char *name;
	validator_fn fn;
} table[] = {
	{"phone", validate_phone},
	{"luhn", validate_luhn},       {"iban", validate_iban},
	{"aba", validate_aba},         {"us_ssn", validate_us_ssn},
	{"ipv4", validate_ipv4},       {"btc", validate_btc},
	{"uk_nino", validate_uk_nino},
};

validator_fn
validator_find(const char *name)
{
	for (size_t i = 0; i < SCRIM_ARRAY_LEN(table); i++)
		if (strcmp(table[i].name, name) == 0)
			return table[i].fn;
	return NULL;
}

const char *
validator_names(void)
{
	return "luhn, iban, aba, us_ssn, ipv4, btc, uk_nino, phone";
}
