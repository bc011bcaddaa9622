package demo

// configTemplate is the demo's configuration: the two partner styles of
// DESIGN.md on one local tracker. %[1]s is the Kafka address, %[2]s Redis,
// %[3]s the tracker's host:port.
const configTemplate = `
kafka:
  brokers: [%[1]s]
  group_id: postbackd-demo
redis:
  addrs: [%[2]s]
consumer:
  commit_interval: 100ms
  drain_timeout: 5s
  session_timeout: 6s
delayed:
  poll_interval: 200ms
qualification:
  window: 3s
admin:
  disabled: true
log:
  level: warn
partners:
  scaleo:
    token: {env: DEMO_SCALEO_TOKEN}
    allowed_hosts: [127.0.0.1]
    timeout: 2s
    retry: {quick_attempts: 3, initial_interval: 20ms, max_interval: 100ms, delayed_initial: 1s, delayed_max: 2s}
    status_words: {pending: pending, approved: approved, rejected: rejected}
    goals:
      reg:        {alias: registration, url: "http://%[3]s/track/conv?click_id={click_id}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      ftd:        {alias: ftd, url: "http://%[3]s/track/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&token={token}&transaction_id={transaction_id}&custom2={param.custom2}"}
      ftd_status: {alias: ftd, url: "http://%[3]s/track/conv-change?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&token={token}"}
      rdep:       {alias: rdep, url: "http://%[3]s/track/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      revshare:   {alias: revshare, url: "http://%[3]s/track/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
  datingnet:
    token: {env: DEMO_DATING_TOKEN}
    allowed_hosts: [127.0.0.1]
    timeout: 2s
    retry: {quick_attempts: 2, initial_interval: 20ms, max_interval: 100ms, delayed_initial: 1s, delayed_max: 2s}
    success: {statuses: [200], body_pattern: "^OK"}
    tracker_string: {param: tr, pattern: "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID"}
    goals:
      reg:      {alias: free_reg, url: "http://%[3]s/postback?goal={goal_alias}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&key={token}"}
      trial:    {alias: trial, url: "http://%[3]s/postback?goal={goal_alias}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&key={token}"}
      ftd:      {alias: signup, url: "http://%[3]s/postback?goal={goal_alias}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&amount={amount}&currency={currency}&tid={transaction_id}&key={token}"}
      rdep:     {alias: rebill, url: "http://%[3]s/postback?goal={goal_alias}&affid={tr.affid}&transid={tr.transid}&clickid={tr.clickid}&offer={offer_id}&amount={amount}&currency={currency}&tid={transaction_id}&key={token}"}
merchants:
  casino-1:  {default_partner: scaleo, deal: hybrid, revshare_percent: 35}
  dating-1:  {default_partner: datingnet, deal: cpa}
`
