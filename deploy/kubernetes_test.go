package deploy

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/admin"
	"github.com/postbackd/postbackd/metrics"
)

// measuredPeakRSS is the peak resident set measured with a backlog of 1M
// events (150-164 MiB at the default GOGC=200 with the fasthttp client and
// its 32 KiB read buffers; README, Performance): the memory request must
// cover it.
const measuredPeakRSS = 164 << 20

// shutdownMargin is what terminationGracePeriodSeconds must leave beyond
// consumer.drain_timeout and the consumer's cancel grace (the HTTP attempts
// in flight run to their answer or timeout; config.CancelGrace): the final
// commit, the admin server's shutdown (up to 5s) and closing the clients.
const shutdownMargin = 13 * time.Second

// k8s is the Deployment's container as it would run: its manifests, its
// command line checked against the binary, its volumes written to a
// directory standing for the container's file system, and the
// configuration it reads, loaded from there.
type k8s struct {
	ms        *manifests
	dep       deployment
	c         container
	cmd       commandLine
	root      string // the container's "/" in a temporary directory
	cfg       *config.Config
	adminPort int
	// files maps each file the configuration names to the volume it is in.
	files map[string]volume
}

func loadK8s(t *testing.T) *k8s {
	t.Helper()
	k := &k8s{ms: loadManifests(t), root: t.TempDir(), files: map[string]volume{}}
	k.dep = one(t, "Deployment", k.ms.deployments)
	k.c = one(t, "container in the Deployment", k.dep.Spec.Template.Spec.Containers)
	if len(k.c.Command) > 0 {
		t.Fatalf("container %s: command %q replaces the image's ENTRYPOINT (the binary); use args", k.c.Name, k.c.Command)
	}
	k.cmd = checkArgs(t, "deployment.yaml: container "+k.c.Name+" args", k.c.Args)
	if !slices.Equal(k.cmd.words, []string{"run"}) {
		t.Fatalf("deployment.yaml: the container runs %q, want the service: run", k.cmd.words)
	}
	k.materialize(t)

	path := k.cmd.flags["config"]
	if path == "" {
		t.Fatal("deployment.yaml: run without --config")
	}
	if v, ok := k.volumeOf(path); !ok || v.ConfigMap == nil {
		t.Fatalf("deployment.yaml: --config %s is not in a mounted ConfigMap", path)
	}
	local := filepath.Join(k.root, path)
	raw, err := os.ReadFile(local)
	if err != nil {
		t.Fatalf("deployment.yaml: --config %s: no such key in the mounted ConfigMap: %v", path, err)
	}
	// Absolute paths in the configuration point into the container: make
	// them point into k.root.
	var pairs []string
	for _, m := range k.mountPaths() {
		pairs = append(pairs, m+"/", filepath.Join(k.root, m)+"/")
	}
	if err := os.WriteFile(local, []byte(strings.NewReplacer(pairs...).Replace(string(raw))), 0o600); err != nil {
		t.Fatal(err)
	}
	k.cfg, err = config.Load(local, k.getenv(t))
	if err != nil {
		t.Fatalf("configmap.yaml's %s does not load with config.Load (env of the container):\n%v", filepath.Base(path), err)
	}
	for _, f := range referencedFiles(k.cfg) {
		rel, ok := strings.CutPrefix(f.path, k.root)
		if !ok {
			t.Errorf("configuration: %s names %s, which is in no volume of the Deployment", f.key, f.path)
			continue
		}
		v, ok := k.volumeOf(rel)
		if !ok {
			t.Errorf("configuration: %s names %s, which is in no volume of the Deployment", f.key, rel)
			continue
		}
		k.files[rel] = v
	}
	if k.cfg.Admin.Disabled {
		t.Fatal("configuration: admin.disabled: the probes need the admin server")
	}
	k.adminPort = portOf(t, k.cfg.Admin.Addr)
	return k
}

// mountPaths lists the container's mount paths, longest first.
func (k *k8s) mountPaths() []string {
	var ps []string
	for _, m := range k.c.VolumeMounts {
		ps = append(ps, filepath.Clean(m.MountPath))
	}
	sort.Slice(ps, func(i, j int) bool { return len(ps[i]) > len(ps[j]) })
	return ps
}

