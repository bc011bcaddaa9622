// Command postbackd-load is the load harness: it runs postbackd (the real
// binary, built once with go build, in subprocesses) on a real Kafka and
// Redis against a counting tracker on loopback, and prints one table: every
// figure absolute and as a ratio against a baseline measured in the same
// run, with the command that reproduces it. Baselines:
//
//   - http-1conn: the raw HTTP leg alone, net/http GET to the same tracker
//     over one connection (the pace the design target is derived from), and
//     the CPU the harness spends on it per 10 000 requests;
//   - http-1conn-fasthttp: the same leg with fasthttp, the library postbackd
//     sends with (its default settings), so that a ratio against it holds
//     the client library constant;
//   - naive: one event at a time with kafka-go and go-redis, synchronous
//     audit write and commit (the design target's starting point, about
//     450/s when it was set), and its Redis round trips per event;
//   - http-1conn again, measured last: how far the leg itself moved over
//     the run, which bounds how far any ratio to it can be trusted.
//
// Phases, each bounded by a timeout:
//
//   - deposit-only stream: -deposits over -clicks (consume, classify, GET,
//     audit, commit), postbacks/s, CPU seconds per 10 000 postbacks and
//     thread switches per postback, peak RSS, Redis round trips per event
//     (in total and per op), how busy the machine was and what the
//     hypervisor took; then the
//     latency from publication to the tracker at fractions of the measured
//     rate (-latency-at, a quarter and a half by default: p50, p95, p99,
//     p999, max), with what each rate costs postbackd (CPU, thread switches)
//     and Redis, and how busy the whole machine was meanwhile;
//   - mixed funnel: -mixed-clicks clicks, each with a registration, an FTD
//     and 0-4 repeat deposits, a revenue event for the hybrid merchant's
//     clicks and a qualification, on the four input topics; in two shapes
//     (-mixed-shapes): steady, four cohorts of clicks each at one stage of
//     its life (the earlier stages consumed first, unmeasured), as
//     production has them, and cold, every stage of new clicks at once;
//   - backlog: -backlog deposits in the topic before postbackd starts:
//     sustained rate, slowest 10 s window, peak RSS;
//   - scale-out: 1, 2, 4 members of one group on 8 partitions (-scaleout),
//     then back down again (4, 2, 1: each size twice, mirrored in time, so
//     a drift of the machine cancels in the means); and the pause a rebalance
//     causes at the tracker when a member joins and when one is killed;
//   - with -cpuprofile, -memprofile (or -goroutines), the deposit-only stream once more
//     in-process, since postbackd's admin server has no pprof.
//
// CPU and memory are the subprocesses' own (/proc/<pid>/stat and status),
// apart from the harness, the producer and the tracker.
//
// Usage (real infrastructure from scripts/infra.sh):
//
//	eval "$(bash scripts/infra.sh up)"
//	go run ./cmd/postbackd-load                                  # the full profile
//	go run ./cmd/postbackd-load -deposits 20000 -clicks 5000 -mixed-clicks 4000 \
//	    -backlog 50000 -scaleout-events 40000                    # a quick one
//
// The run's topics and Redis keys are deleted at the end (-keep keeps them;
// -cleanup RUN deletes them later).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/postbackd/postbackd/config"
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
	fs.IntVar(&o.deposits, "deposits", 100000, "deposits of the deposit-only stream")
	fs.IntVar(&o.clicks, "clicks", 25000, "distinct clicks the deposits spread over")
	fs.IntVar(&o.partitions, "partitions", 4, "partitions of the deposit-only, mixed and backlog topics")
	fs.IntVar(&o.naive, "naive-events", 3000, "events the naive baseline processes (it is slow)")
	fs.DurationVar(&o.timeout, "timeout", 0, "bound of each phase (default: a minute plus a millisecond per postback)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", config.DefaultMaxInFlight, "postbackd consumer.max_in_flight")
	fs.IntVar(&o.mixedClicks, "mixed-clicks", 20000, "clicks of the mixed four-topic funnel, 5.5 events each (0: skip)")
	mixedShapes := fs.String("mixed-shapes", defaultMixedShapes, fmt.Sprintf("the mixed funnel's shapes, in order: steady (%s) and cold (%s)", shapeSteady.describe(), shapeCold.describe()))
	fs.IntVar(&o.backlog, "backlog", 1000000, "deposits in the topic before postbackd starts (0: skip)")
	scaleout := fs.String("scaleout", "1,2,4", "group sizes of the scale-out runs (0: skip scale-out and the rebalance pause)")
	fs.IntVar(&o.scaleoutEvents, "scaleout-events", 200000, "deposits of each scale-out run")
	fs.IntVar(&o.scaleoutPartitions, "scaleout-partitions", 8, "partitions of the scale-out and rebalance topics")
	fs.Float64Var(&o.rebalanceRate, "rebalance-rate", 1000, "deposits/s of the steady stream the rebalance pause is measured on")
	brokers := fs.String("brokers", getenv("KAFKA_BROKERS"), "Kafka bootstrap brokers (comma separated)")
	redisAddr := fs.String("redis", getenv("REDIS_ADDR"), "Redis address")
	fs.StringVar(&o.binary, "postbackd", "", "postbackd binary to run (default: go build ./cmd/postbackd into a temporary directory)")
	fs.StringVar(&o.goroutineDump, "goroutines", "", "write a goroutine dump half way through an in-process deposit-only run")
	fs.DurationVar(&o.latencyFor, "latency", 5*time.Second, "how long each latency probe offers its rate (0: skip the probes)")
	latencyAt := fs.String("latency-at", defaultLatencyAt, "the latency probes' rates, as fractions of the deposit-only stream's measured rate, in order")
	fs.BoolVar(&o.verbose, "v", false, "print progress every second")
	fs.BoolVar(&o.keep, "keep", false, "keep the run's topics, Redis keys, member configurations and logs")
	cleanupRun := fs.String("cleanup", "", "delete the topics and Redis keys of an earlier run (the id its table header names) and exit")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "run the deposit-only stream once more in-process and write its CPU profile to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "run the deposit-only stream once more in-process and write its allocation profile to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	var err error
	if o.scaleout, err = parseSizes(*scaleout); err != nil {
		fmt.Fprintf(stderr, "-scaleout: %v\n", err)
		return 2
	}
	if o.mixedShapes, err = parseShapes(*mixedShapes); err != nil {
		fmt.Fprintf(stderr, "-mixed-shapes: %v\n", err)
		return 2
	}
	if o.latencyAt, err = parseFractions(*latencyAt); err != nil {
		fmt.Fprintf(stderr, "-latency-at: %v\n", err)
		return 2
	}
	if o.deposits < 1 || o.clicks < 1 || o.partitions < 1 || o.naive < 2 || o.scaleoutPartitions < 1 || o.mixedClicks < 0 || o.backlog < 0 || o.scaleoutEvents < 0 || o.rebalanceRate <= 0 {
		fmt.Fprintln(stderr, "-deposits, -clicks, -partitions, -scaleout-partitions and -rebalance-rate must be positive, -naive-events at least 2, -mixed-clicks, -backlog and -scaleout-events not negative")
		return 2
	}
	if *brokers == "" || *redisAddr == "" {
		fmt.Fprintln(stderr, "set KAFKA_BROKERS and REDIS_ADDR (eval \"$(bash scripts/infra.sh up)\") or pass -brokers and -redis")
		return 2
	}
	o.brokers, o.redisAddr = *brokers, *redisAddr
	if *cleanupRun != "" {
		if !regexp.MustCompile(`^[0-9a-f]{6}$`).MatchString(*cleanupRun) {
			fmt.Fprintf(stderr, "-cleanup: a run id is six hex digits, got %q\n", *cleanupRun)
			return 2
		}
		if err := cleanup(o.brokers, o.redisAddr, *cleanupRun, stderr); err != nil {
			fmt.Fprintln(stderr, "load: cleanup:", err)
			return 1
		}
		return 0
	}
	if err := measure(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "load:", err)
		return 1
	}
	return 0
}

