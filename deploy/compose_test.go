package deploy

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/postbackd/postbackd/config"
)

// composeService is the part of a docker-compose.yml service the tests read.
type composeService struct {
	Image       string    `yaml:"image"`
	Build       any       `yaml:"build"`
	Command     yaml.Node `yaml:"command"`
	Entrypoint  yaml.Node `yaml:"entrypoint"`
	Environment yaml.Node `yaml:"environment"`
	Volumes     []string  `yaml:"volumes"`
	Ports       []string  `yaml:"ports"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	doc := one(t, "document in docker-compose.yml", yamlDocs(t, repoPath("docker-compose.yml")))
	var cf composeFile
	if err := doc.Decode(&cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(cf.Services) == 0 {
		t.Fatal("docker-compose.yml: no services")
	}
	return cf
}

// stringList decodes a compose list-or-string field (command, entrypoint).
func stringList(t *testing.T, where string, n yaml.Node) []string {
	t.Helper()
	switch n.Kind {
	case 0:
		return nil
	case yaml.ScalarNode:
		return strings.Fields(n.Value)
	case yaml.SequenceNode:
		var xs []string
		if err := n.Decode(&xs); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		return xs
	}
	t.Fatalf("%s: want a string or a list", where)
	return nil
}

var composeVar = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// interpolate does docker-compose's variable substitution with an empty
// host environment: ${VAR:-default} and ${VAR-default} give the default,
// ${VAR} and $VAR nothing, $$ a dollar.
func interpolate(s string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		return composeVar.FindStringSubmatch(m)[2]
	})
}

// environment is a service's environment (a map or a KEY=VALUE list),
// interpolated.
func environment(t *testing.T, where string, n yaml.Node) map[string]string {
	t.Helper()
	env := map[string]string{}
	switch n.Kind {
	case 0:
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		for k, v := range m {
			env[k] = interpolate(v)
		}
	case yaml.SequenceNode:
		var xs []string
		if err := n.Decode(&xs); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		for _, x := range xs {
			k, v, _ := strings.Cut(x, "=")
			env[k] = interpolate(v)
		}
	default:
		t.Fatalf("%s: want a map or a list", where)
	}
	return env
}

// mainKafkaVersion is the Kafka version CI tests against (.ci/run's
// main_kafka), which must also be scripts/kafka.sh's default.
func mainKafkaVersion(t *testing.T) string {
	t.Helper()
	ci, err := os.ReadFile(repoPath(".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`main_kafka=\(KAFKA_VERSION=([0-9][0-9.]*)`).FindSubmatch(ci)
	if m == nil {
		t.Fatal(".ci/run: no main_kafka=(KAFKA_VERSION=...)")
	}
	sh, err := os.ReadFile(repoPath("scripts", "kafka.sh"))
	if err != nil {
		t.Fatal(err)
	}
	d := regexp.MustCompile(`KAFKA_VERSION=\$\{KAFKA_VERSION:-([0-9][0-9.]*)\}`).FindSubmatch(sh)
	if d == nil {
		t.Fatal("scripts/kafka.sh: no KAFKA_VERSION=${KAFKA_VERSION:-...} default")
	}
	if string(d[1]) != string(m[1]) {
		t.Fatalf("scripts/kafka.sh's default Kafka version %s is not .ci/run's main_kafka %s", d[1], m[1])
	}
	return string(m[1])
}

// TestComposeKafkaIsTheTestedVersion: every apache/kafka image of
// docker-compose.yml is the version CI tests.
func TestComposeKafkaIsTheTestedVersion(t *testing.T) {
	cf := loadCompose(t)
	want := "apache/kafka:" + mainKafkaVersion(t)
	n := 0
	for name, s := range cf.Services {
		if strings.HasPrefix(s.Image, "apache/kafka") {
			n++
			if s.Image != want {
				t.Errorf("docker-compose.yml: service %s runs %s; CI tests %s", name, s.Image, want)
			}
		}
	}
	if n == 0 {
		t.Error("docker-compose.yml: no apache/kafka service")
	}
}

// TestComposePostbackdStartsWithItsConfig: the services built from the
// Dockerfile run real subcommands with real flags; postbackd's --config is
// the file mounted there, deploy/compose-config.yaml, which loads with
// config.Load given the service's environment; its admin port is the
// published one; the hosts it names are compose services (the tracker on
// the port it listens on); and kafka-init creates exactly its topics.
func TestComposePostbackdStartsWithItsConfig(t *testing.T) {
	cf := loadCompose(t)
	pb, ok := cf.Services["postbackd"]
	if !ok {
		t.Fatal("docker-compose.yml: no postbackd service")
	}
	var trackerService, trackerAddr string
	for name, s := range cf.Services {
		if s.Build == nil {
			continue
		}
		if len(stringList(t, name+".entrypoint", s.Entrypoint)) > 0 {
			t.Errorf("docker-compose.yml: service %s replaces the image's entrypoint (the binary)", name)
		}
		cl := checkArgs(t, "docker-compose.yml: service "+name+" command", stringList(t, name+".command", s.Command))
		if slices.Equal(cl.words, []string{"tracker"}) {
			trackerService, trackerAddr = name, cl.flags["addr"]
			if trackerAddr == "" {
				t.Errorf("docker-compose.yml: service %s: tracker without --addr listens on loopback only", name)
			}
		}
	}

	cl := checkArgs(t, "docker-compose.yml: service postbackd command", stringList(t, "postbackd.command", pb.Command))
	if !slices.Equal(cl.words, []string{"run"}) {
		t.Fatalf("docker-compose.yml: postbackd runs %q, want run", cl.words)
	}
	cfgPath := cl.flags["config"]
	host := ""
	for _, v := range pb.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == cfgPath {
			host = parts[0]
		}
	}
	if host == "" {
		t.Fatalf("docker-compose.yml: postbackd's --config %s is not a mounted file (volumes %q)", cfgPath, pb.Volumes)
	}
	if host != "./deploy/compose-config.yaml" {
		t.Errorf("docker-compose.yml: postbackd mounts %s as its config; deploy/compose-config.yaml is the one this test knows", host)
	}
	env := environment(t, "postbackd.environment", pb.Environment)
	cfg, err := config.Load(repoPath(host), func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("%s does not load with docker-compose.yml's environment of postbackd:\n%v", host, err)
	}

	adminPort := portOf(t, cfg.Admin.Addr)
	published := false
	for _, p := range pb.Ports {
		if portOf(t, p) == adminPort {
			published = true
		}
	}
	if !published {
		t.Errorf("docker-compose.yml: postbackd publishes %q, not the admin port %d", pb.Ports, adminPort)
	}

	isService := func(where, hostport string) {
		t.Helper()
		h := hostport
		if sh, _, err := net.SplitHostPort(hostport); err == nil {
			h = sh
		}
		if _, ok := cf.Services[h]; !ok {
			t.Errorf("%s: %s is not a service of docker-compose.yml", where, hostport)
		}
	}
	for _, b := range cfg.Kafka.Brokers {
		isService("kafka.brokers", b)
	}
	for _, a := range cfg.Redis.Addrs {
		isService("redis.addrs", a)
	}
	for name, p := range cfg.Partners {
		for _, h := range p.AllowedHosts {
			isService("partners."+name+".allowed_hosts", h)
		}
		for goal, g := range p.Goals {
			u, err := url.Parse(g.URL)
			if err != nil {
				t.Errorf("partners.%s.goals.%s.url: %v", name, goal, err)
				continue
			}
			if trackerAddr != "" && u.Hostname() == trackerService && u.Port() != strconv.Itoa(portOf(t, trackerAddr)) {
				t.Errorf("partners.%s.goals.%s.url: port %q, the tracker listens on %s", name, goal, u.Port(), trackerAddr)
			}
		}
	}

	// kafka-init creates the topics: exactly the configuration's seven.
	init, ok := cf.Services["kafka-init"]
	if !ok {
		t.Fatal("docker-compose.yml: no kafka-init service")
	}
	script := strings.Join(stringList(t, "kafka-init.command", init.Command), " ")
	m := regexp.MustCompile(`for topic in ([^;]+);`).FindStringSubmatch(script)
	if m == nil {
		t.Fatal("docker-compose.yml: kafka-init: no \"for topic in ...;\" loop")
	}
	created := strings.Fields(m[1])
	tp := cfg.Topics
	want := []string{tp.Deposits, tp.Revenue, tp.Registrations, tp.Qualifications, tp.Dispatched, tp.Confirmed, tp.DLQ}
	sort.Strings(created)
	sort.Strings(want)
	if !slices.Equal(created, want) {
		t.Errorf("docker-compose.yml: kafka-init creates %q; the configuration's topics are %q", created, want)
	}
}

// dockerfile is what the tests read of the Dockerfile.
type dockerfile struct {
	entrypoint, cmd []string
	user            string
	copyBinary      [2]string // COPY --from=build SRC DST
	buildOut        string    // go build -o PATH ./cmd/postbackd
	comments        []string
}

func loadDockerfile(t *testing.T) dockerfile {
	t.Helper()
	raw, err := os.ReadFile(repoPath("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var df dockerfile
	// Join continuation lines.
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(raw), " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if c, ok := strings.CutPrefix(line, "#"); ok {
			df.comments = append(df.comments, strings.TrimSpace(c))
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		jsonArray := func() []string {
			var xs []string
			if err := json.Unmarshal([]byte(rest), &xs); err != nil {
				t.Fatalf("Dockerfile: %s %s: want the exec (JSON) form: %v", instr, rest, err)
			}
			return xs
		}
		switch strings.ToUpper(instr) {
		case "ENTRYPOINT":
			df.entrypoint = jsonArray()
		case "CMD":
			df.cmd = jsonArray()
		case "USER":
			df.user = rest
		case "COPY":
			f := strings.Fields(rest)
			if len(f) == 3 && strings.HasPrefix(f[0], "--from=") {
				df.copyBinary = [2]string{f[1], f[2]}
			}
		case "RUN":
			if m := regexp.MustCompile(`go build .*-o (\S+) \./cmd/postbackd\b`).FindStringSubmatch(rest); m != nil {
				df.buildOut = m[1]
			}
		}
	}
	return df
}

// dockerfileUser is the Dockerfile's USER as a numeric uid (failing the
// test if it is a name: the kubelet cannot check runAsNonRoot against one).
func dockerfileUser(t *testing.T) string {
	t.Helper()
	u := loadDockerfile(t).user
	uid, _, _ := strings.Cut(u, ":")
	if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(uid) {
		t.Errorf("Dockerfile: USER %q: want a numeric non-zero uid[:gid]", u)
	}
	return uid
}

// TestDockerfileCommands: the image runs the binary it builds, its default
// command is a valid "postbackd run", and the comment's docker build and
// docker run lines work as written: the image name is compose's, the run
// line mounts a configuration that exists and loads, at the path the
// command reads, on the host's network when it names loopback servers.
func TestDockerfileCommands(t *testing.T) {
	df := loadDockerfile(t)
	if df.buildOut == "" || df.copyBinary[0] != df.buildOut {
		t.Errorf("Dockerfile: the final stage copies %s, the build stage writes %q", df.copyBinary[0], df.buildOut)
	}
	if len(df.entrypoint) != 1 || df.entrypoint[0] != df.copyBinary[1] {
		t.Errorf("Dockerfile: ENTRYPOINT %q, the binary is copied to %s", df.entrypoint, df.copyBinary[1])
	}
	dockerfileUser(t)
	if _, err := os.Stat(repoPath("cmd", "postbackd")); err != nil {
		t.Error(err)
	}

	var build, run []string
	for _, c := range df.comments {
		f := strings.Fields(c)
		if len(f) >= 2 && f[0] == "docker" && f[1] == "build" {
			build = f
		}
		if len(f) >= 2 && f[0] == "docker" && f[1] == "run" {
			run = f
		}
	}
	if build == nil || run == nil {
		t.Fatal("Dockerfile: the comment shows no docker build or docker run line")
	}
	image := ""
	for i, a := range build {
		if a == "-t" && i+1 < len(build) {
			image = build[i+1]
		}
	}
	if build[len(build)-1] != "." {
		t.Errorf("Dockerfile: %q: the build context should be the repository root (.)", strings.Join(build, " "))
	}
	cf := loadCompose(t)
	for name, s := range cf.Services {
		if s.Build != nil && s.Image != image {
			t.Errorf("docker-compose.yml: service %s builds the image as %s, the Dockerfile's docker build line as %s", name, s.Image, image)
		}
	}

	// docker run [options] IMAGE [args]: options with a value are the ones
	// the line uses.
	var mounts []string
	hostNet := false
	var args []string
	for i := 2; i < len(run); i++ {
		a := run[i]
		switch {
		case a == "-v" || a == "--volume":
			i++
			mounts = append(mounts, run[i])
		case a == "--network" || a == "--net":
			i++
			hostNet = run[i] == "host"
		case a == "--network=host" || a == "--net=host":
			hostNet = true
		case a == "--rm" || a == "-it" || a == "-d":
		case a == image:
			args = run[i+1:]
			i = len(run)
		default:
			t.Fatalf("Dockerfile: docker run line: option %q unknown to this test", a)
		}
	}
	if len(args) == 0 {
		args = df.cmd
	}
	cl := checkArgs(t, "Dockerfile: the docker run line's command", args)
	if !slices.Equal(cl.words, []string{"run"}) {
		t.Fatalf("Dockerfile: the default command runs %q, want run", cl.words)
	}
	var src string
	for _, m := range mounts {
		parts := strings.Split(m, ":")
		if len(parts) >= 2 && parts[1] == cl.flags["config"] {
			src = parts[0]
		}
	}
	if src == "" {
		t.Fatalf("Dockerfile: the docker run line mounts nothing at --config %s", cl.flags["config"])
	}
	rel, ok := strings.CutPrefix(src, "$PWD/")
	if !ok {
		t.Fatalf("Dockerfile: the docker run line mounts %s; want a path under $PWD (the repository)", src)
	}
	cfg, err := config.Load(repoPath(filepath.FromSlash(rel)), nil)
	if err != nil {
		t.Fatalf("Dockerfile: the docker run line's %s does not load:\n%v", rel, err)
	}
	loopback := false
	for _, a := range append(slices.Clone(cfg.Kafka.Brokers), cfg.Redis.Addrs...) {
		if h, _, err := net.SplitHostPort(a); err == nil && (h == "localhost" || net.ParseIP(h).IsLoopback()) {
			loopback = true
		}
	}
	if loopback && !hostNet {
		t.Errorf("Dockerfile: the docker run line's %s names servers on loopback, which a container reaches only with --network host", rel)
	}
}
