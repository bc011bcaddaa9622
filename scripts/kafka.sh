#!/usr/bin/env bash
# kafka.sh: a real single-node Apache Kafka (KRaft, combined broker and
# controller) on loopback, for tests and local runs. No Docker, no
# distribution tarball: the server jars come from Maven Central.
#
# Usage: scripts/kafka.sh install|start|wait|stop|clean|env|status|logs|topic
#
#   install            fetch the jars (skipped when cached) and kcat
#   start              fresh broker in the background (no-op when running)
#   wait               block until the broker answers a metadata request
#   stop               SIGTERM, bounded wait, then SIGKILL
#   restart            stop, then start the same broker again KEEPING its
#                      data (topics, offsets): a broker restart, for faults
#   clean              stop, then remove the state folder
#   env                print 'export KAFKA_BROKERS=127.0.0.1:PORT' and the
#                      secured listeners' settings (below)
#   status             exit 0 when the broker runs, 1 otherwise
#   logs [N]           print the last N lines of the broker log (default 80)
#   topic NAME [P]     create topic NAME with P partitions (default 4), if absent
#
# Settings (environment):
#   KAFKA_VERSION          4.4.0 (3.9.2 works too)
#   KAFKA_PORT             19092  client listener on 127.0.0.1
#   KAFKA_CONTROLLER_PORT  19093  controller listener on 127.0.0.1
#   KAFKA_SASL_PORT        KAFKA_PORT+2  SASL_PLAINTEXT listener (PLAIN,
#                          SCRAM-SHA-256, SCRAM-SHA-512) for one user whose
#                          password is drawn at each start
#   KAFKA_TLS_PORT         KAFKA_PORT+3  SSL listener, self-signed certificate
#                          made at each start
#   KAFKA_WAIT_SECONDS     60     deadline of 'wait'
#   KAFKA_HEAP             1g
#   POSTBACKD_CACHE        jars go to $POSTBACKD_CACHE/kafka-VERSION/libs
#   POSTBACKD_STATE        data, log and pid go to $POSTBACKD_STATE/kafka-PORT
#
# 'start' always formats a new, empty cluster unless the broker on that port
# is already running: a test run never sees topics left by an earlier one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
KAFKA_TLS_PORT=${KAFKA_TLS_PORT:-$((KAFKA_PORT + 3))}
KAFKA_WAIT_SECONDS=${KAFKA_WAIT_SECONDS:-60}
KAFKA_HEAP=${KAFKA_HEAP:-1g}
LOG_TAG="kafka:$KAFKA_PORT"

home="$POSTBACKD_CACHE/kafka-$KAFKA_VERSION"
libs="$home/libs"
state="$POSTBACKD_STATE/kafka-$KAFKA_PORT"
props="$state/server.properties"
pidfile="$state/kafka.pid"
logfile="$state/kafka.log"
bootstrap="127.0.0.1:$KAFKA_PORT"
# The secured listeners' credentials and certificate: made at each start,
# never in the repository.
sasl_user=postbackd-test
sasl_password_file="$state/sasl-password"
tls_dir="$state/tls"

# Maven's local repository also lives in the cache so one folder holds every
# download and the clone stays clean.
m2="${MAVEN_REPO_LOCAL:-$POSTBACKD_CACHE/m2}"

