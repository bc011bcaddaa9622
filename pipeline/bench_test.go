package pipeline

import (
	"testing"
	"time"

	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/record"
)

// BenchmarkAuditEncode is the encoding of one audit record for the
// dispatched topic as the pipeline does it (outputs.add: JSON marshal into
// a Kafka message): a delivered FTD with its redacted URL and the
// affiliate's params, the commonest record.
func BenchmarkAuditEncode(b *testing.B) {
	occurred := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	first, last := occurred.Add(40*time.Millisecond), occurred.Add(45*time.Millisecond)
	a := record.Audit{
		SchemaVersion: record.SchemaVersion,
		PostbackID:    "pb-3f9a1c2e7b5d4e60a1b2c3d4e5f60718",
		EventID:       "dep-00012345",
		EventKind:     event.KindDeposit,
		Source:        event.Source{Topic: "payments.deposits", Partition: 3, Offset: 1234567},
		MerchantID:    "casino-1",
		ClickID:       "click-0012345",
		Network:       "scaleo",
		Route:         "click",
		Goal:          "ftd",
		Status:        "pending",
		Amount:        "25.50",
		Currency:      "EUR",
		URL:           "https://tracker.example.com/track/conv?click_id=click-0012345&amount=25.50&currency=EUR&goal_alias=ftd&conv_status=pending&token=[REDACTED]&transaction_id=pb-3f9a1c2e7b5d4e60a1b2c3d4e5f60718",
		Params:        map[string]string{"offer_id": "o-17", "custom2": "sub-42", "tr": "trID_1234567_aff1-tx9-c77-x_trID"},
		Outcome:       record.OutcomeDelivered,
		HTTPStatus:    200,
		Attempts:      1,
		OccurredAt:    &occurred,
		FirstAttempt:  &first,
		LastAttempt:   &last,
		LatencyMillis: 5,
		RecordedAt:    last,
	}
	var out outputs
	b.ReportAllocs()
	for b.Loop() {
		out.msgs = out.msgs[:0]
		out.add("postbacks.dispatched", a.ClickID, &a)
	}
	b.SetBytes(int64(len(out.msgs[0].Value)))
}
