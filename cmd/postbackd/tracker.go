package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/postbackd/postbackd/internal/tracker"
)

// cmdTracker runs a local tracker that answers 200 and prints every postback
// it receives: the far end for docker-compose and for trying postbackd out.
func cmdTracker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tracker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	var mu sync.Mutex
	tr := tracker.New(tracker.Options{OnRequest: func(r tracker.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, "%s %s %s\n", r.At.UTC().Format(time.RFC3339Nano), r.Path, r.Query.Encode())
	}, CountOnly: true})
	srv := &http.Server{Addr: *addr, Handler: tr, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		fmt.Fprintln(stderr, err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