// volumeOf returns the volume a container path lies in.
func (k *k8s) volumeOf(path string) (volume, bool) {
	path = filepath.Clean(path)
	best := ""
	var name string
	for _, m := range k.c.VolumeMounts {
		mp := filepath.Clean(m.MountPath)
		if (path == mp || strings.HasPrefix(path, mp+"/")) && len(mp) > len(best) {
			best, name = mp, m.Name
		}
	}
	for _, v := range k.dep.Spec.Template.Spec.Volumes {
		if best != "" && v.Name == name {
			return v, true
		}
	}
	return volume{}, false
}

// materialize writes every mounted volume under k.root as the kubelet
// would: a ConfigMap's or Secret's keys (or its items) as files.
func (k *k8s) materialize(t *testing.T) {
	t.Helper()
	vols := map[string]volume{}
	for _, v := range k.dep.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range k.c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Fatalf("deployment.yaml: volumeMount %s names no volume", m.Name)
		}
		if !m.ReadOnly && v.EmptyDir == nil {
			t.Errorf("deployment.yaml: volumeMount %s is not readOnly", m.Name)
		}
		dir := filepath.Join(k.root, m.MountPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var data map[string]string
		var items []keyToPath
		switch {
		case v.ConfigMap != nil:
			cm, ok := findByName(k.ms.configMaps, v.ConfigMap.Name, func(c configMap) string { return c.Metadata.Name })
			if !ok {
				t.Fatalf("deployment.yaml: volume %s: no ConfigMap %s among the manifests", v.Name, v.ConfigMap.Name)
			}
			data, items = cm.Data, v.ConfigMap.Items
		case v.Secret != nil:
			s, ok := findByName(k.ms.secrets, v.Secret.SecretName, func(s secret) string { return s.Metadata.Name })
			if !ok {
				t.Fatalf("deployment.yaml: volume %s: no Secret %s among the manifests (secret.example.yaml shows it)", v.Name, v.Secret.SecretName)
			}
			if v.Secret.Optional != nil && *v.Secret.Optional {
				t.Errorf("deployment.yaml: volume %s: an optional Secret lets postbackd start without its secrets", v.Name)
			}
			if mode := v.Secret.DefaultMode; mode != nil && *mode&0o007 != 0 {
				t.Errorf("deployment.yaml: volume %s: defaultMode %#o lets every user read the secrets", v.Name, *mode)
			}
			data, items = s.StringData, v.Secret.Items
		case v.EmptyDir != nil:
			continue
		default:
			t.Fatalf("deployment.yaml: volume %s: a kind this test does not know", v.Name)
		}
		if len(items) == 0 {
			for key := range data {
				items = append(items, keyToPath{Key: key, Path: key})
			}
		}
		for _, it := range items {
			val, ok := data[it.Key]
			if !ok {
				t.Fatalf("deployment.yaml: volume %s: item %s is not a key of its source", v.Name, it.Key)
			}
			if err := os.WriteFile(filepath.Join(dir, it.Path), []byte(val), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func findByName[T any](xs []T, name string, nameOf func(T) string) (T, bool) {
	for _, x := range xs {
		if nameOf(x) == name {
			return x, true
		}
	}
	var zero T
	return zero, false
}

// getenv is the container's environment: literal values and Secret keys.
func (k *k8s) getenv(t *testing.T) func(string) string {
	t.Helper()
	env := map[string]string{}
	for _, e := range k.c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := findByName(k.ms.secrets, ref.Name, func(s secret) string { return s.Metadata.Name })
			if !ok || s.StringData[ref.Key] == "" {
				t.Errorf("deployment.yaml: env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = s.StringData[ref.Key]
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "fieldref-" + e.ValueFrom.FieldRef.FieldPath
		}
	}
	return func(name string) string { return env[name] }
}

// fileRef is a file the configuration reads, and the key naming it.
type fileRef struct{ key, path string }

// referencedFiles lists every file a loaded configuration reads: secret
// files and TLS files.
func referencedFiles(cfg *config.Config) []fileRef {
	var refs []fileRef
	add := func(key, path string) {
		if path != "" {
			refs = append(refs, fileRef{key, path})
		}
	}
	add("kafka.sasl.password.file", cfg.Kafka.SASL.Password.File)
	add("redis.password.file", cfg.Redis.Password.File)
	for _, tl := range []struct {
		key string
		tls config.TLS
	}{{"kafka.tls", cfg.Kafka.TLS}, {"redis.tls", cfg.Redis.TLS}} {
		add(tl.key+".ca_file", tl.tls.CAFile)
		add(tl.key+".cert_file", tl.tls.CertFile)
		add(tl.key+".key_file", tl.tls.KeyFile)
	}
	for name, p := range cfg.Partners {
		add("partners."+name+".token.file", p.Token.File)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].key < refs[j].key })
	return refs
}

// inputTopics are the topics the consumer group reads
// (pipeline.InputTopics).
func inputTopics(cfg *config.Config) []string {
	t := cfg.Topics
	return []string{t.Deposits, t.Revenue, t.Registrations, t.Qualifications}
}

// portNumber resolves a probe's or a Service's port (a number or the name
// of a container port).
func (k *k8s) portNumber(t *testing.T, where string, p intOrString) int {
	t.Helper()
	if n, err := strconv.Atoi(string(p)); err == nil {
		return n
	}
	for _, cp := range k.c.Ports {
		if cp.Name == string(p) {
			return cp.ContainerPort
		}
	}
	t.Errorf("%s: port %q is no container port's name", where, p)
	return -1
}

// TestDeploymentRunsTheService: the container runs "postbackd run" with
// only flags the binary defines, and the configuration it names loads with
// config.Load from the mounted ConfigMap, its secret files coming from the
// mounted Secret (every file it names is in a volume).
func TestDeploymentRunsTheService(t *testing.T) {
	k := loadK8s(t)
	if len(k.files) == 0 {
		t.Error("configuration: reads no file: the partners' tokens should come from the mounted Secret")
	}
	for _, f := range referencedFiles(k.cfg) {
		t.Logf("%s -> %s", f.key, strings.TrimPrefix(f.path, k.root))
	}
	for name, p := range k.cfg.Partners {
		if p.Token.Env != "" {
			t.Errorf("configuration: partners.%s.token comes from env %s; mount it from the Secret as a file", name, p.Token.Env)
		}
	}
}

// TestSecretKeysAreTheConfiguredFiles: the Secret's keys are exactly the
// files the configuration reads from the Secret's mount: none missing (the
// pod would not start), none left over (a stale secret).
func TestSecretKeysAreTheConfiguredFiles(t *testing.T) {
	k := loadK8s(t)
	want := map[string][]string{} // secret name -> keys the config reads
	for path, v := range k.files {
		if v.Secret == nil {
			continue
		}
		mount := ""
		for _, m := range k.c.VolumeMounts {
			if m.Name == v.Name {
				mount = filepath.Clean(m.MountPath)
			}
		}
		want[v.Secret.SecretName] = append(want[v.Secret.SecretName], strings.TrimPrefix(path, mount+"/"))
	}
	if len(want) == 0 {
		t.Fatal("the configuration reads no file from a mounted Secret")
	}
	for _, s := range k.ms.secrets {
		var have []string
		for key := range s.StringData {
			have = append(have, key)
		}
		sort.Strings(have)
		w := want[s.Metadata.Name]
		sort.Strings(w)
		if !slices.Equal(have, w) {
			t.Errorf("Secret %s has keys %q; the configuration reads %q from it", s.Metadata.Name, have, w)
		}
	}
}

// TestDeploymentProbesAndPorts: the container port is admin.addr's port,
// every probe and the Prometheus annotations use it, and their paths are
// what the real admin server serves for them: liveness and start-up on a
// path that stays 200 while a dependency is down (a restart would not
// help), readiness on one that turns 503 then.
func TestDeploymentProbesAndPorts(t *testing.T) {
	k := loadK8s(t)
	found := false
	for _, p := range k.c.Ports {
		if p.ContainerPort == k.adminPort {
			found = true
			if p.Name != "admin" {
				t.Errorf("deployment.yaml: container port %d is named %q, want admin", p.ContainerPort, p.Name)
			}
		}
	}
	if !found {
		t.Errorf("deployment.yaml: no container port %d (admin.addr %s)", k.adminPort, k.cfg.Admin.Addr)
	}
	probes := []struct {
		name      string
		p         *probe
		readiness bool
	}{
		{"startupProbe", k.c.StartupProbe, false},
		{"livenessProbe", k.c.LivenessProbe, false},
		{"readinessProbe", k.c.ReadinessProbe, true},
	}
	for _, pr := range probes {
		where := "deployment.yaml: " + pr.name
		if pr.p == nil || pr.p.HTTPGet == nil {
			if pr.name == "startupProbe" && pr.p == nil {
				continue
			}
			t.Errorf("%s: want an httpGet probe", where)
			continue
		}
		if got := k.portNumber(t, where, pr.p.HTTPGet.Port); got != k.adminPort {
			t.Errorf("%s: port %s is %d, admin.addr is %s", where, pr.p.HTTPGet.Port, got, k.cfg.Admin.Addr)
		}
		up, down := adminStatus(t, pr.p.HTTPGet.Path, true), adminStatus(t, pr.p.HTTPGet.Path, false)
		if pr.readiness && (up != http.StatusOK || down != http.StatusServiceUnavailable) {
			t.Errorf("%s: GET %s answers %d when ready and %d when a dependency is down; want 200 and 503 (/readyz)", where, pr.p.HTTPGet.Path, up, down)
		}
		if !pr.readiness && (up != http.StatusOK || down != http.StatusOK) {
			t.Errorf("%s: GET %s answers %d when ready and %d when a dependency is down; want 200 both (/healthz): a dependency down is no reason to restart", where, pr.p.HTTPGet.Path, up, down)
		}
		if pr.readiness && pr.p.TimeoutSeconds < 7 {
			t.Errorf("%s: timeoutSeconds %d; /readyz runs three checks of up to 2s each", where, pr.p.TimeoutSeconds)
		}
	}
	ann := k.dep.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/port"] != strconv.Itoa(k.adminPort) {
		t.Errorf("deployment.yaml: annotation prometheus.io/port %q, admin port %d", ann["prometheus.io/port"], k.adminPort)
	}
	if path := ann["prometheus.io/path"]; path == "" || adminStatus(t, path, true) != http.StatusOK {
		t.Errorf("deployment.yaml: annotation prometheus.io/path %q is not served by the admin server", path)
	}
}

