/* test_validators.c - checksums and structure rules, good and bad. */
#include "digest.h"
#include "harness.h"
#include "validators.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define V(fn, s) fn(s, strlen(s))

/* digest_sha256(s) in hex, or "" when it fails. */
static void
sha_hex(const char *s, char out[65])
{
	unsigned char md[32];

	out[0] = '\0';
	if (!digest_sha256(s, strlen(s), md))
		return;
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void *
sha_thread(void *arg)
{
	sha_hex("abc", arg);
	return NULL;
}

/* FIPS 180-2 vectors, repeated (the context is reused) and from a second
 * thread (which gets a context of its own). */
static void
test_digest(void)
{
	static const char abc[] =
	    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
	char h[65], other[65] = "";
	pthread_t t;

	for (int i = 0; i < 3; i++) {
		sha_hex("abc", h);
		CHECK(strcmp(h, abc) == 0, "sha256(abc), call %d: %s", i, h);
		sha_hex("", h);
		CHECK(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb924"
		                "27ae41e4649b934ca495991b7852b855") == 0,
		      "sha256 of nothing: %s", h);
	}
	sha_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", h);
	CHECK(strcmp(h, "248d6a61d20638b8e5c026930c3e6039"
	                "a33ce45964ff2167f6ecedd419db06c1") == 0,
	      "sha256 of two blocks: %s", h);
	CHECK(pthread_create(&t, NULL, sha_thread, other) == 0 &&
	          pthread_join(t, NULL) == 0 && strcmp(other, abc) == 0,
	      "sha256(abc) on another thread: %s", other);
}

