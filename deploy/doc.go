// Package deploy holds no code: it is the home of postbackd's deployment
// files and of the tests that keep them true to the code.
//
//   - kubernetes/: Deployment, ConfigMap, Secret example, Service,
//     PodDisruptionBudget, KEDA ScaledObject and their kustomization.yaml
//   - prometheus/: alerting rules and their promtool unit tests
//   - grafana/: the dashboard
//   - compose-config.yaml: the configuration docker-compose.yml mounts
//
// The tests (go test ./deploy/...) need no server. They build the real
// binary and check every command line against its flags, load every
// configuration with config.Load, ask the real admin server for the probe
// paths, and check every metric name and label in the rules and the
// dashboard against the registry of metrics.New. See README.md here.
package deploy
