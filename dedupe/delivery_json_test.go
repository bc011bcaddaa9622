package dedupe

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// deliverySeeds: what deliveries hold (redacted URLs with queries, hence &,
// refusals with quotes) and what json.Marshal treats specially (<, >, &,
// U+2028, invalid UTF-8, times with offsets and outside its range).
var deliverySeeds = []Delivery{
	{HTTPStatus: 200, Attempts: 1, DeliveredAt: time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC),
		URL: "https://t.example/p?click_id=c1&token=%5BREDACTED%5D&amount=10.00"},
	{HTTPStatus: 400, Attempts: 3, DeliveredAt: time.Date(2026, 12, 2, 10, 0, 0, 0, time.FixedZone("", 2*3600)),
		URL: "https://t.example/p?a=<b>", Refused: `tracker answered 400 "bad click" \ ` + "\u2028\xff"},
	{},
	{HTTPStatus: -1, Attempts: 1 << 40, DeliveredAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	{DeliveredAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600))},
}

// TestMarshalDelivery: marshalDelivery writes json.Marshal's bytes, or its
// error, and Delivery has no field it does not write.
func TestMarshalDelivery(t *testing.T) {
	for _, d := range deliverySeeds {
		checkDeliveryJSON(t, d)
	}
	// A field added to Delivery must be added to marshalDelivery too: this
	// lists the ones it writes.
	var names []string
	for f := range reflect.TypeFor[Delivery]().Fields() {
		names = append(names, f.Name)
	}
	if want := []string{"HTTPStatus", "Attempts", "DeliveredAt", "URL", "Refused"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Delivery's fields are %v; marshalDelivery writes %v: teach it the new ones", names, want)
	}
}

func checkDeliveryJSON(t *testing.T, d Delivery) {
	t.Helper()
	want, wantErr := json.Marshal(d)
	got, err := marshalDelivery(d)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%+v: error %v, json.Marshal's %v", d, err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%+v:\n got: %s\nwant: %s", d, got, want)
	}
}

func FuzzMarshalDelivery(f *testing.F) {
	for _, d := range deliverySeeds {
		f.Add(d.HTTPStatus, d.Attempts, d.DeliveredAt.UnixNano(), d.URL, d.Refused, 0)
	}
	f.Fuzz(func(t *testing.T, status, attempts int, nanos int64, url, refused string, offsetMinutes int) {
		zone := time.FixedZone("", (offsetMinutes%(48*60))*60)
		checkDeliveryJSON(t, Delivery{HTTPStatus: status, Attempts: attempts,
			DeliveredAt: time.Unix(0, nanos).In(zone), URL: url, Refused: refused})
	})
}
