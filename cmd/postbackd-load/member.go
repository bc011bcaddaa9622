package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildPostbackd builds ./cmd/postbackd of this module into dir, once per
// run, with the go command on PATH.
func buildPostbackd(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the postbackd module: run the harness from the repository, or pass -postbackd BINARY")
	}
	bin := filepath.Join(dir, "postbackd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/postbackd")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/postbackd: %w\n%s", err, out)
	}
	return bin, nil
}

// member is one `postbackd run` subprocess, a member of a consumer group.
type member struct {
	name   string
	cmd    *exec.Cmd
	pid    int
	adminc chan string
	admin  string
	exited chan struct{}

	mu      sync.Mutex
	gens    []generation // "generation joined", in order
	tail    []string     // last lines of its log
	state   *os.ProcessState
	waitErr error
	logPath string
}

// generation is one "generation joined" line of a member's log.
type generation struct {
	id int32
	at time.Time
}

// memberEnv is the environment of a member: the harness's, without
// POSTBACKD_* overrides (they would change the configuration under test),
// plus the partner token the load configuration reads.
func memberEnv(environ []string) []string {
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if strings.HasPrefix(kv, "POSTBACKD_") || strings.HasPrefix(kv, "LOAD_TOKEN=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LOAD_TOKEN="+loadToken)
}

// startMember starts `bin run --config cfgPath`; its log (JSON, info
// level) goes to logPath and is read for the admin address and the
// generations it joins.
func startMember(name, bin, cfgPath, logPath string) (*member, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	m := &member{name: name, adminc: make(chan string, 1), exited: make(chan struct{}), logPath: logPath}
	m.cmd = exec.Command(bin, "run", "--config", cfgPath)
	m.cmd.Env = memberEnv(os.Environ())
	// A member dies with the harness, however the harness ends.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	m.pid = m.cmd.Process.Pid
	go func() {
		defer close(m.exited)
		m.readLog(io.TeeReader(stderr, logf))
		err := m.cmd.Wait()
		logf.Close()
		m.mu.Lock()
		m.state, m.waitErr = m.cmd.ProcessState, err
		m.mu.Unlock()
	}()
	return m, nil
}

// logLine is the part of a member's JSON log line the harness reads.
type logLine struct {
	Msg        string `json:"msg"`
	Addr       string `json:"addr"`
	Generation *int32 `json:"generation"`
}

func (m *member) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		m.mu.Lock()
		m.tail = append(m.tail, line)
		if len(m.tail) > 20 {
			m.tail = m.tail[len(m.tail)-20:]
		}
		m.mu.Unlock()
		var l logLine
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch {
		case l.Msg == "admin server listening" && l.Addr != "":
			select {
			case m.adminc <- l.Addr:
			default:
			}
		case l.Msg == "generation joined" && l.Generation != nil:
			m.mu.Lock()
			m.gens = append(m.gens, generation{id: *l.Generation, at: time.Now()})
			m.mu.Unlock()
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// waitAdmin waits for the member to log its admin address.
func (m *member) waitAdmin(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-m.adminc:
		m.admin = a
		return nil
	case <-m.exited:
		return fmt.Errorf("%s exited before its admin server started: %v\n%s", m.name, m.waitErr, m.logTail())
	case <-t.C:
		return fmt.Errorf("%s: no admin address logged within %s\n%s", m.name, timeout, m.logTail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *member) logTail() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return "  " + strings.Join(m.tail, "\n  ") + "\n  (log: " + m.logPath + ")"
}

// lastGeneration is the id of the last generation the member joined (-1:
// none yet).
func (m *member) lastGeneration() (int32, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.gens) == 0 {
		return -1, time.Time{}
	}
	g := m.gens[len(m.gens)-1]
	return g.id, g.at
}

func (m *member) alive() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

var adminClient = &http.Client{Timeout: 5 * time.Second}

// scrape reads the member's /metrics.
func (m *member) scrape(ctx context.Context) (promTotals, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.admin+"/metrics", nil)
	res, err := adminClient.Do(req)
	if err != nil {
		return promTotals{}, fmt.Errorf("%s /metrics: %w", m.name, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return promTotals{}, fmt.Errorf("%s /metrics: %w", m.name, err)
	}
	if res.StatusCode != http.StatusOK {
		return promTotals{}, fmt.Errorf("%s /metrics: %s", m.name, res.Status)
	}
	s, err := parseProm(string(b))
	if err != nil {
		return promTotals{}, fmt.Errorf("%s /metrics: %w", m.name, err)
	}
	return totals(s), nil
}

// usage is what a member cost, read after it exited.
type usage struct {
	cpu    float64 // user + system seconds, whole life
	maxRSS int64   // bytes
}

// stop sends SIGTERM (a clean stop: drain, commit) and waits up to
// timeout, then kills.
func (m *member) stop(timeout time.Duration) (usage, error) {
	if m.alive() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case <-m.exited:
	case <-t.C:
		_ = m.cmd.Process.Kill()
		<-m.exited
		err = fmt.Errorf("%s did not stop within %s of SIGTERM; killed", m.name, timeout)
	}
	return m.usage(), err
}

// kill sends SIGKILL and waits for the exit.
func (m *member) kill() {
	_ = m.cmd.Process.Kill()
	<-m.exited
}

func (m *member) usage() usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		return usage{}
	}
	u := usage{cpu: (m.state.UserTime() + m.state.SystemTime()).Seconds()}
	if ru, ok := m.state.SysUsage().(*syscall.Rusage); ok {
		u.maxRSS = ru.Maxrss << 10 // kB on Linux
	}
	return u
}
