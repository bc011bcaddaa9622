package event

// DecodeFast and DecodeSlow give the tests of package event_test each path
// of Decode alone.

func (d *Decoder) DecodeFast(kind Kind, value []byte) (Event, bool) {
	return d.decodeFast(kind, value)
}

func (d *Decoder) DecodeSlow(kind Kind, value []byte) (Event, error) {
	return d.decodeSlow(kind, value)
}
