/**
 * The shell programs the remote backend runs on a host over SSH (POSIX sh, fed on stdin to
 * `sh -s`): probing the machine, installing and starting the runner under a supervisor
 * (systemd, or a restart loop where there is none), waiting for it to answer, and removing it.
 */

import { shQuote } from "@dstack-ts/ssh"

/**
 * Prints `key=value` lines: architecture, CPUs, memory, the disk under $HOME, who logs in,
 * node, systemd, sudo, GPUs, the first address. (Docker is asked over the session itself:
 * @dstack-ts/ssh's dockerPing.) Arguments: the nvidia-smi and amd-smi binaries.
 */
export const PROBE = String.raw`
NVIDIA_SMI="$1"; AMD_SMI="$2"; BUNDLE="$HOME/$3"
[ -f "$BUNDLE" ] && echo "bundle_sha256=$(sha256sum "$BUNDLE" | awk '{print $1}')"
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
if command -v "$NVIDIA_SMI" >/dev/null 2>&1; then
  "$NVIDIA_SMI" --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null | sed 's/^/nvidia=/'
fi
if command -v "$AMD_SMI" >/dev/null 2>&1; then
  echo "amd=$("$AMD_SMI" static --asic --vram --json 2>/dev/null | tr -d '\n')"
fi
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

const EOF_MARK = "__DSTACK_TS_EOF__"

/**
 * A script that writes small text files (each through a temporary file, then renamed), for
 * one round trip; the START script follows it in the same run.
 */
export const writeFilesScript = (files: ReadonlyArray<{ readonly path: string; readonly content: string; readonly mode: string }>): string =>
  files.map((f) => {
    if (f.content.split("\n").includes(EOF_MARK)) throw new Error(`${f.path} contains the line ${EOF_MARK}`)
    const body = f.content.endsWith("\n") ? f.content.slice(0, -1) : f.content
    return `mkdir -p "$(dirname ${shQuote(f.path)})"\ncat > ${shQuote(`${f.path}.tmp`)} <<'${EOF_MARK}'\n${body}\n${EOF_MARK}\nchmod ${f.mode} ${shQuote(`${f.path}.tmp`)} && mv ${shQuote(`${f.path}.tmp`)} ${shQuote(f.path)}\n`
  }).join("")

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
