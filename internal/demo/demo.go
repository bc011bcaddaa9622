// Package demo runs postbackd end to end inside one process: an in-process
// Kafka (kfake), an in-process Redis (miniredis) and a local tracker, fed a
// scripted stream of player journeys through the real pipeline. It is the
// README's first command and needs nothing but Go.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/service"
	"github.com/postbackd/postbackd/internal/tracker"
	"github.com/postbackd/postbackd/record"
)

// DefaultPlayers is the player journeys per merchant of a default run.
const DefaultPlayers = 200

// Options tune a demo run.
type Options struct {
	Players int           // player journeys per merchant (default DefaultPlayers)
	Timeout time.Duration // give up waiting for outcomes after this (default 60s)
	Log     *zap.Logger   // the service's logs (default: none)
}

// Summary is what the demo observed on the output topics and the tracker.
type Summary struct {
	Players       int                   // player journeys in the script, all merchants
	Events        int                   // input events produced
	Audit         []record.Audit        // every audit record read back
	Confirmations []record.Confirmation // every confirmation read back
	DeadLetters   []record.DeadLetter   // every DLQ record read back
	Received      int64                 // requests the tracker answered 2xx, body-level refusals included
	Accepted      int                   // postbacks the partner's success rule accepted (see countPostbacks)
	Refused       int                   // postbacks the partner refused for good (see countPostbacks)
	Elapsed       time.Duration         // from first event to last outcome
	// Counts: partner, goal, outcome → audit records. A missing partner or
	// goal is "-"; the outcome is marked " (replay)" for a replayed record
	// and " (refused)" for a postback the partner refused (see legend).
	Counts map[[3]string]int
}

