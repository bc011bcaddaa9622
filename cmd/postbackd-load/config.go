package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/postbackd/postbackd/config"
)

// loadToken is the partner token of the load configuration, given to
// members as LOAD_TOKEN. The output never shows it (a test checks).
const loadToken = "load-secret"

// phaseConfig names what one phase's postbackd configuration differs in.
type phaseConfig struct {
	brokers, redisAddr, tracker string
	topics                      string // topic name prefix: <topics>.deposits, ...
	group                       string // consumer group
	keyPrefix                   string // Redis key prefix
	maxInFlight                 int
	admin                       bool // admin server on 127.0.0.1:0 (subprocess members)
}

// loadConfig is the configuration every phase runs: one partner taking
// every goal, and three merchants. The deposit goals' URLs are those of the
// deposit-only harness before the mixed stream was added, so its figures
// stay comparable.
const loadConfig = `
kafka: {brokers: [%[1]s], group_id: %[4]s}
redis: {addrs: [%[2]s], key_prefix: %[5]s, pool_size: 256}
topics:
  deposits: %[6]s.deposits
  revenue: %[6]s.revenue
  registrations: %[6]s.registrations
  qualifications: %[6]s.qualifications
  dispatched: %[6]s.dispatched
  confirmed: %[6]s.confirmed
  dlq: %[6]s.dlq
consumer: {max_in_flight: %[7]d, commit_interval: 200ms}
admin: %[8]s
log: {level: %[9]s}
partners:
  net:
    token: {env: LOAD_TOKEN}
    allowed_hosts: [127.0.0.1]
    goals:
      reg:  {url: "http://%[3]s/track/reg?click_id={click_id}&goal_alias={goal_alias}&offer_id={offer_id}&sub={param.custom2}&token={token}&transaction_id={transaction_id}"}
      ftd:  {url: "http://%[3]s/track/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&token={token}&transaction_id={transaction_id}"}
      rdep: {url: "http://%[3]s/track/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      revshare: {url: "http://%[3]s/track/rev?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      ftd_status: {url: "http://%[3]s/track/status?click_id={click_id}&amount={amount}&currency={currency}&conv_status={conv_status}&token={token}&transaction_id={transaction_id}"}
merchants:
  # The deposit-only streams have no registrations: waiting for one
  # (attribution_wait) would hold every click's first deposit a minute.
  ` + merchantDeposits + `: {default_partner: net, attribution_wait: 0s}
  # The mixed stream's clicks all register, naming their network: these
  # keep the default attribution_wait, as in production.
  ` + merchantCPA + `: {default_partner: net}
  ` + merchantHybrid + `: {default_partner: net, deal: hybrid}
`

func (p phaseConfig) yaml() string {
	admin, level := "{disabled: true}", "warn"
	if p.admin {
		// The harness reads the address from the member's info-level log
		// line "admin server listening".
		admin, level = `{addr: "127.0.0.1:0"}`, "info"
	}
	return fmt.Sprintf(loadConfig, p.brokers, p.redisAddr, p.tracker, p.group, p.keyPrefix, p.topics, p.maxInFlight, admin, level)
}

// parse checks the configuration as postbackd will read it.
func (p phaseConfig) parse() (*config.Config, error) {
	return config.Parse([]byte(p.yaml()), ".", func(k string) string {
		if k == "LOAD_TOKEN" {
			return loadToken
		}
		return ""
	})
}

// write parses the configuration and writes it to dir/<name>.yaml for a
// subprocess.
func (p phaseConfig) write(dir, name string) (*config.Config, string, error) {
	cfg, err := p.parse()
	if err != nil {
		return nil, "", fmt.Errorf("load configuration %s: %w", name, err)
	}
	path := filepath.Join(dir, name+".yaml")
	return cfg, path, os.WriteFile(path, []byte(p.yaml()), 0o600)
}
