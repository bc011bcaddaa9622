package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/service"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: postbackd <command> [flags]

commands:
  run --config FILE                 consume events and dispatch postbacks
  check-config --config FILE        validate a configuration; connect nothing
  render --config FILE --event FILE|-
                                    the URL of every postback an event would make
  topics check --config FILE        report missing topics
  topics create --config FILE [--partitions N] [--replication N]
  replay --config FILE [--reason R] [--partner P] [--since T] [--until T] [--dry-run]
                                    send dead letters back to their input topics
  inspect --config FILE CLICK_ID    what Redis holds about a click
  send-test --config FILE --partner NAME [--goal GOAL]
                                    one marked test postback to the partner's endpoint
  rebuild-state --config FILE [--rewind-to TIME] [--dry-run]
                                    rebuild Redis state from the audit topic after a loss
  tracker [--addr ADDR]             run a local tracker that records postbacks
  version
`

// run is the whole program; main only wires the process to it. It returns
// the exit code: 0 success, 1 runtime failure, 2 usage or configuration error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], getenv, stderr)
	case "topics":
		return cmdTopics(ctx, args[1:], getenv, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], getenv, stdout, stderr)
	case "render":
		return cmdRender(args[1:], getenv, os.Stdin, stdout, stderr)
	case "send-test":
		return cmdSendTest(ctx, args[1:], getenv, stdout, stderr)
	case "replay":
		return cmdReplay(ctx, args[1:], getenv, stdout, stderr)
	case "inspect":
		return cmdInspect(ctx, args[1:], getenv, stdout, stderr)
	case "rebuild-state":
		return cmdRebuildState(ctx, args[1:], getenv, stdout, stderr)
	case "tracker":
		return cmdTracker(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "postbackd", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// commandFlags is the flag set of a command whose --help prints usage (its
// text) and then its flags, to stderr.
func commandFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseExit is the exit code after a flag parse error: 0 for --help (the
// usage was printed), 2 for a usage error.
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func loadConfig(fs *flag.FlagSet, args []string, getenv func(string) string, stderr io.Writer) (*config.Config, int) {
	path := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return nil, parseExit(err)
	}
	if *path == "" {
		fmt.Fprintln(stderr, "--config is required")
		return nil, 2
	}
	cfg, err := config.Load(*path, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "invalid configuration %s:\n%v\n", *path, err)
		return nil, 2
	}
	return cfg, 0
}

func cmdRun(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, code := loadConfig(fs, args, getenv, stderr)
	if cfg == nil {
		return code
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "log: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	if _, set := service.ApplyGCDefault(getenv); set {
		log.Info("garbage collector target", zap.Int("gogc", service.DefaultGCPercent), zap.String("why", "GOGC not set in the environment"))
	}
	svc, err := service.New(cfg, log, service.Options{})
	if err != nil {
		log.Error("start", zap.Error(err))
		return 1
	}
	if err := svc.Run(ctx); err != nil {
		log.Error("stopped with error", zap.Error(err))
		return 1
	}
	log.Info("stopped")
	return 0
}

func cmdTopics(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "check" && args[0] != "create") {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("topics "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	partitions := fs.Int("partitions", 4, "partitions of created topics")
	replication := fs.Int("replication", 1, "replication factor of created topics")
	cfg, code := loadConfig(fs, args[1:], getenv, stderr)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if args[0] == "create" {
		if err := service.CreateTopics(ctx, cfg, *partitions, *replication); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	if err := service.CheckTopics(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "all topics exist")
	return 0
}

// newLogger builds the zap logger: JSON by default, stable field names.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(strings.ToLower(c.Level))
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if c.Format == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	return zap.New(zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), level)), nil
}