// defaultLatencyAt are the latency probes' rates unless -latency-at says:
// the target's half of the measured rate, and a quarter to show the slope.
const defaultLatencyAt = "0.25,0.5"

// parseFractions parses a comma-separated list of rates as fractions of a
// measured rate, each in (0, 1]: above the measured rate the backlog, not
// postbackd, would set the latency.
func parseFractions(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(v > 0 && v <= 1) {
			return nil, fmt.Errorf("want a comma-separated list of fractions in (0, 1], got %q", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// defaultMixedShapes: the steady funnel, the one the targets are read on,
// then the cold one.
const defaultMixedShapes = "steady,cold"

// parseShapes parses a comma-separated list of funnel shapes, each once.
func parseShapes(s string) ([]funnelShape, error) {
	var out []funnelShape
	for _, f := range strings.Split(s, ",") {
		var shape funnelShape
		switch strings.TrimSpace(f) {
		case "steady":
			shape = shapeSteady
		case "cold":
			shape = shapeCold
		default:
			return nil, fmt.Errorf("want a comma-separated list of steady and cold, got %q", s)
		}
		if slices.Contains(out, shape) {
			// A shape's phase has one set of topics, keys and click ids.
			return nil, fmt.Errorf("%s twice in %q", shape, s)
		}
		out = append(out, shape)
	}
	return out, nil
}

// parseSizes parses a comma-separated list of group sizes ("0" or "":
// none).
func parseSizes(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("want a comma-separated list of positive sizes, got %q", s)
		}
		out = append(out, n)
	}
	return out, nil
}
