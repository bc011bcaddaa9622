// Command postbackd-demo runs postbackd end to end in one process, on an
// in-process Kafka and Redis and a local tracker, and shows what happened.
// It needs nothing but Go: `go run ./cmd/postbackd-demo`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/postbackd/postbackd/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("postbackd-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	players := fs.Int("players", demo.DefaultPlayers, "player journeys per merchant (the demo has two merchants)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := demo.Run(ctx, stdout, demo.Options{Players: *players}); err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	return 0
}
