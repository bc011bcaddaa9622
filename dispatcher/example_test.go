package dispatcher_test

import (
	"fmt"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/dispatcher"
)

func ExampleTrackerPattern_Decode() {
	tp, err := dispatcher.ParseTrackerPattern("trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID")
	if err != nil {
		panic(err)
	}
	fields, err := tp.Decode("trID_1234567_aff1-tx9-c77-x_trID")
	fmt.Println(fields["id"], fields["affid"], fields["transid"], fields["clickid"], fields["extra"], err)

	// A value that does not follow the pattern is a mismatch: the postback
	// is still sent, with tr.* empty and a warning.
	_, err = tp.Decode("trID_1234567_aff1_trID")
	fmt.Println(err)
	// Output:
	// 1234567 aff1 tx9 c77 x <nil>
	// tracker string does not match pattern: no "-" after field "affid"
}

func ExampleFormatAmount() {
	for _, c := range []struct{ amount, currency string }{
		{"10", "USD"}, {"1000.4", "JPY"}, {"1.2345", "KWD"}, {"-12.345", "EUR"},
	} {
		fmt.Println(dispatcher.FormatAmount(decimal.RequireFromString(c.amount), c.currency))
	}
	// Output:
	// 10.00
	// 1000
	// 1.235
	// -12.35
}
