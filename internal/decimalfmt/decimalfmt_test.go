package decimalfmt

import (
	"math"
	"testing"

	"github.com/shopspring/decimal"
)

var cases = []string{
	"0", "0.00", "-0.00", "1", "-1", "10", "100.00", "50.5", "50.50", "0.5", "-0.5", "0.05", "0.000001",
	"-0.000001", "123456789.123456789", "999999999999999999", "-999999999999999999",
	"0.999999999999999999", "1000000000000000000", "12345678901234567890.5", "1e3", "1.5e2",
	"1e-18", "1e-19", "123e-20", "9223372036854775807", "-9223372036854775808", "0.10", "1.000",
}

func TestStringMatchesDecimal(t *testing.T) {
	for _, c := range cases {
		d, err := decimal.NewFromString(c)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if got, want := String(d), d.String(); got != want {
			t.Errorf("String(%s) = %q, want %q", c, got, want)
		}
	}
	for _, d := range []decimal.Decimal{
		decimal.New(math.MaxInt64, -2), decimal.New(math.MinInt64, -2), decimal.New(-5, -18),
		decimal.New(5, 3), decimal.New(0, -5), decimal.NewFromInt(-7),
	} {
		if got, want := String(d), d.String(); got != want {
			t.Errorf("String(%v) = %q, want %q", d, got, want)
		}
	}
}

func FuzzString(f *testing.F) {
	f.Add(int64(5050), int32(-2))
	f.Add(int64(-1), int32(-18))
	f.Add(int64(math.MaxInt64), int32(-19))
	f.Add(int64(0), int32(-3))
	f.Add(int64(120), int32(1))
	f.Fuzz(func(t *testing.T, c int64, exp int32) {
		d := decimal.New(c, exp%40)
		if got, want := String(d), d.String(); got != want {
			t.Fatalf("String(New(%d, %d)) = %q, want %q", c, exp%40, got, want)
		}
	})
}

func BenchmarkString(b *testing.B) {
	d := decimal.RequireFromString("1234.50")
	b.Run("decimalfmt", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = String(d)
		}
	})
	b.Run("decimal.String", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = d.String()
		}
	})
}
