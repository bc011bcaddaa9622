package dispatcher

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/postback"
)

func BenchmarkRender(b *testing.B) {
	env := newEnv(b, map[string]config.Partner{"scaleo": scaleoPartner(), "dating": trackerPartner()})
	for _, name := range []string{"scaleo", "dating"} {
		b.Run(name, func(b *testing.B) {
			p := testPostback(name, postback.GoalRD)
			p.Params = map[string]string{"tr": "trID_1234567_aff1-tx9-c77-x_trID", "offer_id": "o-1", "custom2": "c2"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := env.d.Render(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSendLoopback measures a whole Send against a loopback handler,
// from parallel goroutines: render, limiter and breaker checks, the GET, body
// handling and metrics.
func BenchmarkSendLoopback(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("OK"))
	}))
	defer srv.Close()
	pc := serverPartner(srv)
	pc.Success.BodyPattern = "^OK"
	env := newEnv(b, map[string]config.Partner{"acme": pc})
	p := testPostback("acme", postback.GoalRD)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := env.d.Send(context.Background(), p); !res.Delivered {
				b.Errorf("Send: %v", res.Err)
				return
			}
		}
	})
}
