// Package decimalfmt formats money amounts as shopspring/decimal's String
// does, without math/big for the amounts payments carry.
//
// decimal.Decimal.String converts its big.Int coefficient to a string and
// then splices it: three allocations and math/big's generic conversion for
// every amount, twice per deposit on the hot path (the FTD record and the
// audit record). An amount whose coefficient has at most 18 digits fits an
// int64; String formats it with strconv in one allocation, and falls back to
// decimal.Decimal.String for anything else.
package decimalfmt

import (
	"strconv"

	"github.com/shopspring/decimal"
)

// maxDigits is the most digits an int64 coefficient is certain to hold.
const maxDigits = 18

// String returns exactly d.String().
func String(d decimal.Decimal) string {
	exp := d.Exponent()
	// The package-level switches change String's output; honour them by
	// leaving such runs to the library.
	if exp > 0 || exp < -maxDigits || !decimal.TrimTrailingZeros || decimal.UseScientificNotation || d.NumDigits() > maxDigits {
		return d.String()
	}
	c := d.CoefficientInt64() // defined: at most 18 digits
	if exp == 0 {
		return strconv.FormatInt(c, 10)
	}
	var buf [48]byte
	b := buf[:0]
	if c < 0 {
		b = append(b, '-')
		c = -c // no overflow: |c| < 10^18
	}
	var digits [maxDigits + 1]byte
	ds := strconv.AppendInt(digits[:0], c, 10)
	places := int(-exp)
	var intPart, frac []byte
	if len(ds) > places {
		intPart, frac = ds[:len(ds)-places], ds[len(ds)-places:]
	} else {
		intPart = []byte{'0'}
		frac = ds
	}
	// Trailing zeros of the fraction go, and the point with them when
	// nothing is left (as decimal.TrimTrailingZeros does).
	for len(frac) > 0 && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	b = append(b, intPart...)
	if len(frac) > 0 {
		b = append(b, '.')
		for range places - len(ds) { // leading zeros when |d| < 1
			b = append(b, '0')
		}
		b = append(b, frac...)
	}
	return string(b)
}
