package schemas_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/postback"
	"github.com/postbackd/postbackd/record"
)

func ptr[T any](v T) *T { return &v }

// fullRecords returns one record of each output type with every field set,
// so omitempty hides nothing from the schema.
func fullRecords() map[string]any {
	at := time.Date(2026, 11, 23, 10, 15, 0, 31_000_000, time.UTC)
	src := event.Source{Topic: "payments.deposits", Partition: 3, Offset: 18211}
	return map[string]any{
		"audit": record.Audit{
			SchemaVersion: record.SchemaVersion,
			PostbackID:    postback.NewID("scaleo", postback.GoalFTD, "dep-1", postback.StatusPending),
			EventID:       "dep-1",
			EventKind:     event.KindDeposit,
			Source:        src,
			MerchantID:    "casino-eu",
			ClickID:       "cl-1",
			Network:       "scaleo",
			Goal:          string(postback.GoalFTD),
			Status:        postback.StatusPending,
			Amount:        "25.50",
			Currency:      "EUR",
			URL:           "https://t.example/track/conv?cid=cl-1&token=[REDACTED]",
			Outcome:       record.OutcomeFailed,
			Reason:        "http_503",
			HTTPStatus:    503,
			Attempts:      3,
			Error:         "HTTP 503",
			Replayed:      true,
			OccurredAt:    ptr(at.Add(-time.Second)),
			FirstAttempt:  ptr(at),
			LastAttempt:   ptr(at.Add(2 * time.Second)),
			LatencyMillis: 12,
			NextAttemptAt: ptr(at.Add(time.Minute).In(time.FixedZone("", 2*3600))),
			RecordedAt:    at.Add(3 * time.Second),
		},
		"confirmation": record.Confirmation{
			SchemaVersion:        record.SchemaVersion,
			ClickID:              "cl-1",
			MerchantID:           "casino-eu",
			Network:              "scaleo",
			Status:               postback.StatusApproved,
			FTDEventID:           "dep-1",
			QualificationEventID: "q-1",
			Amount:               "25.50",
			Currency:             "EUR",
			PostbackID:           postback.NewID("scaleo", postback.GoalFTDStatus, "q-1", postback.StatusApproved),
			ConfirmedAt:          at,
		},
		"dlq": record.DeadLetter{
			SchemaVersion: record.SchemaVersion,
			Reason:        "schema_invalid",
			Error:         "/amount: got number, want string",
			Source:        src,
			EventID:       "dep-1",
			EventKind:     event.KindDeposit,
			ClickID:       "cl-1",
			Key:           "cl-1",
			Value:         `{"amount":25.5}`,
			Postback:      postback.Postback{ID: "x", Partner: "scaleo", Goal: postback.GoalFTD, Source: src, CreatedAt: at, Attempts: 3},
			Attempts:      3,
			RecordedAt:    at,
		},
	}
}

var recordTypes = map[string]reflect.Type{
	"audit":        reflect.TypeFor[record.Audit](),
	"confirmation": reflect.TypeFor[record.Confirmation](),
	"dlq":          reflect.TypeFor[record.DeadLetter](),
}

func TestRecordsValidate(t *testing.T) {
	set := compile(t)
	for name, rec := range fullRecords() {
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := set.ValidateJSON(name, data); err != nil {
			t.Errorf("%s: %v\n%s", name, err, data)
		}
		// The zero record plus the version must fail: it proves the schema
		// constrains something (required content, formats).
		zero := reflect.New(recordTypes[name]).Elem()
		zero.FieldByName("SchemaVersion").SetInt(2)
		data, _ = json.Marshal(zero.Interface())
		if err := set.ValidateJSON(name, data); err == nil || !strings.Contains(err.Error(), "/schema_version: must be 1") {
			t.Errorf("%s version 2: %v, want a schema_version complaint", name, err)
		}
	}
}

func TestRecordsMatchSchemas(t *testing.T) {
	for name, typ := range recordTypes {
		sch := load(t, name)
		assertMatches(t, name, typ, sch)
		if src, ok := props(t, sch)["source"].(map[string]any); ok {
			assertMatches(t, name+" source", reflect.TypeFor[event.Source](), src)
		}
	}
	if v := props(t, load(t, "audit"))["schema_version"].(map[string]any)["const"]; v != float64(record.SchemaVersion) {
		t.Errorf("schema_version const = %v, want record.SchemaVersion %d", v, record.SchemaVersion)
	}
}

func TestRecordEnumsMatchConstants(t *testing.T) {
	kinds := strs(event.Kinds...)
	tests := []struct {
		schema string
		prop   string
		want   []string
	}{
		{"audit", "event_kind", kinds},
		{"audit", "goal", strs(postback.Goals...)},
		{"audit", "outcome", strs(record.OutcomeDelivered, record.OutcomeFailed, record.OutcomeSkipped, record.OutcomeDeadLettered)},
		{"confirmation", "status", []string{postback.StatusApproved, postback.StatusRejected}},
		{"dlq", "event_kind", kinds},
	}
	for _, tt := range tests {
		if got := enum(t, load(t, tt.schema), tt.prop); !slices.Equal(got, tt.want) {
			t.Errorf("%s /%s enum = %v, want %v", tt.schema, tt.prop, got, tt.want)
		}
	}
}

func TestDLQReasonsOfTheDecoderValidate(t *testing.T) {
	set := compile(t)
	for _, reason := range []string{event.ReasonUndecodable, event.ReasonSchema, event.ReasonCurrency, event.ReasonAmount} {
		rec := fullRecords()["dlq"].(record.DeadLetter)
		rec.Reason = reason
		data, _ := json.Marshal(rec)
		if err := set.ValidateJSON("dlq", data); err != nil {
			t.Errorf("reason %s: %v", reason, err)
		}
	}
	rec := fullRecords()["dlq"].(record.DeadLetter)
	rec.Reason = "Schema Invalid"
	data, _ := json.Marshal(rec)
	if err := set.ValidateJSON("dlq", data); err == nil {
		t.Error("dlq accepted a reason that is not snake_case")
	}
}