// Run runs the demo, writing progress and a summary to w.
func Run(ctx context.Context, w io.Writer, o Options) (*Summary, error) {
	if o.Players <= 0 {
		o.Players = DefaultPlayers
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	topics := []string{config.DefaultTopicDeposits, config.DefaultTopicRevenue, config.DefaultTopicRegistrations,
		config.DefaultTopicQualifications, config.DefaultTopicDispatched, config.DefaultTopicConfirmed, config.DefaultTopicDLQ}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topics...))
	if err != nil {
		return nil, fmt.Errorf("start in-process kafka: %w", err)
	}
	defer kc.Close()
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, fmt.Errorf("start in-process redis: %w", err)
	}
	defer mr.Close()

	tr := tracker.New(tracker.Options{Respond: trackerResponder()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: tr, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()

	cfg, err := loadConfig(kc.ListenAddrs()[0], mr.Addr(), ln.Addr().String())
	if err != nil {
		return nil, err
	}
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	svc, err := service.New(cfg, o.Log, service.Options{Redis: rc})
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	svcErr := make(chan error, 1)
	go func() { svcErr <- svc.Run(runCtx) }()

	fmt.Fprintf(w, "postbackd demo: in-process Kafka %s, Redis %s, tracker %s\n", kc.ListenAddrs()[0], mr.Addr(), ln.Addr())
	script := newScript(o.Players)
	fmt.Fprintf(w, "feeding %s\n", script.size())
	collector := newCollector(kc.ListenAddrs()[0])
	go collector.run(runCtx)

	start := time.Now()
	writer := &kafka.Writer{Addr: kafka.TCP(kc.ListenAddrs()...), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer writer.Close()
	deadline := time.Now().Add(o.Timeout)
	produced := 0
	pr := newProgressPrinter(w)
	defer pr.close()
	progressLine := func(phase string) string {
		s := collector.snapshot()
		accepted, refused := countPostbacks(s.Audit)
		return fmt.Sprintf("  %-14s produced %5d/%d events · audited %5d · accepted %5d · refused %3d · dlq %3d",
			phase, produced, script.total(), len(s.Audit), accepted, refused, len(s.DeadLetters))
	}
	// Registrations first: they record each click's partner and tracker
	// string, as they would minutes before a player's first deposit.
	for i, phase := range script.phases {
		if err := writer.WriteMessages(ctx, phase...); err != nil {
			return nil, fmt.Errorf("produce: %w", err)
		}
		produced += len(phase)
		for !collector.phaseDone(script, i) {
			pr.update(progressLine(fmt.Sprintf("phase %d/%d", i+1, len(script.phases))))
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("timed out after %s: not every event of phase %d was audited", o.Timeout, i+1)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case err := <-svcErr:
				return nil, fmt.Errorf("service stopped: %w", err)
			case <-time.After(100 * time.Millisecond): // progress refresh
			}
		}
	}
	pr.final(progressLine("done"))
	elapsed := time.Since(start)
	stop()
	if err := <-svcErr; err != nil {
		return nil, err
	}
	s := collector.snapshot()
	s.Players = script.players()
	s.Events = script.total()
	s.Received = tr.Count()
	s.Elapsed = elapsed
	s.tally()
	printSummary(w, s)
	return s, nil
}

// tally fills Accepted, Refused and Counts from the audit records.
func (s *Summary) tally() {
	s.Accepted, s.Refused = countPostbacks(s.Audit)
	s.Counts = map[[3]string]int{}
	for _, a := range s.Audit {
		goal := a.Goal
		if goal == "" {
			goal = "-"
		}
		network := a.Network
		if network == "" {
			network = "-"
		}
		outcome := string(a.Outcome)
		if a.Replayed {
			outcome += " (replay)"
		}
		if a.Outcome == record.OutcomeDeadLettered && a.Reason == reasonRefused {
			outcome += " (refused)"
		}
		s.Counts[[3]string{network, goal, outcome}]++
	}
}

func loadConfig(kafkaAddr, redisAddr, trackerAddr string) (*config.Config, error) {
	// Demo tokens: real configurations read them from the environment or a
	// file the same way; the summary shows they never leave the URL unredacted.
	env := map[string]string{"DEMO_SCALEO_TOKEN": "demo-scaleo-secret", "DEMO_DATING_TOKEN": "demo-dating-secret"}
	raw := fmt.Sprintf(configTemplate, kafkaAddr, redisAddr, trackerAddr)
	return config.Parse([]byte(raw), ".", func(k string) string { return env[k] })
}

// trackerResponder plays two trackers: the first attempt of every 9th
// Scaleo postback fails with 503 (retried in place), and the dating tracker
// refuses offer "expired" in the body of a 200 (a body-level refusal).
func trackerResponder() tracker.Responder {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(r *http.Request) (int, string) {
		q := r.URL.Query()
		if strings.HasPrefix(r.URL.Path, "/postback") {
			if q.Get("offer") == "expired" {
				return http.StatusOK, "ERROR offer expired"
			}
			return http.StatusOK, "OK"
		}
		tx := q.Get("transaction_id")
		if tx != "" && tx[len(tx)-1]%9 == 0 {
			mu.Lock()
			first := !seen[tx]
			seen[tx] = true
			mu.Unlock()
			if first {
				return http.StatusServiceUnavailable, "busy"
			}
		}
		return http.StatusOK, "OK"
	}
}

// countPostbacks counts the postbacks of audit records by what the
// partner's success rule made of them: accepted (delivered; a replay, which
// re-audits a delivery without sending, is not counted again) and refused
// for good (dead-lettered as postback_refused: the answer fails the success
// rule, e.g. a 200 with the body "ERROR ..." or a 404). A postback is
// counted once by its id, however many records name it. The tracker's own
// count is no measure: it counts every 2xx, body-level refusals included.
func countPostbacks(audit []record.Audit) (accepted, refused int) {
	seen := map[string]bool{}
	for _, a := range audit {
		var n *int
		switch {
		case a.Outcome == record.OutcomeDelivered && !a.Replayed:
			n = &accepted
		case a.Outcome == record.OutcomeDeadLettered && a.Reason == reasonRefused:
			n = &refused
		default:
			continue
		}
		if a.PostbackID != "" {
			key := string(a.Outcome) + "/" + a.PostbackID
			if seen[key] {
				continue
			}
			seen[key] = true
		}
		*n++
	}
	return accepted, refused
}

// reasonRefused is the pipeline's reason for a postback the partner
// refused for good (pipeline/deliver.go).
const reasonRefused = "postback_refused"

// legend explains the table's "-", "(replay)" and "(refused)" entries.
const legend = `  -          the audit record names no partner (or no goal): the event made no
             postback (invalid input, a deposit that did not succeed, or a
             qualification of a click that never deposited)
  (replay)   the postback was delivered before and its event came again (a
             redelivery): audited again, not sent again
  (refused)  the partner refused it for good: its answer fails the success rule
             (here a 200 with the body "ERROR ..."): dead-lettered, not retried
`

func printSummary(w io.Writer, s *Summary) {
	keys := make([][3]string, 0, len(s.Counts))
	for k := range s.Counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		for n := 0; n < 3; n++ {
			if keys[i][n] != keys[j][n] {
				return keys[i][n] < keys[j][n]
			}
		}
		return false
	})
	fmt.Fprintf(w, "\n%d player journeys, %d events → %d audit records, %d confirmations, %d dead letters in %s\n",
		s.Players, s.Events, len(s.Audit), len(s.Confirmations), len(s.DeadLetters), s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "postbacks: %d accepted by the partner's success rule, %d refused (dead-lettered as %s)\n\n",
		s.Accepted, s.Refused, reasonRefused)
	fmt.Fprintf(w, "%-10s  %-11s  %-23s  %6s\n", "partner", "goal", "outcome", "count")
	fmt.Fprintf(w, "%s\n", strings.Repeat("-", 55))
	for _, k := range keys {
		fmt.Fprintf(w, "%-10s  %-11s  %-23s  %6d\n", k[0], k[1], k[2], s.Counts[k])
	}
	fmt.Fprint(w, "\n"+legend)
	reasons := map[string]int{}
	for _, d := range s.DeadLetters {
		reasons[d.Reason]++
	}
	if len(reasons) > 0 {
		fmt.Fprintf(w, "\ndead letters by reason:")
		names := make([]string, 0, len(reasons))
		for r := range reasons {
			names = append(names, r)
		}
		sort.Strings(names)
		for _, r := range names {
			fmt.Fprintf(w, " %s=%d", r, reasons[r])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nsample postbacks as audited (tokens redacted):\n")
	shown := map[string]bool{}
	for _, a := range s.Audit {
		key := a.Network + "/" + a.Goal + "/" + a.Status
		if a.Outcome != record.OutcomeDelivered || a.URL == "" || shown[key] {
			continue
		}
		shown[key] = true
		fmt.Fprintf(w, "  %-22s %s\n", key, a.URL)
	}
}

// collector reads the output topics back, as an analyst's loader would.
type collector struct {
	brokers string
	mu      sync.Mutex
	sum     Summary
}

func newCollector(brokers string) *collector { return &collector{brokers: brokers} }

func (c *collector) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, topic := range []string{config.DefaultTopicDispatched, config.DefaultTopicConfirmed, config.DefaultTopicDLQ} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{c.brokers}, GroupID: "demo-reader-" + topic,
				Topic: topic, MaxWait: 50 * time.Millisecond, StartOffset: kafka.FirstOffset})
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				c.add(topic, m.Value)
			}
		}()
	}
	wg.Wait()
}