var (
	adminOnce    sync.Once
	adminServers map[bool]string // ready -> base URL
	adminErr     error
)

// adminStatus GETs path from a real admin server (admin.New, the registry
// of metrics.New) whose readiness check passes (ready) or fails.
func adminStatus(t *testing.T, path string, ready bool) int {
	t.Helper()
	adminOnce.Do(func() {
		adminServers = map[bool]string{}
		for _, ok := range []bool{true, false} {
			check := func(context.Context) error { return nil }
			if !ok {
				check = func(context.Context) error { return errors.New("dependency down") }
			}
			srv, err := admin.New("127.0.0.1:0", metrics.New(nil).Registry, map[string]admin.Check{"dependency": check})
			if err != nil {
				adminErr = err
				return
			}
			// Serves until the test binary exits.
			go func() { _ = srv.Run(context.Background()) }()
			adminServers[ok] = "http://" + srv.Addr()
		}
	})
	if adminErr != nil {
		t.Fatal(adminErr)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(adminServers[ready] + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestDeploymentShutdownResourcesAndSecurity: the grace period outlasts
// the drain, the resources are set from the measured memory, and the pod
// runs non-root on a read-only root file system without privilege
// escalation.
func TestDeploymentShutdownResourcesAndSecurity(t *testing.T) {
	k := loadK8s(t)
	ps := k.dep.Spec.Template.Spec
	grace := 30 * time.Second // Kubernetes' default
	if ps.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*ps.TerminationGracePeriodSeconds) * time.Second
	}
	if min := k.cfg.Consumer.DrainTimeout + k.cfg.CancelGrace() + shutdownMargin; grace < min {
		t.Errorf("deployment.yaml: terminationGracePeriodSeconds %v < consumer.drain_timeout %v + cancel grace %v + %v: the kubelet would kill a draining member",
			grace, k.cfg.Consumer.DrainTimeout, k.cfg.CancelGrace(), shutdownMargin)
	}

	res := k.c.Resources
	for _, r := range []string{"cpu", "memory"} {
		if res.Requests[r] == "" {
			t.Errorf("deployment.yaml: no %s request", r)
		}
	}
	memReq := mustQuantity(t, "requests.memory", res.Requests["memory"])
	memLim := mustQuantity(t, "limits.memory", res.Limits["memory"])
	if memReq < measuredPeakRSS {
		t.Errorf("deployment.yaml: memory request %s is below the measured peak RSS (%d MiB)", res.Requests["memory"], measuredPeakRSS>>20)
	}
	if memLim < memReq {
		t.Errorf("deployment.yaml: memory limit %s below the request %s", res.Limits["memory"], res.Requests["memory"])
	}
	if cpu := mustQuantity(t, "requests.cpu", res.Requests["cpu"]); cpu <= 0 {
		t.Errorf("deployment.yaml: cpu request %s", res.Requests["cpu"])
	}
	if lim := k.getenv(t)("GOMEMLIMIT"); lim != "" {
		if v := mustQuantity(t, "GOMEMLIMIT", lim); v >= memLim {
			t.Errorf("deployment.yaml: GOMEMLIMIT %s is not below the memory limit %s", lim, res.Limits["memory"])
		}
	}

	sc, csc := ps.SecurityContext, k.c.SecurityContext
	if !isTrue(sc.RunAsNonRoot) && !isTrue(csc.RunAsNonRoot) {
		t.Error("deployment.yaml: runAsNonRoot is not set")
	}
	uid := sc.RunAsUser
	if csc.RunAsUser != nil {
		uid = csc.RunAsUser
	}
	if uid == nil || *uid == 0 {
		t.Error("deployment.yaml: want a numeric non-zero runAsUser (the kubelet cannot check runAsNonRoot against a user name)")
	} else if img := dockerfileUser(t); img != strconv.Itoa(*uid) {
		t.Errorf("deployment.yaml: runAsUser %d, the Dockerfile's USER is %s", *uid, img)
	}
	if !isTrue(csc.ReadOnlyRootFilesystem) {
		t.Error("deployment.yaml: readOnlyRootFilesystem is not true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("deployment.yaml: allowPrivilegeEscalation is not false")
	}
	if isTrue(csc.Privileged) {
		t.Error("deployment.yaml: privileged")
	}
	if !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		t.Errorf("deployment.yaml: capabilities drop %q add %q; want drop ALL, add none", csc.Capabilities.Drop, csc.Capabilities.Add)
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

func mustQuantity(t *testing.T, what, s string) float64 {
	t.Helper()
	if s == "" {
		t.Errorf("deployment.yaml: %s is not set", what)
		return 0
	}
	v, err := quantity(s)
	if err != nil {
		t.Errorf("deployment.yaml: %s: %v", what, err)
	}
	return v
}

// TestSelectorsAndService: the Deployment's, the Service's, the PDB's and
// the spread constraint's selectors select the pod template, and the
// Service exposes the admin port by name.
func TestSelectorsAndService(t *testing.T) {
	k := loadK8s(t)
	labels := k.dep.Spec.Template.Metadata.Labels
	selects := func(where string, sel map[string]string) {
		t.Helper()
		if len(sel) == 0 {
			t.Errorf("%s: empty selector", where)
		}
		for key, v := range sel {
			if labels[key] != v {
				t.Errorf("%s: selector %s=%s does not match the pod template's labels %v", where, key, v, labels)
			}
		}
	}
	selects("deployment.yaml spec.selector", k.dep.Spec.Selector.MatchLabels)
	for _, c := range k.dep.Spec.Template.Spec.TopologySpreadConstraints {
		selects("deployment.yaml topologySpreadConstraints", c.LabelSelector.MatchLabels)
	}
	svc := one(t, "Service", k.ms.services)
	selects("service.yaml", svc.Spec.Selector)
	admin := false
	for _, p := range svc.Spec.Ports {
		if k.portNumber(t, "service.yaml targetPort", p.TargetPort) == k.adminPort {
			admin = true
			if p.Name != "admin" {
				t.Errorf("service.yaml: the admin port is named %q, want admin (ServiceMonitors select it by name)", p.Name)
			}
		}
	}
	if !admin {
		t.Errorf("service.yaml: no port targets the admin port %d", k.adminPort)
	}
	pdb := one(t, "PodDisruptionBudget", k.ms.pdbs)
	selects("pdb.yaml", pdb.Spec.Selector.MatchLabels)
	if pdb.Spec.MinAvailable != nil {
		t.Error("pdb.yaml: minAvailable blocks every drain at one replica (minReplicaCount 1); use maxUnavailable")
	}
	if pdb.Spec.MaxUnavailable == nil {
		t.Error("pdb.yaml: no maxUnavailable")
	}
}

var partitionsComment = regexp.MustCompile(`--partitions (\d+)`)

// TestScaledObjectMatchesTheConfiguration: KEDA scales the Deployment on
// the lag of the configuration's consumer group over exactly its input
// topics, from its brokers, counting a topic without a commit as postbackd
// reads it (start_offset), and never beyond the documented partition
// count.
func TestScaledObjectMatchesTheConfiguration(t *testing.T) {
	k := loadK8s(t)
	so := one(t, "ScaledObject", k.ms.scaledObjects)
	ref := so.Spec.ScaleTargetRef
	if (ref.Kind != "" && ref.Kind != "Deployment") || ref.Name != k.dep.Metadata.Name {
		t.Errorf("scaledobject.yaml: scaleTargetRef %s/%s, want Deployment/%s", ref.Kind, ref.Name, k.dep.Metadata.Name)
	}
	if k.dep.Spec.Replicas != nil {
		t.Error("deployment.yaml: spec.replicas is set while the ScaledObject owns the replica count: every apply would reset it")
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount != 1 {
		t.Errorf("scaledobject.yaml: minReplicaCount %v, want 1 (the delayed retry path needs a running member)", so.Spec.MinReplicaCount)
	}
	if so.Spec.MaxReplicaCount == nil {
		t.Fatal("scaledobject.yaml: no maxReplicaCount")
	}
	keyNode, _ := mappingValue(specNode(t, one(t, "ScaledObject", k.ms.scaledObjectNodes)), "maxReplicaCount")
	m := partitionsComment.FindStringSubmatch(keyNode.HeadComment + keyNode.LineComment)
	if m == nil {
		t.Fatal("scaledobject.yaml: maxReplicaCount has no comment stating the partition count (\"--partitions N\")")
	}
	partitions, _ := strconv.Atoi(m[1])
	if *so.Spec.MaxReplicaCount > partitions || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
		t.Errorf("scaledobject.yaml: maxReplicaCount %d, want between minReplicaCount and the %d partitions of the input topics",
			*so.Spec.MaxReplicaCount, partitions)
	}

	var topics []string
	for i, tr := range so.Spec.Triggers {
		where := "scaledobject.yaml: triggers[" + strconv.Itoa(i) + "]"
		md := tr.Metadata
		if tr.Type != "kafka" {
			t.Errorf("%s: type %q, want kafka", where, tr.Type)
			continue
		}
		if md["consumerGroup"] != k.cfg.Kafka.GroupID {
			t.Errorf("%s: consumerGroup %q, kafka.group_id is %q", where, md["consumerGroup"], k.cfg.Kafka.GroupID)
		}
		if servers := strings.Split(md["bootstrapServers"], ","); !slices.Equal(servers, k.cfg.Kafka.Brokers) {
			t.Errorf("%s: bootstrapServers %q, kafka.brokers is %q", where, servers, k.cfg.Kafka.Brokers)
		}
		if md["offsetResetPolicy"] != k.cfg.Consumer.StartOffset {
			t.Errorf("%s: offsetResetPolicy %q, consumer.start_offset is %q", where, md["offsetResetPolicy"], k.cfg.Consumer.StartOffset)
		}
		lag, err := strconv.Atoi(md["lagThreshold"])
		if err != nil {
			t.Errorf("%s: lagThreshold %q: %v", where, md["lagThreshold"], err)
		} else if lag <= k.cfg.Consumer.MaxInFlight {
			t.Errorf("%s: lagThreshold %d is not above consumer.max_in_flight %d: a healthy member holds that many uncommitted events, so the steady state would scale out",
				where, lag, k.cfg.Consumer.MaxInFlight)
		}
		if md["allowIdleConsumers"] == "true" {
			t.Errorf("%s: allowIdleConsumers lets KEDA add members beyond the partition count", where)
		}
		if md["topic"] == "" {
			t.Errorf("%s: no topic", where)
		}
		topics = append(topics, md["topic"])
	}
	want := inputTopics(k.cfg)
	sort.Strings(topics)
	sort.Strings(want)
	if !slices.Equal(topics, want) {
		t.Errorf("scaledobject.yaml: triggers on topics %q, the input topics are %q", topics, want)
	}
}

func specNode(t *testing.T, doc *yaml.Node) *yaml.Node {
	t.Helper()
	_, spec := mappingValue(doc, "spec")
	if spec == nil {
		t.Fatal("no spec")
	}
	return spec
}