# fetch_jars DEST ARTIFACT...: copies the runtime dependencies of the
# org.apache.kafka ARTIFACTs (at KAFKA_VERSION) into DEST with a throwaway pom,
# plus an SLF4J binding. Skipped when DEST is complete; safe to run twice at
# once (a lock) and never leaves a half-filled DEST (built aside, then moved).
fetch_jars() {
	local dest=$1
	shift
	if [[ -f $dest/.complete ]]; then
		log "Kafka $KAFKA_VERSION $* cached in $dest ($(cat "$dest/.complete"))"
		return 0
	fi
	mkdir -p "$home"
	exec 9>"$home/.lock"
	flock -w 600 9 || die "another install of Kafka $KAFKA_VERSION holds $home/.lock"
	if [[ -f $dest/.complete ]]; then
		log "Kafka $KAFKA_VERSION $* installed by a concurrent run"
		exec 9>&-
		return 0
	fi
	local t0=$SECONDS work a deps=""
	work=$(mktemp -d "$home/work.XXXXXX")
	for a in "$@"; do
		deps+="    <dependency><groupId>org.apache.kafka</groupId><artifactId>$a</artifactId>"
		deps+="<version>$KAFKA_VERSION</version><scope>runtime</scope></dependency>"$'\n'
	done
	cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.postbackd</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
$deps  </dependencies>
</project>
EOF
	local mvn=(mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$m2")
	log "fetching Kafka $KAFKA_VERSION $* with Maven (local repository $m2)"
	# Maven's output goes to a file (even -q prints stray colour codes) and
	# is shown only when it fails.
	(cd "$work" && "${mvn[@]}" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$work/libs") \
		>"$work/mvn.log" 2>&1 || {
		cat "$work/mvn.log" >&2
		rm -rf "$work"
		die "Maven could not fetch Kafka $KAFKA_VERSION $*"
	}
	# Kafka logs through SLF4J but ships no binding: without one the broker
	# prints nothing useful. slf4j-simple of the same API version logs to
	# stderr, which 'start' sends to the state folder's kafka.log.
	local api slf4j_version n
	api=$(find "$work/libs" -maxdepth 1 -name 'slf4j-api-*.jar' -printf '%f\n' | sort | tail -n1)
	[[ -n $api ]] || die "no slf4j-api jar among the dependencies of $*"
	slf4j_version=${api#slf4j-api-}
	slf4j_version=${slf4j_version%.jar}
	(cd "$work" && "${mvn[@]}" dependency:copy \
		-Dartifact="org.slf4j:slf4j-simple:$slf4j_version" -DoutputDirectory="$work/libs") \
		>"$work/mvn.log" 2>&1 || {
		cat "$work/mvn.log" >&2
		rm -rf "$work"
		die "Maven could not fetch slf4j-simple $slf4j_version"
	}
	n=$(find "$work/libs" -maxdepth 1 -name '*.jar' | wc -l)
	printf '%s jars, slf4j-simple %s\n' "$n" "$slf4j_version" >"$work/libs/.complete"
	rm -rf "$dest"
	mv "$work/libs" "$dest"
	rm -rf "$work"
	exec 9>&-
	log "installed $n jars ($*) in $((SECONDS - t0))s into $dest"
}

cmd_install() {
	command -v java >/dev/null || apt_install openjdk-17-jre-headless
	command -v mvn >/dev/null || apt_install maven
	command -v kcat >/dev/null || apt_install kcat
	fetch_jars "$libs" kafka_2.13
}

# running: true when the pid file names our broker process.
running() {
	local pid
	pid=$(read_pidfile "$pidfile")
	pid_matches "$pid" "$props"
}

# make_secrets: the SASL user's password and the TLS listener's self-signed
# certificate (key and certificate in one PEM keystore, certificate alone as
# the clients' CA file).
make_secrets() {
	umask 077
	head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$sasl_password_file"
	mkdir -p "$tls_dir"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
		-keyout "$tls_dir/key.pem" -out "$tls_dir/ca.pem" 2>>"$logfile"
	openssl pkcs8 -topk8 -nocrypt -in "$tls_dir/key.pem" -out "$tls_dir/key8.pem"
	cat "$tls_dir/key8.pem" "$tls_dir/ca.pem" >"$tls_dir/keystore.pem"
}

write_config() {
	local pw
	pw=$(cat "$sasl_password_file")
	cat >"$props" <<EOF
# Written by scripts/kafka.sh for a single-node test cluster on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SSL://127.0.0.1:$KAFKA_TLS_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT,SSL://127.0.0.1:$KAFKA_TLS_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
inter.broker.listener.name=PLAINTEXT
# SASL: PLAIN with its user in the JAAS line, SCRAM users in the metadata
# log (StorageTool format --add-scram).
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$pw";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# TLS: a PEM keystore (unencrypted key, then the certificate).
ssl.keystore.type=PEM
ssl.keystore.location=$tls_dir/keystore.pem
ssl.client.auth=none
log.dirs=$state/data
num.partitions=1
# One node: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests: a group's first member starts at once; a missing topic is an error,
# not a topic created on the fly.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
	# slf4j-simple reads this from the classpath (the state folder is on it).
	cat >"$state/simplelogger.properties" <<'EOF'
org.slf4j.simpleLogger.logFile=System.err
org.slf4j.simpleLogger.defaultLogLevel=info
org.slf4j.simpleLogger.showDateTime=true
org.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS
org.slf4j.simpleLogger.showThreadName=false
org.slf4j.simpleLogger.showShortLogName=true
org.slf4j.simpleLogger.log.kafka.request.logger=warn
EOF
}

cmd_start() {
	[[ -f $libs/.complete ]] || die "Kafka $KAFKA_VERSION is not installed: run '$0 install' first"
	mkdir -p "$state"
	if running; then
		local v
		v=$(cat "$state/version" 2>/dev/null || echo unknown)
		[[ $v == "$KAFKA_VERSION" ]] ||
			die "Kafka $v already runs on port $KAFKA_PORT; stop it before starting $KAFKA_VERSION"
		log "Kafka $KAFKA_VERSION already running (pid $(read_pidfile "$pidfile"))"
		return 0
	fi
	local p
	for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT" "$KAFKA_TLS_PORT"; do
		port_listening "$p" && die "port $p is taken by another process; choose KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_PORT / KAFKA_TLS_PORT"
	done
	rm -rf "$state/data" "$pidfile" "$tls_dir"
	: >"$logfile"
	make_secrets
	write_config
	echo "$KAFKA_VERSION" >"$state/version"
	local cp="$state:$libs/*" id
	id=$(java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$logfile" | tail -n1)
	[[ -n $id ]] || {
		tail_log "$logfile"
		die "StorageTool random-uuid printed no cluster id"
	}
	local pw
	pw=$(cat "$sasl_password_file")
	if ! java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" kafka.tools.StorageTool format --standalone -t "$id" -c "$props" \
		--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$pw]" \
		--add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$pw]" >>"$logfile" 2>&1; then
		tail_log "$logfile"
		die "StorageTool format failed"
	fi
	launch
	log "started Kafka $KAFKA_VERSION (pid $(read_pidfile "$pidfile"), cluster $id, log $logfile)"
}

# launch: runs the broker of $props in the background and waits for its pid.
launch() {
	local cp="$state:$libs/*"
	# setsid: the broker outlives the shell that started it (a developer's
	# terminal, one CI phase); 'stop' ends it by pid. The pid file is written
	# by the process that becomes the JVM, so it names the JVM itself.
	# shellcheck disable=SC2016 # $$ and $1 belong to the inner shell
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" \
		java "-Xmx$KAFKA_HEAP" -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-Djava.awt.headless=true -cp "$cp" kafka.Kafka "$props" \
		</dev/null >>"$logfile" 2>&1 &
	local deadline=$((SECONDS + 5))
	while [[ ! -s $pidfile ]] && ((SECONDS < deadline)); do sleep 0.05; done
	running || {
		tail_log "$logfile"
		die "broker process did not start"
	}
}

# cmd_restart: a broker restart that keeps the data: SIGTERM (a controlled
# shutdown), then the same configuration started again without formatting.
cmd_restart() {
	[[ -f $props && -d $state/data ]] || die "no broker state in $state to restart: run '$0 start' first"
	cmd_stop
	launch
	log "restarted Kafka $(cat "$state/version") (pid $(read_pidfile "$pidfile"), data kept)"
}

cmd_wait() {
	command -v kcat >/dev/null || die "kcat is missing: run '$0 install'"
	local t0=$SECONDS deadline=$((SECONDS + KAFKA_WAIT_SECONDS)) out=""
	while :; do
		if ! running; then
			tail_log "$logfile" 120
			die "broker is not running"
		fi
		# A real metadata request: the broker must know itself as a live
		# broker, which happens only after the controller registered it.
		if out=$(timeout 10 kcat -b "$bootstrap" -L -m 3 2>&1) && grep -q "broker 1 at $bootstrap" <<<"$out"; then
			log "Kafka $KAFKA_VERSION ready on $bootstrap after $((SECONDS - t0))s"
			return 0
		fi
		if ((SECONDS >= deadline)); then
			log "last kcat answer: $out"
			tail_log "$logfile" 120
			die "Kafka not ready on $bootstrap within ${KAFKA_WAIT_SECONDS}s"
		fi
		sleep 0.5 # polling readiness, bounded by the deadline above
	done
}

cmd_stop() {
	local pid
	pid=$(read_pidfile "$pidfile")
	if running; then
		# A single-node controlled shutdown takes a few seconds; 30 s is
		# generous before SIGKILL.
		stop_pid "$pid" "Kafka $(cat "$state/version" 2>/dev/null)" 30
	else
		log "not running"
	fi
	rm -f "$pidfile"
}

cmd_clean() {
	cmd_stop
	rm -rf "$state"
	log "removed $state"
}

cmd_topic() {
	local name=${1:?topic name} partitions=${2:-4}
	# The admin tools (Connect, Jetty and more) stay off the broker's
	# classpath: fetched on first use into a folder of their own.
	fetch_jars "$home/tools" kafka-tools
	java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$home/tools/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
		--create --if-not-exists --topic "$name" --partitions "$partitions" --replication-factor 1
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
wait) cmd_wait ;;
stop) cmd_stop ;;
restart) cmd_restart ;;
clean) cmd_clean ;;
env)
	echo "export KAFKA_BROKERS=$bootstrap"
	# The secured listeners, for the tests that prove SASL and TLS settings
	# reach a real broker (absent until the broker was started once).
	if [[ -s $sasl_password_file && -s $tls_dir/ca.pem ]]; then
		echo "export KAFKA_SASL_BROKERS=127.0.0.1:$KAFKA_SASL_PORT KAFKA_SASL_USERNAME=$sasl_user KAFKA_SASL_PASSWORD_FILE=$sasl_password_file"
		echo "export KAFKA_TLS_BROKERS=127.0.0.1:$KAFKA_TLS_PORT KAFKA_TLS_CA_FILE=$tls_dir/ca.pem"
	fi
	;;
status) running ;;
logs) tail_log "$logfile" "${2:-80}" ;;
topic)
	shift
	cmd_topic "$@"
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
