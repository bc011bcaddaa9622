package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
)

// procCPU reads a process's CPU seconds so far (user + system) from
// /proc/<pid>/stat.
func procCPU(pid int) (float64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return st.CPUTime(), nil
}

// machineCPU is the whole machine's CPU time so far, all cores, in
// seconds: busy (running anything), stolen (the hypervisor ran another
// guest while this one wanted to run) and in all.
type machineCPU struct {
	busy, steal, total float64
	cores              int // CPUs /proc/stat lists
}

// readMachineCPU reads the machine's CPU time from /proc/stat.
func readMachineCPU() (machineCPU, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return machineCPU{}, err
	}
	st, err := fs.Stat()
	if err != nil {
		return machineCPU{}, err
	}
	m := machineCPUOf(st.CPUTotal)
	m.cores = len(st.CPU)
	return m, nil
}

// machineCPUOf sums a /proc/stat cpu line. Idle and iowait are idle; guest
// time is left out, since the kernel counts it in user (and guest_nice in
// nice) already.
func machineCPUOf(c procfs.CPUStat) machineCPU {
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
	return machineCPU{busy: busy, steal: c.Steal, total: busy + c.Steal + c.Idle + c.Iowait}
}

// cpuShares is how the machine's CPU time between two readings was spent,
// as shares of it: busy 1 means every core ran something all the time.
type cpuShares struct {
	busy, steal float64
	cores       int
}

// sharesSince is the machine's CPU shares between an earlier reading and
// this one; ok is false when no time passed between the two.
func (m machineCPU) sharesSince(earlier machineCPU) (s cpuShares, ok bool) {
	total := m.total - earlier.total
	if total <= 0 {
		return s, false
	}
	share := func(v float64) float64 { return min(max(v/total, 0), 1) }
	return cpuShares{busy: share(m.busy - earlier.busy), steal: share(m.steal - earlier.steal), cores: m.cores}, true
}

// machineMeter measures the machine's CPU shares from its start. The zero
// value was never started and measures nothing.
type machineMeter struct {
	start   machineCPU
	started bool
}

func startMachineMeter() machineMeter {
	c, err := readMachineCPU()
	return machineMeter{start: c, started: err == nil}
}

// shares is how the machine's CPU time was spent since the meter started;
// ok is false when it was not started, cannot be read (not Linux) or no
// time passed.
func (m machineMeter) shares() (s cpuShares, ok bool) {
	if !m.started {
		return s, false
	}
	now, err := readMachineCPU()
	if err != nil {
		return s, false
	}
	return now.sharesSince(m.start)
}

// procSwitches counts the context switches of every thread of a process
// so far, voluntary (it blocked) and not (it was preempted): each is a
// thread put to sleep or woken, which costs the most where a core's wake-up
// is dear (a virtual machine).
func procSwitches(pid int) (uint64, error) {
	threads, err := procfs.AllThreads(pid)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, t := range threads {
		// A thread that exited since the listing fails the reading: its
		// switches would be missing from this total and not from an
		// earlier one.
		st, err := t.NewStatus()
		if err != nil {
			return 0, err
		}
		n += st.TotalCtxtSwitches()
	}
	return n, nil
}

// countSince is a counter's growth between two readings; ok is false when
// it shrank (a thread's count left the total), which is no measurement.
func countSince(before, after uint64) (n uint64, ok bool) {
	if after < before {
		return 0, false
	}
	return after - before, true
}

// memStatus is the resident set of a process: now and its peak (high water
// mark), in bytes.
type memStatus struct {
	rss, hwm int64
}

// procMem reads VmRSS and VmHWM from /proc/<pid>/status.
func procMem(pid int) (memStatus, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return memStatus{}, err
	}
	st, err := p.NewStatus()
	if err != nil {
		return memStatus{}, err
	}
	if st.VmRSS == 0 || st.VmHWM == 0 {
		return memStatus{}, errors.New("status: no VmRSS and VmHWM (a kernel thread, or not Linux)")
	}
	return memStatus{rss: int64(st.VmRSS), hwm: int64(st.VmHWM)}, nil
}

// promSample is one line of the Prometheus text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseProm reads the samples of a Prometheus text exposition (version
// 0.0.4). It handles what postbackd's /metrics serves: label values with
// escaped quotes, backslashes and newlines, no timestamps needed.
func parseProm(text string) ([]promSample, error) {
	var out []promSample
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parsePromLine(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w: %q", n+1, err, line)
		}
		out = append(out, s)
	}
	return out, nil
}

func parsePromLine(line string) (promSample, error) {
	s := promSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, errors.New("no value")
	}
	s.name = line[:i]
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " ,")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
				return s, errors.New("bad label")
			}
			key := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					switch rest[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(rest[j])
					}
					continue
				}
				if c == '"' {
					rest = rest[j+1:]
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return s, errors.New("unterminated label value")
			}
			s.labels[key] = val.String()
		}
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return s, errors.New("no value")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	return s, nil
}

// promTotals is what the harness reads from one scrape of a member.
type promTotals struct {
	redisByOp map[string]float64 // postbackd_redis_duration_seconds_count by op
	events    float64            // input events finished (consumed ok or invalid; retries not counted)
	inFlight  float64
	// waited: events stored to wait for their click's network
	// (postbackd_attribution_waits_total{stage="waiting"}); each is handled
	// again when released.
	waited float64
}

func totals(samples []promSample) promTotals {
	t := promTotals{redisByOp: map[string]float64{}}
	for _, s := range samples {
		switch s.name {
		case "postbackd_redis_duration_seconds_count":
			t.redisByOp[s.labels["op"]] += s.value
		case "postbackd_events_consumed_total":
			if s.labels["result"] != "retried" {
				t.events += s.value
			}
		case "postbackd_in_flight_events":
			t.inFlight += s.value
		case "postbackd_attribution_waits_total":
			if s.labels["stage"] == "waiting" {
				t.waited += s.value
			}
		}
	}
	return t
}

// sub is t minus an earlier scrape of the same process.
func (t promTotals) sub(before promTotals) promTotals {
	d := promTotals{redisByOp: map[string]float64{}, events: t.events - before.events, inFlight: t.inFlight, waited: t.waited - before.waited}
	for op, v := range t.redisByOp {
		if dv := v - before.redisByOp[op]; dv != 0 {
			d.redisByOp[op] = dv
		}
	}
	return d
}

// add sums the deltas of several members.
func (t promTotals) add(o promTotals) promTotals {
	s := promTotals{redisByOp: map[string]float64{}, events: t.events + o.events, inFlight: t.inFlight + o.inFlight, waited: t.waited + o.waited}
	for op, v := range t.redisByOp {
		s.redisByOp[op] += v
	}
	for op, v := range o.redisByOp {
		s.redisByOp[op] += v
	}
	return s
}

func (t promTotals) redisTotal() float64 {
	n := 0.0
	for _, v := range t.redisByOp {
		n += v
	}
	return n
}
