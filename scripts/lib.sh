# shellcheck shell=bash
# Shared helpers for postbackd's infrastructure scripts. Sourced, never run.
#
# Everything the scripts keep lives outside the clone:
#   POSTBACKD_CACHE  downloads kept across runs (default ~/.cache/postbackd)
#   POSTBACKD_STATE  data, logs and pid files of running servers
#                    (default /tmp/postbackd-infra)

POSTBACKD_CACHE=${POSTBACKD_CACHE:-$HOME/.cache/postbackd}
POSTBACKD_STATE=${POSTBACKD_STATE:-/tmp/postbackd-infra}

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-infra}" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# port_listening PORT: true when something accepts TCP connections on
# 127.0.0.1:PORT. Uses bash's /dev/tcp so it needs no extra tool.
port_listening() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PID: true when PID is a live process (not a zombie).
pid_alive() {
	local pid=$1 state
	[[ -n $pid ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ $state != Z ]]
}

# pid_matches PID WORD: true when PID is alive and its command line contains
# WORD. Guards against killing an unrelated process that reused a stale pid.
pid_matches() {
	local pid=$1 word=$2
	pid_alive "$pid" || return 1
	local cmdline
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"$word"* ]]
}

# read_pidfile FILE: prints the pid stored in FILE, or nothing.
read_pidfile() {
	[[ -f $1 ]] && tr -dc '0-9' <"$1"
	return 0
}

# stop_pid PID NAME TIMEOUT: SIGTERM, wait up to TIMEOUT seconds for the
# process to exit, then SIGKILL and wait again (bounded).
stop_pid() {
	local pid=$1 name=$2 timeout=$3 deadline
	pid_alive "$pid" || return 0
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	while pid_alive "$pid"; do
		if ((SECONDS >= deadline)); then
			log "$name did not exit within ${timeout}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 10))
			while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
			pid_alive "$pid" && die "$name (pid $pid) survived SIGKILL"
			break
		fi
		sleep 0.2 # polling for exit, bounded by the deadline above
	done
	log "$name stopped"
}

# apt_install PKG...: installs the Debian packages that are not installed yet.
# Runs 'apt-get update' only when a package has no install candidate or the
# install fails on stale lists. Waits for other apt users instead of failing.
apt_install() {
	local missing=() p
	for p in "$@"; do
		[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == 'install ok installed' ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	local apt=(apt-get -y -q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
	export DEBIAN_FRONTEND=noninteractive
	local need_update=0 policy
	for p in "${missing[@]}"; do
		# Captured first: 'grep -q' closing the pipe early would fail the
		# pipeline under pipefail.
		policy=$(apt-cache policy "$p" 2>/dev/null || true)
		if [[ $policy != *"Candidate: "[0-9]* ]]; then
			need_update=1
		fi
	done
	if ((need_update)); then
		log "apt-get update (no install candidate for some of: ${missing[*]})"
		"${apt[@]}" update >/dev/null
	fi
	log "apt-get install ${missing[*]}"
	if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >/dev/null; then
		log "apt-get install failed; refreshing package lists and retrying once"
		"${apt[@]}" update >/dev/null
		"${apt[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

# tail_log FILE [LINES]: prints the end of a log file framed for CI output.
tail_log() {
	local f=$1 n=${2:-80}
	if [[ -f $f ]]; then
		printf '%s\n' "----- last $n lines of $f -----" >&2
		tail -n "$n" "$f" >&2
		printf '%s\n' "----- end of $f -----" >&2
	else
		log "no log at $f"
	fi
}
