/**
 * The shell programs the remote backend runs on a host over SSH (POSIX sh, fed on stdin to
 * `sh -s`): probing the machine, installing and starting the runner under a supervisor
 * (systemd, or a restart loop where there is none), waiting for it to answer, and removing it.
 */

/** Quotes a value for sh. */
export const shQuote = (value: string): string => `'${value.replace(/'/g, `'\\''`)}'`

/**
 * Prints `key=value` lines: architecture, CPUs, memory, the disk under $HOME, who logs in,
 * node, systemd, sudo, Docker (the socket answering `/_ping` to this user), GPUs, the first
 * address. Arguments: the nvidia-smi and amd-smi binaries.
 */
export const PROBE = String.raw`
NVIDIA_SMI="$1"; AMD_SMI="$2"
echo "arch=$(uname -m)"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
echo "mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
df -Pk "$HOME" | awk 'NR==2 {print "disk_total_kib=" $2; print "disk_free_kib=" $4}'
echo "home=$HOME"
echo "uid=$(id -u)"
echo "ip=$(hostname -I 2>/dev/null | awk '{print $1}')"
if command -v node >/dev/null 2>&1; then echo "node=$(command -v node)"; echo "node_version=$(node --version)"; fi
[ -n "${"$"}{DSTACK_RUNNER_SERVICE:-}" ] && echo "service_hint=$DSTACK_RUNNER_SERVICE"
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && echo "systemd=1"
[ "$(id -u)" != 0 ] && sudo -n true >/dev/null 2>&1 && echo "sudo=1"
if command -v node >/dev/null 2>&1 && [ -S /var/run/docker.sock ]; then
  node -e 'require("http").get({ socketPath: "/var/run/docker.sock", path: "/_ping", timeout: 3000 }, (r) => { console.log("docker=" + r.statusCode); process.exit(0) }).on("error", (e) => { console.log("docker_error=" + e.code); process.exit(0) })'
fi
if command -v "$NVIDIA_SMI" >/dev/null 2>&1; then
  "$NVIDIA_SMI" --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null | sed 's/^/nvidia=/'
fi
if command -v "$AMD_SMI" >/dev/null 2>&1; then
  echo "amd=$("$AMD_SMI" static --asic --vram --json 2>/dev/null | tr -d '\n')"
fi
true
`

/** Prints the sha256 of the installed bundle, or nothing. Argument: the bundle's path. */
export const BUNDLE_HASH = String.raw`
[ -f "$1" ] && sha256sum "$1" | awk '{print $1}'
true
`

/**
 * Keeps the runner running without systemd: restarts it a second after it exits; TERM stops
 * it and then the loop. Written to `<dir>/supervise.sh`; `run.sh` starts the runner.
 */
export const SUPERVISOR = String.raw`#!/bin/sh
# dstack-ts runner supervisor: restarts the runner when it exits; SIGTERM stops both.
DIR="$(cd "$(dirname "$0")" && pwd)"
child=""
stop() { trap - TERM INT; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; [ -n "$child" ] && wait "$child" 2>/dev/null; exit 0; }
trap stop TERM INT
while :; do
  sh "$DIR/run.sh" >>"$DIR/runner.log" 2>&1 &
  child=$!
  wait "$child"
  echo "supervisor: the runner exited ($?), restarting in 1 s" >>"$DIR/runner.log"
  sleep 1
done
`

/**
 * Starts the installed runner as a service and prints `started=<how>`. Arguments: the
 * instance directory, `systemd` or `supervisor`, the systemd unit name, and `sudo` or "".
 * Restarts it when it runs already (a new bundle).
 */
export const START = String.raw`
DIR="$1"; HOW="$2"; UNIT="$3"; SUDO="$4"
set -e
if [ "$HOW" = systemd ]; then
  $SUDO cp "$DIR/$UNIT" "/etc/systemd/system/$UNIT"
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable "$UNIT" >/dev/null 2>&1
  $SUDO systemctl restart "$UNIT"
  echo started=systemd
else
  if [ -f "$DIR/supervisor.pid" ]; then
    pid="$(cat "$DIR/supervisor.pid")"
    kill -TERM "-$pid" 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "-$pid" 2>/dev/null || true
  fi
  cd "$DIR"
  setsid nohup sh "$DIR/supervise.sh" >/dev/null 2>&1 </dev/null &
  echo $! >"$DIR/supervisor.pid"
  echo started=supervisor
fi
`

/**
 * Waits for the runner's healthcheck on 127.0.0.1:PORT; prints its answer, or the log's end and
 * exits 1. Arguments: node, port, seconds, the instance directory.
 */
export const WAIT_HEALTHY = String.raw`
NODE="$1"; PORT="$2"; SECONDS_LEFT="$3"; DIR="$4"
"$NODE" -e '
const [port, seconds] = process.argv.slice(1).map(Number)
const deadline = Date.now() + seconds * 1000
;(async () => {
  for (;;) {
    try {
      const r = await fetch("http://127.0.0.1:" + port + "/api/healthcheck", { signal: AbortSignal.timeout(2000) })
      if (r.ok) { console.log(await r.text()); process.exit(0) }
    } catch {}
    if (Date.now() > deadline) process.exit(1)
    await new Promise((r) => setTimeout(r, 200))
  }
})()' "$PORT" "$SECONDS_LEFT" && exit 0
echo "--- the end of $DIR/runner.log:"
tail -c 2000 "$DIR/runner.log" 2>/dev/null
exit 1
`

/**
 * Stops the runner (systemd unit or supervisor process group) and removes the instance
 * directory, then its parents when empty. Arguments: the directory, the unit name, `sudo` or "".
 * Idempotent; prints `removed`.
 */
export const REMOVE = String.raw`
DIR="$1"; UNIT="$2"; SUDO="$3"
if [ -f "/etc/systemd/system/$UNIT" ]; then
  $SUDO systemctl disable --now "$UNIT" >/dev/null 2>&1 || true
  $SUDO rm -f "/etc/systemd/system/$UNIT"
  $SUDO systemctl daemon-reload || true
fi
if [ -f "$DIR/supervisor.pid" ]; then
  pid="$(cat "$DIR/supervisor.pid")"
  kill -TERM "-$pid" 2>/dev/null || true
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do kill -0 "-$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "-$pid" 2>/dev/null || true
fi
rm -rf "$DIR"
rmdir "$(dirname "$DIR")" 2>/dev/null || true
rmdir "$(dirname "$(dirname "$DIR")")" 2>/dev/null || true
echo removed
`
