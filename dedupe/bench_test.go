package dedupe

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackd/postbackd/internal/redisinfo"
	"github.com/postbackd/postbackd/internal/testinfra"
)

// Benchmarks run on miniredis, or on the Redis at REDIS_ADDR. Deposits
// spread over 1000 clicks, so most classifications are rdeps after the
// first thousand, as in production.

func benchStore(b *testing.B) *Store {
	c, prefix, _ := testinfra.Redis(b)
	return New(c, Options{Prefix: prefix})
}

// registerClicks registers the 1 000 clicks benchDeposit spreads deposits
// over, with network and, if params, a sub id of their own and an offer.
func registerClicks(b *testing.B, s *Store, network string, params bool) {
	for c := range 1000 {
		click := "c" + strconv.Itoa(c)
		t := Touch{ClickID: click, EventID: "reg-" + click, Network: network, Registers: true, At: t0}
		if params {
			t.Params = map[string]string{"sub": "s-" + click, "offer_id": "o-7"}
		}
		if _, err := s.Attribute(context.Background(), t); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDeposit is deposit n of a benchmark: event en of click c(n mod 1000).
func benchDeposit(n int) Deposit {
	return Deposit{ClickID: "c" + strconv.Itoa(n%1000), EventID: "e" + strconv.Itoa(n), Amount: "10.00", Currency: "EUR", OccurredAt: t0}
}

func BenchmarkClassify(b *testing.B) {
	ctx := context.Background()
	b.Run("sequential", func(b *testing.B) {
		s := benchStore(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			d := benchDeposit(i)
			if _, err := s.Classify(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("parallel", func(b *testing.B) {
		s := benchStore(b)
		var n atomic.Int64
		b.SetParallelism(16) // 16 x GOMAXPROCS goroutines: many events in flight
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(n.Add(1))
				d := benchDeposit(i)
				if _, err := s.Classify(ctx, d); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}

// BenchmarkClaimMark is the send guard of one postback: Claim then
// MarkDelivered (two round trips).
func BenchmarkClaimMark(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	d := Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0, URL: "https://t.example/conv?click_id=c&token=REDACTED"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		click, pb := "c"+strconv.Itoa(i%1000), "p"+strconv.Itoa(i)
		r, err := s.Claim(ctx, click, pb, time.Minute)
		if err != nil || r.State != ClaimAcquired {
			b.Fatalf("claim: %+v, %v", r, err)
		}
		if _, err := s.MarkDelivered(ctx, click, pb, d, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkClassifyBatch classifies 100 deposits per pipelined round trip
// (what a consumer does with the events it fetched together); ops/s counts
// deposits.
func BenchmarkClassifyBatch(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	const size = 100
	ds := make([]Deposit, size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range ds {
			n := i*size + j
			ds[j] = benchDeposit(n)
		}
		if _, err := s.ClassifyBatch(ctx, ds); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkClaimMarkBatch is the send guard for 100 postbacks per batch:
// one pipelined ClaimBatch and one MarkDeliveredBatch; ops/s counts
// postbacks.
func BenchmarkClaimMarkBatch(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	const size = 100
	d := Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0, URL: "https://t.example/conv?click_id=c&token=REDACTED"}
	reqs := make([]ClaimRequest, size)
	marks := make([]MarkRequest, size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range reqs {
			n := i*size + j
			reqs[j] = ClaimRequest{ClickID: "c" + strconv.Itoa(n%1000), PostbackID: "p" + strconv.Itoa(n), Lease: time.Minute}
		}
		rs, err := s.ClaimBatch(ctx, reqs)
		if err != nil {
			b.Fatal(err)
		}
		for j := range rs {
			marks[j] = MarkRequest{ClickID: reqs[j].ClickID, PostbackID: reqs[j].PostbackID, Delivery: d}
		}
		if _, err := s.MarkDeliveredBatch(ctx, marks); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkClassifyThenClaimBatch and BenchmarkClassifyClaimBatch compare a
// deposit's classification and claim as two pipelined batches (two round
// trips) and as the one script the pipeline uses (one round trip), 100
// deposits per batch; ops/s counts deposits.
func BenchmarkClassifyThenClaimBatch(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	const size = 100
	ds := make([]Deposit, size)
	reqs := make([]ClaimRequest, size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range ds {
			n := i*size + j
			ds[j] = benchDeposit(n)
		}
		cs, err := s.ClassifyBatch(ctx, ds)
		if err != nil {
			b.Fatal(err)
		}
		for j, c := range cs {
			reqs[j] = ClaimRequest{ClickID: ds[j].ClickID, PostbackID: string(c.Goal) + ds[j].EventID, Lease: time.Minute}
		}
		if _, err := s.ClaimBatch(ctx, reqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkClassifyClaimBatch(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	const size = 100
	reqs := make([]ClassifyClaim, size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range reqs {
			n := i*size + j
			d := benchDeposit(n)
			ev := d.EventID
			reqs[j] = ClassifyClaim{Deposit: d, FTDPostbackID: "ftd" + ev, RDPostbackID: "rdep" + ev, Lease: time.Minute, Token: "t" + ev}
		}
		if _, err := s.ClassifyClaimBatch(ctx, reqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkDepositPath is the Redis side of a repeat deposit, as the
// pipeline runs it, 100 deposits per batch (ops/s counts deposits):
// attribution, classification and claim, and the delivered mark. Each of
// the 1 000 clicks has its FTD before the timer starts, so every timed
// deposit is an rdep whatever b.N is (three in four of the load harness's
// deposit stream; TestDepositCommands counts the commands of both kinds).
// "network" deposits name their network (the load harness's deposit
// stream); "click" deposits name none and are routed by their click's
// registration (the mixed funnel's). "unguarded" runs attribution and
// classification alone, without the claim and the mark that make a
// postback's send happen once: the difference is what that guarantee costs
// Redis. On a real Redis the server's CPU per deposit (INFO cpu, so the
// whole server's: keep other clients off it) is reported as redis-µs/op.
func BenchmarkDepositPath(b *testing.B) {
	ctx := context.Background()
	const size = 100
	delivery := Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: t0, URL: "https://t.example/conv?click_id=c&token=REDACTED"}
	for _, routed := range []string{"network", "click"} {
		for _, guard := range []string{"guarded", "unguarded"} {
			b.Run(routed+"/"+guard, func(b *testing.B) {
				s := benchStore(b)
				network := "alpha"
				if routed == "click" {
					network = ""
					registerClicks(b, s, "alpha", true)
				}
				ftds := make([]Deposit, 1000)
				for c := range ftds {
					ftds[c] = Deposit{ClickID: "c" + strconv.Itoa(c), EventID: "ftd-c" + strconv.Itoa(c), Amount: "10.00", Currency: "EUR", OccurredAt: t0,
						Route: Route{Partner: "alpha", Via: RouteClick}}
				}
				if _, err := s.ClassifyBatch(ctx, ftds); err != nil {
					b.Fatal(err)
				}
				ts := make([]Touch, size)
				reqs := make([]ClassifyClaim, size)
				ds := make([]Deposit, size)
				marks := make([]MarkRequest, size)
				cpu0, measured := redisinfo.ServerCPU(ctx, s.rdb)
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					for j := range size {
						d := benchDeposit(i*size + j)
						ts[j] = Touch{ClickID: d.ClickID, EventID: d.EventID, MerchantID: "m1", Network: network, DefaultPartner: "alpha", Release: true, At: t0}
						reqs[j] = ClassifyClaim{Deposit: d, FTDPostbackID: "ftd" + d.EventID, RDPostbackID: "rdep" + d.EventID, Lease: time.Minute, Token: "t" + d.EventID}
					}
					as, err := s.AttributeBatch(ctx, ts)
					if err != nil {
						b.Fatal(err)
					}
					for j, a := range as {
						reqs[j].Deposit.Route = a.Route
						ds[j] = reqs[j].Deposit
					}
					if guard == "unguarded" {
						cs, err := s.ClassifyBatch(ctx, ds)
						if err != nil {
							b.Fatal(err)
						}
						if cs[0].Goal != "rdep" {
							b.Fatalf("%+v: not a repeat deposit", cs[0])
						}
						continue
					}
					cs, err := s.ClassifyClaimBatch(ctx, reqs)
					if err != nil {
						b.Fatal(err)
					}
					for j, c := range cs {
						if c.Goal != "rdep" || c.Claim == nil || c.Claim.State != ClaimAcquired {
							b.Fatalf("%+v: not a repeat deposit claimed", c)
						}
						r := reqs[j]
						marks[j] = MarkRequest{ClickID: r.Deposit.ClickID, PostbackID: r.RDPostbackID, Delivery: delivery}
					}
					if _, err := s.MarkDeliveredBatch(ctx, marks); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if cpu1, ok := redisinfo.ServerCPU(ctx, s.rdb); measured && ok {
					b.ReportMetric((cpu1-cpu0)*1e6/float64(b.N*size), "redis-µs/op")
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "ops/s")
			})
		}
	}
}

// BenchmarkAttributeKnownClicks attributes deposits of clicks that have a
// network, 100 per batch (ops/s counts deposits), as a merchant with an
// attribution wait does: "payload" builds and ships every deposit's wait
// payload (the whole message, as the pipeline stores it: 379 bytes here,
// more for a real message with params),
// "on-request" passes Touch.Wait, which such deposits never call.
func BenchmarkAttributeKnownClicks(b *testing.B) {
	ctx := context.Background()
	const size = 100
	message := []byte(`{"event_id":"dep-000000","occurred_at":"2026-12-02T10:00:00Z","merchant_id":"m1","click_id":"c0",` +
		`"amount":"10.00","currency":"EUR","status":"succeeded","player_id":"p-c0","payment_method":"card"}`)
	type waiting struct { // the shape of the pipeline's wait payload
		Topic     string    `json:"topic"`
		Partition int       `json:"partition"`
		Offset    int64     `json:"offset"`
		Key       []byte    `json:"key,omitempty"`
		Value     []byte    `json:"value"`
		WaitUntil time.Time `json:"wait_until"`
	}
	for _, mode := range []string{"payload", "on-request"} {
		b.Run(mode, func(b *testing.B) {
			s := benchStore(b)
			registerClicks(b, s, "beta", false)
			ts := make([]Touch, size)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				for j := range ts {
					d := benchDeposit(i*size + j)
					w := waiting{Topic: "deposits", Offset: int64(i*size + j), Key: []byte(d.ClickID), Value: message, WaitUntil: t0}
					ts[j] = Touch{ClickID: d.ClickID, EventID: d.EventID, MerchantID: "m1", DefaultPartner: "alpha", At: t0}
					if mode == "payload" {
						p, err := json.Marshal(w)
						if err != nil {
							b.Fatal(err)
						}
						ts[j].WaitPayload = p
					} else {
						ts[j].Wait = func() ([]byte, error) { return json.Marshal(w) }
					}
				}
				as, err := s.AttributeBatch(ctx, ts)
				if err != nil {
					b.Fatal(err)
				}
				if as[0].State != StateRouted {
					b.Fatalf("%s, want routed by the click", as[0].State)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkDecodeClickContext reads a registered click's context, with
// params, as every event of such a click does: decodeClickContext against
// encoding/json.
func BenchmarkDecodeClickContext(b *testing.B) {
	raw := `{"merchant_id":"mc","network":"net","params":{"offer_id":"o-7","custom2":"sub-123","tr":"trID_1_a1-t1-c1-x_trID"},` +
		`"first_seen_at":"2026-12-02T10:00:00.123456789Z","registered_at":"2026-12-02T10:00:00.123456789Z"}`
	b.Run("fastjson", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := decodeClickContext(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var c ClickContext
			if err := json.Unmarshal([]byte(raw), &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeParams reads an FTD record's route params, as every
// classification and qualification of a click with params does:
// decodeParams against encoding/json.
func BenchmarkDecodeParams(b *testing.B) {
	raw := `{"custom2":"sub-123","offer_id":"o-7","tr":"trID_1_a1-t1-c1-x_trID"}`
	b.Run("fastjson", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := decodeParams(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var m map[string]string
			if err := json.Unmarshal([]byte(raw), &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMarshalDelivery encodes the delivery record every postback's
// mark stores: marshalDelivery against json.Marshal.
func BenchmarkMarshalDelivery(b *testing.B) {
	d := Delivery{HTTPStatus: 200, Attempts: 1, DeliveredAt: time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC),
		URL: "https://t.example/postback?click_id=mix-0000001&amount=10.00&currency=EUR&goal=ftd&token=%5BREDACTED%5D"}
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := marshalDelivery(d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := json.Marshal(d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