int
main(void)
{
	test_digest();
	CHECK(V(validate_luhn, "4111 1111 1111 1111"), "visa test card");
	CHECK(V(validate_luhn, "5500-0000-0000-0004"), "mastercard");
	CHECK(V(validate_luhn, "378282246310005"), "amex");
	CHECK(!V(validate_luhn, "4111 1111 1111 1112"), "luhn fails");
	CHECK(!V(validate_luhn, "12345"), "too short");
	CHECK(!V(validate_luhn, "4111x1111"), "letters");

	CHECK(V(validate_iban, "DE89 3704 0044 0532 0130 00"), "DE iban");
	CHECK(V(validate_iban, "GB82WEST12345698765432"), "GB iban");
	CHECK(V(validate_iban, "NO9386011117947"), "NO iban (shortest)");
	CHECK(V(validate_iban, "fr1420041010050500013m02606"), "lower case FR");
	CHECK(!V(validate_iban, "DE89 3704 0044 0532 0130 01"), "bad check");
	CHECK(!V(validate_iban, "DE89 3704 0044 0532 0130 0"), "bad length");
	CHECK(!V(validate_iban, "XX89 3704 0044 0532 0130 00"), "no country");

	CHECK(V(validate_aba, "011000015"), "ABA fed");
	CHECK(V(validate_aba, "021000021"), "ABA chase");
	CHECK(!V(validate_aba, "021000022"), "ABA bad check");
	CHECK(!V(validate_aba, "991000021"), "ABA bad prefix");

	CHECK(V(validate_us_ssn, "123-45-6789"), "ssn");
	CHECK(!V(validate_us_ssn, "000-12-3456"), "area 000");
	CHECK(!V(validate_us_ssn, "666-12-3456"), "area 666");
	CHECK(!V(validate_us_ssn, "912-12-3456"), "area 9xx");
	CHECK(!V(validate_us_ssn, "123-00-4567"), "group 00");
	CHECK(!V(validate_us_ssn, "123-45-0000"), "serial 0000");
	CHECK(!V(validate_us_ssn, "078-05-1120"), "the Woolworth sample");

	CHECK(V(validate_ipv4, "192.168.1.10"), "ipv4");
	CHECK(V(validate_ipv4, "0.0.0.0"), "zeros");
	CHECK(!V(validate_ipv4, "256.1.1.1"), "octet > 255");
	CHECK(!V(validate_ipv4, "1.2.3"), "three parts");
	CHECK(!V(validate_ipv4, "01.2.3.4"), "leading zero");

	CHECK(V(validate_btc, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"), "genesis");
	CHECK(V(validate_btc, "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"), "p2sh");
	CHECK(V(validate_btc, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
	      "bech32");
	CHECK(V(validate_btc,
	        "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297"),
	      "bech32m taproot");
	CHECK(!V(validate_btc, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb"),
	      "base58 bad check");
	CHECK(!V(validate_btc, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"),
	      "bech32 bad check");

	CHECK(V(validate_uk_nino, "AB 12 34 56 C"), "nino");
	CHECK(!V(validate_uk_nino, "QQ123456C"), "nino bad prefix");
	CHECK(!V(validate_uk_nino, "AB123456E"), "nino bad suffix");
	CHECK(validator_find("luhn") == validate_luhn, "lookup");
	CHECK(validator_find("nope") == NULL, "unknown");

	/* Branch coverage (RELIABILITY L1): lengths, separators, ranges. */
	CHECK(!V(validate_luhn, "79927398713"), "luhn valid but 11 digits");
	CHECK(V(validate_luhn, "4111111111111111"), "luhn without separators");
	CHECK(!V(validate_luhn, "41111111111111111111"), "luhn 20 digits");
	CHECK(!V(validate_luhn, ""), "luhn empty");

	CHECK(!V(validate_iban, "DE89-3704-0044-0532-0130-00-0000000000000000000"),
	      "iban past 40 characters");
	CHECK(V(validate_iban, "DE89-3704-0044-0532-0130-00"), "iban with dashes");
	CHECK(!V(validate_iban, "DE89 3704 0044 0532 0130 0!"), "iban symbol");
	CHECK(!V(validate_iban, "D189 3704 0044 0532 0130 00"), "iban digit cc");
	CHECK(!V(validate_iban, "1E89 3704 0044 0532 0130 00"), "iban digit cc 1");
	CHECK(!V(validate_iban, "DEX9 3704 0044 0532 0130 00"), "iban letter check");
	CHECK(!V(validate_iban, "DE8X 3704 0044 0532 0130 00"), "iban letter check 2");
	CHECK(!V(validate_iban, "DE00 3704 0044 0532 0130 00"), "check digits 00");
	CHECK(!V(validate_iban, "DE01 3704 0044 0532 0130 00"), "check digits 01");
	CHECK(!V(validate_iban, "DE99 3704 0044 0532 0130 00"), "check digits 99");
	CHECK(!V(validate_iban, "DE02 3704 0044 0532 0130 00"), "check digits 02, wrong");
	CHECK(!V(validate_iban, "DE89 3704"), "iban short");

	CHECK(V(validate_aba, "610000005"), "ABA prefix 61");
	CHECK(V(validate_aba, "720000005"), "ABA prefix 72");
	CHECK(V(validate_aba, "800000006"), "ABA prefix 80");
	CHECK(!V(validate_aba, "130000006"), "ABA prefix 13");
	CHECK(!V(validate_aba, "200000004"), "ABA prefix 20");
	CHECK(!V(validate_aba, "730000008"), "ABA prefix 73");
	CHECK(!V(validate_aba, "330000013"), "ABA prefix 33");
	CHECK(!V(validate_aba, "000000000"), "ABA all zeros");
	CHECK(V(validate_aba, "0110-0001 5"), "ABA with separators");
	CHECK(!V(validate_aba, "01100001"), "ABA eight digits");
	CHECK(!V(validate_aba, "0110000150"), "ABA ten digits");
	CHECK(!V(validate_aba, "01100001x"), "ABA letter");

	CHECK(!V(validate_us_ssn, "123-45-678"), "ssn eight digits");
	CHECK(V(validate_us_ssn, "078-05-1121"), "next to the sample");
	CHECK(V(validate_us_ssn, "078-06-1120"), "sample area, other group");
	CHECK(V(validate_us_ssn, "899 99 9999"), "area 899");

	CHECK(!V(validate_ipv4, "1.2.3.4.5"), "five parts");
	CHECK(!V(validate_ipv4, "1..2.3"), "empty part");
	CHECK(!V(validate_ipv4, "1.2.3."), "trailing dot");
	CHECK(!V(validate_ipv4, ".1.2.3"), "leading dot");
	CHECK(!V(validate_ipv4, "1234.1.1.1"), "four digits");
	CHECK(!V(validate_ipv4, "1.2.3.a"), "letter");
	CHECK(!V(validate_ipv4, "1.2.3.256"), "last octet > 255");
	CHECK(V(validate_ipv4, "255.255.255.255"), "broadcast");
	CHECK(V(validate_ipv4, "10.0.0.1"), "single zero octet");
	CHECK(!V(validate_ipv4, "1.2.3.04"), "leading zero last");

	CHECK(!V(validate_btc, "1A1zP1eP5QGefi2DMP"), "base58 short");
	CHECK(!V(validate_btc, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNaNaNa"),
	      "base58 long");
	CHECK(!V(validate_btc, "1A1zP1eP5QGefi2DMPTfTL5SLmv7Divf0a"),
	      "base58 has 0");
	CHECK(!V(validate_btc, "LVg2kJoFNg45Nbpy53h7Fe1wKyeXVRhMH9"),
	      "base58check good, version not bitcoin");
	CHECK(!V(validate_btc, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"),
	      "base58 payload past 25 bytes");
	CHECK(V(validate_btc, "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"),
	      "bech32 upper case");
	CHECK(!V(validate_btc, "bc1QW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
	      "bech32 mixed case");
	CHECK(!V(validate_btc, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3tb"),
	      "bech32 'b' is not in the charset");
	CHECK(!V(validate_btc, "bc1qqqqq"), "bech32 short");
	CHECK(!V(validate_btc, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
	                       "qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4qqqqq"),
	      "bech32 past 90");
	CHECK(!V(validate_btc, "bc1qw508d6qejxtdg4y5r3zarvary01c5xw7kv8f3t4"),
	      "bech32 separator not after bc");
	CHECK(!V(validate_btc, "bc11qqqqq"), "bech32 data too short");

	CHECK(V(validate_uk_nino, "ab-12-34-56-d"), "nino lower case, dashes");
	CHECK(!V(validate_uk_nino, "AB1234567C"), "nino ten");
	CHECK(!V(validate_uk_nino, "AB12345C"), "nino eight");
	CHECK(!V(validate_uk_nino, "DA123456C"), "nino first D");
	CHECK(!V(validate_uk_nino, "AO123456C"), "nino second O");
	CHECK(!V(validate_uk_nino, "GB123456A"), "nino prefix GB");
	CHECK(!V(validate_uk_nino, "ZZ123456A"), "nino prefix ZZ");
	CHECK(!V(validate_uk_nino, "AB12C456A"), "nino letter in digits");
	CHECK(!V(validate_uk_nino, "1B123456A"), "nino digit first");
	CHECK(!V(validate_uk_nino, "A1123456A"), "nino digit second");
	CHECK(!V(validate_uk_nino, "AB1234561"), "nino digit suffix");

	CHECK(!V(validate_phone, "123 456"), "phone six digits");
	CHECK(V(validate_phone, "+1 (415) 555-0132"), "phone");
	CHECK(!V(validate_phone, "1234567890123456"), "phone sixteen digits");

	{
		static const char *const names[] = {"phone", "luhn", "iban",
		    "aba", "us_ssn", "ipv4", "btc", "uk_nino"};
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			CHECK(validator_find(names[i]) != NULL &&
			          strstr(validator_names(), names[i]) != NULL,
			      "validator %s", names[i]);
	}
	return harness_done();
}
