// Command postbackd-load is the load harness: it measures postbackd's
// deposit path (consume, classify in Redis, GET, audit, commit) on a real
// Kafka and Redis against a counting tracker on loopback, and reports it as
// ratios against baselines measured in the same run:
//
//   - naive: one event at a time with kafka-go and go-redis, synchronous
//     audit write and commit (what DESIGN.md calls about 450/s);
//   - http-1conn: the raw HTTP leg alone, net/http GET to the same tracker
//     over one connection (the pace DESIGN.md sets as the target).
//
// Usage (real infrastructure from scripts/infra.sh):
//
//	eval "$(bash scripts/infra.sh up)"
//	go run ./cmd/postbackd-load -deposits 100000 -clicks 25000
//
// It stops by itself: every phase is bounded by -timeout.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("postbackd-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.deposits, "deposits", 100000, "deposits to produce")
	fs.IntVar(&o.clicks, "clicks", 25000, "distinct clicks the deposits spread over")
	fs.IntVar(&o.partitions, "partitions", 4, "partitions of the deposits topic")
	fs.IntVar(&o.naive, "naive-events", 3000, "events the naive baseline processes (it is slow)")
	fs.DurationVar(&o.timeout, "timeout", 0, "bound of each phase (default: scaled to the event count)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 4096, "postbackd consumer.max_in_flight")
	brokers := fs.String("brokers", getenv("KAFKA_BROKERS"), "Kafka bootstrap brokers (comma separated)")
	redisAddr := fs.String("redis", getenv("REDIS_ADDR"), "Redis address")
	fs.StringVar(&o.goroutineDump, "goroutines", "", "write a goroutine dump half way through the postbackd phase")
	fs.DurationVar(&o.latencyFor, "latency", 5*time.Second, "how long to offer half the measured rate for the latency probe (0: skip)")
	fs.BoolVar(&o.verbose, "v", false, "print progress every second")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the postbackd phase to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *brokers == "" || *redisAddr == "" {
		fmt.Fprintln(stderr, "set KAFKA_BROKERS and REDIS_ADDR (eval \"$(bash scripts/infra.sh up)\") or pass -brokers and -redis")
		return 2
	}
	o.brokers, o.redisAddr = *brokers, *redisAddr
	if err := measure(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "load:", err)
		return 1
	}
	return 0
}
