package dedupe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
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
	// A field added to Delivery, or one whose type or tag changes, must be
	// changed in marshalDelivery too: this lists what it writes.
	var fields []string
	for f := range reflect.TypeFor[Delivery]().Fields() {
		fields = append(fields, fmt.Sprintf("%s %s `%s`", f.Name, f.Type, f.Tag))
	}
	want := []string{
		"HTTPStatus int `json:\"http_status\"`",
		"Attempts int `json:\"attempts\"`",
		"DeliveredAt time.Time `json:\"delivered_at\"`",
		"URL string `json:\"url\"`",
		"Refused string `json:\"refused,omitempty\"`",
	}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("Delivery's fields are\n%s\nmarshalDelivery writes\n%s\nteach it the change", strings.Join(fields, "\n"), strings.Join(want, "\n"))
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

// FuzzMarshalDelivery reaches every year and any zone offset to the
// second (json.Marshal refuses years beyond 9999 and offsets of a day or
// more, so both paths' errors are compared too).
func FuzzMarshalDelivery(f *testing.F) {
	for _, d := range deliverySeeds {
		_, offset := d.DeliveredAt.Zone()
		f.Add(d.HTTPStatus, d.Attempts, d.DeliveredAt.Unix(), int64(d.DeliveredAt.Nanosecond()), offset, d.URL, d.Refused)
	}
	f.Fuzz(func(t *testing.T, status, attempts int, sec, nsec int64, offset int, url, refused string) {
		zone := time.FixedZone("", offset%(200*3600))
		checkDeliveryJSON(t, Delivery{HTTPStatus: status, Attempts: attempts,
			DeliveredAt: time.Unix(sec, nsec).In(zone), URL: url, Refused: refused})
	})
}
