package event_test

import (
	"errors"
	"fmt"

	"github.com/postbackd/postbackd/event"
)

func ExampleDecoder_Decode() {
	d, err := event.NewDecoder()
	if err != nil {
		panic(err)
	}
	for _, value := range []string{
		`{"event_id":"dep-1","occurred_at":"2026-11-23T10:15:00Z","merchant_id":"casino-eu","click_id":"cl-1",` +
			`"amount":"25.50","currency":"EUR","status":"succeeded","player_id":"p-42"}`,
		`{"event_id":"dep-2","occurred_at":"2026-11-23T10:15:00Z","merchant_id":"casino-eu","click_id":"cl-1",` +
			`"amount":25.5,"currency":"EUR","status":"succeeded","player_id":"p-42"}`,
		`{"event_id":"dep-3","occurred_at":"2026-11-23T10:15:00Z","merchant_id":"casino-eu","click_id":"cl-1",` +
			`"amount":"25.50","currency":"XYZ","status":"succeeded","player_id":"p-42"}`,
	} {
		ev, err := d.Decode(event.KindDeposit, []byte(value))
		var invalid *event.InvalidError
		switch {
		case errors.As(err, &invalid):
			// Retrying cannot help: this goes to the DLQ with its reason.
			fmt.Printf("dead letter %s (event %s): %s\n", invalid.Reason, invalid.EventID, invalid.Detail)
		case err != nil:
			panic(err)
		default:
			dep := ev.(*event.Deposit)
			fmt.Println(dep.EventID, dep.Status, dep.Amount.StringFixed(2), dep.Currency)
		}
	}
	// Output:
	// dep-1 succeeded 25.50 EUR
	// dead letter schema_invalid (event dep-2): /amount: got number, want string
	// dead letter unknown_currency (event dep-3): /currency: "XYZ" is not an ISO 4217 currency code
}
