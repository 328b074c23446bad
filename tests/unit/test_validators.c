/* test_validators.c - checksums and structure rules, good and bad. */
#include "harness.h"
#include "validators.h"

#include <string.h>

#define V(fn, s) fn(s, strlen(s))

int
main(void)
{
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
	return harness_done();
}