func (c *collector) add(topic string, v []byte) {
	// A record the demo cannot read is not counted; the summary's totals
	// would then fall short, which the demo reports as a timeout.
	c.mu.Lock()
	defer c.mu.Unlock()
	switch topic {
	case config.DefaultTopicDispatched:
		var a record.Audit
		if err := json.Unmarshal(v, &a); err == nil {
			c.sum.Audit = append(c.sum.Audit, a)
		}
	case config.DefaultTopicConfirmed:
		var r record.Confirmation
		if err := json.Unmarshal(v, &r); err == nil {
			c.sum.Confirmations = append(c.sum.Confirmations, r)
		}
	case config.DefaultTopicDLQ:
		var d record.DeadLetter
		if err := json.Unmarshal(v, &d); err == nil {
			c.sum.DeadLetters = append(c.sum.DeadLetters, d)
		}
	}
}

func (c *collector) phaseDone(s *script, phase int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	audited := make(map[string]bool, len(c.sum.Audit))
	withoutID := 0
	for _, a := range c.sum.Audit {
		if a.EventID == "" {
			withoutID++
		}
		audited[a.EventID] = true
	}
	return s.done(phase, audited, withoutID)
}

func (c *collector) snapshot() *Summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sum
	s.Audit = append([]record.Audit(nil), c.sum.Audit...)
	s.Confirmations = append([]record.Confirmation(nil), c.sum.Confirmations...)
	s.DeadLetters = append([]record.DeadLetter(nil), c.sum.DeadLetters...)
	return &s
}
