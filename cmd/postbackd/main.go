// Command postbackd turns payment events from Kafka into S2S postbacks.
// The embedded demo is a separate command, cmd/postbackd-demo, so that the
// in-process fakes it runs on never ship in the production binary.
//
//	postbackd run --config FILE          consume and dispatch (the service)
//	postbackd topics check|create ...    check or create the topics of a config
//	postbackd rebuild-state --config FILE   rebuild Redis state from the audit topic
//	postbackd tracker --addr :8080       a local tracker that records postbacks
//	postbackd version
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
