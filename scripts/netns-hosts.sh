#!/usr/bin/env bash
# Real SSH hosts for tests and demos on one Linux machine: network namespaces on a bridge, each
# with its own IP and its own sshd (own config, host key and pid file), root logging in with a
# key this script generates; optionally one more host reachable only through the first (a
# `proxy_jump` host). The root namespace reaches the bridged hosts by IP. Needs root, `ip`,
# `sshd` and `ssh-keygen`. test/support/netns.ts drives it; it is also used by hand and by CI.
#
#   scripts/netns-hosts.sh up NAME [N] [--jump] [--path DIR]
#                                                 create N hosts (default 2), print hosts.json and
#                                                 write fleet.dstack.yml (an SSH fleet NAME of them);
#                                                 --path puts DIR first on the hosts' PATH
#   scripts/netns-hosts.sh down NAME              remove them (idempotent)
#   scripts/netns-hosts.sh down-all               remove every set this script made
#   scripts/netns-hosts.sh stop-sshd NAME HOST    kill HOST's sshd, its open sessions included
#   scripts/netns-hosts.sh start-sshd NAME HOST   start it again
#   scripts/netns-hosts.sh rekey NAME HOST        give HOST a new host key (sshd restarted with it)
#   scripts/netns-hosts.sh cut NAME HOST          take HOST off the network (packets dropped, no reset)
#   scripts/netns-hosts.sh restore NAME HOST      put it back
#   scripts/netns-hosts.sh list                   the sets that exist
#
# NAME: 1-6 lowercase letters/digits (interface names are limited to 15 characters). HOST: h0,
# h1, … or `hj` (the host behind h0). State lives in $DSTACK_NETNS_DIR (default
# /tmp/dstack-ts-netns)/NAME: keys (id_ed25519 is authorized on every host, id_other on none),
# per-host sshd configs and logs, hosts.json describing the set, and fleet.dstack.yml: the hosts as
# a `placement: cluster` fleet named NAME for `dstack apply -f` (the host behind h0 with
# `proxy_jump`). Run through sudo, the key and the fleet file belong to the user who ran sudo, so
# that user's `dstack apply` can read them.
set -euo pipefail

ROOT_DIR="${DSTACK_NETNS_DIR:-/tmp/dstack-ts-netns}"
PREFIX="dts"
SSHD="$(command -v sshd || echo /usr/sbin/sshd)"

die() { echo "netns-hosts: $*" >&2; exit 1; }

check_tools() {
  [ "$(id -u)" = 0 ] || die "must run as root (network namespaces need CAP_NET_ADMIN)"
  command -v ip >/dev/null || die "ip (iproute2) is not installed"
  [ -x "$SSHD" ] || die "sshd (openssh-server) is not installed"
  command -v ssh-keygen >/dev/null || die "ssh-keygen (openssh-client) is not installed"
}

check_name() {
  [[ "$1" =~ ^[a-z0-9]{1,6}$ ]] || die "NAME must be 1-6 lowercase letters or digits, got '$1'"
}

# A /24 pair 10.A.B.0 and 10.A.B+1.0 that no interface of this machine uses yet.
pick_subnet() {
  local used a b
  used="$(ip -4 -o addr show | awk '{print $4}')$(ip netns list 2>/dev/null | awk '{print $1}' | while read -r ns; do ip -n "$ns" -4 -o addr show 2>/dev/null | awk '{print $4}'; done)"
  for _ in $(seq 1 200); do
    a=$((200 + RANDOM % 50)); b=$(( (RANDOM % 127) * 2 ))
    if ! grep -q "^10\.$a\.$b\.\|^10\.$a\.$((b + 1))\." <<<"$used"; then echo "10.$a.$b 10.$a.$((b + 1))"; return; fi
  done
  die "no free 10.x.y.0/24 subnet found"
}

# The sshd config of one host: listens on its IP only; root logs in with the set's key.
write_sshd_config() { # dir host ip
  local d="$1/$2"
  mkdir -p "$d"
  [ -f "$d/host_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$d/host_key" -C "$2"
  cat >"$d/sshd_config" <<EOF
ListenAddress $3:22
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $1/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
X11Forwarding no
MaxSessions 100
MaxStartups 100:30:200
Subsystem sftp internal-sftp
# These hosts have no systemd of their own: the remote backend supervises its runner itself.
# With --path, DIR comes first on the PATH of every session (programs the hosts "have installed").
SetEnv DSTACK_RUNNER_SERVICE=supervisor${HOST_PATH:+ PATH=$HOST_PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
LogLevel VERBOSE
EOF
}

# Waits until something accepts TCP on ip:22, probing from namespace $1 ("" = the root one).
wait_port() { # netns ip
  for _ in $(seq 1 100); do
    if [ -z "$1" ]; then timeout 1 bash -c "</dev/tcp/$2/22" 2>/dev/null && return 0
    else ip netns exec "$1" timeout 1 bash -c "</dev/tcp/$2/22" 2>/dev/null && return 0; fi
    sleep 0.1
  done
  return 1
}

start_sshd() { # name host
  local dir="$ROOT_DIR/$1" ns="$PREFIX$1-$2" ip probe_ns=""
  [ -f "$dir/$2/sshd_config" ] || die "no host $2 in set $1"
  ip="$(awk '/^ListenAddress/ {split($2, a, ":"); print a[1]}' "$dir/$2/sshd_config")"
  [ "$2" = hj ] && probe_ns="$PREFIX$1-h0"
  mkdir -p /run/sshd
  # A host is a clean machine: its logins do not run this machine's ~/.bashrc, which may start
  # tools (pyenv's rehash takes a lock file that a session killed mid-way leaves behind, and
  # every later login then waits 60 s on it). sshd runs in a mount namespace of its own with an
  # empty file over ~/.bashrc; nothing outside it sees the mount.
  local rc
  rc="$(getent passwd root | cut -d: -f6)/.bashrc"
  if [ -f "$rc" ] && command -v unshare >/dev/null; then
    : >"$dir/empty-bashrc"
    ip netns exec "$ns" unshare --mount --propagation private \
      sh -c 'mount --bind "$1" "$2" && exec "$3" -f "$4" -E "$5"' sh "$dir/empty-bashrc" "$rc" "$SSHD" "$dir/$2/sshd_config" "$dir/$2/sshd.log"
  else
    ip netns exec "$ns" "$SSHD" -f "$dir/$2/sshd_config" -E "$dir/$2/sshd.log"
  fi
  wait_port "$probe_ns" "$ip" || die "sshd of $2 ($ip) did not start; its log: $(tail -5 "$dir/$2/sshd.log" 2>/dev/null)"
}

# Kills every sshd process in the host's namespace: the listener and the open sessions, as if
# the host had gone away for SSH. Processes the sessions started (a runner) keep running.
# root's ~/.bashrc may run `pyenv init`, and Debian's bash reads it for every SSH command; a
# session killed while pyenv rehashes leaves pyenv's lock file behind, and then every later
# command over SSH (and every shell that reads that bashrc) waits 60 s for it. A lock that no
# running rehash holds is removed (with a word on stderr) when hosts are made and sshd stopped.
clear_stale_pyenv_lock() {
  local lock="${PYENV_ROOT:-$HOME/.pyenv}/shims/.pyenv-shim"
  [ -e "$lock" ] || return 0
  pgrep -f pyenv-rehash >/dev/null 2>&1 && return 0
  rm -f "$lock" && echo "netns-hosts: removed a stale pyenv rehash lock ($lock)" >&2
}

stop_sshd() { # name host
  local ns="$PREFIX$1-$2" pid
  ip netns list | grep -q "^$ns\b" || return 0
  for pid in $(ip netns pids "$ns" 2>/dev/null); do
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in sshd*) kill -9 "$pid" 2>/dev/null || true ;; esac
  done
  rm -f "$ROOT_DIR/$1/$2/sshd.pid"
  clear_stale_pyenv_lock
}

# A new host key, as after a reinstall (or another machine answering at the host's address):
# sshd is stopped, the key regenerated, sshd started with it. Prints the new public key.
rekey() { # name host
  local dir="$ROOT_DIR/$1/$2"
  [ -f "$dir/sshd_config" ] || die "no host $2 in set $1"
  stop_sshd "$1" "$2"
  rm -f "$dir/host_key" "$dir/host_key.pub"
  ssh-keygen -q -t ed25519 -N "" -f "$dir/host_key" -C "$2"
  start_sshd "$1" "$2"
  cat "$dir/host_key.pub"
}

up() { # name n jump
  local name="$1" n="$2" jump="$3" dir="$ROOT_DIR/$1" br="$PREFIX$1b" net jnet i ns ip
  check_name "$name"
  [ "$n" -ge 1 ] && [ "$n" -le 20 ] || die "N must be 1..20, got $n"
  [ -e "/run/netns/$PREFIX$name-h0" ] && die "set $name exists already (scripts/netns-hosts.sh down $name)"
  clear_stale_pyenv_lock
  # A failed start leaves nothing behind.
  trap 'if [ "${created:-}" != 1 ]; then down "$name" >/dev/null 2>&1 || true; fi' EXIT
  read -r net jnet < <(pick_subnet)
  mkdir -p "$dir"
  ssh-keygen -q -t ed25519 -N "" -f "$dir/id_ed25519" -C "dstack-ts-netns-$name" <<<y >/dev/null
  ssh-keygen -q -t ed25519 -N "" -f "$dir/id_other" -C "dstack-ts-netns-$name-unauthorized" <<<y >/dev/null
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"

  ip link add "$br" type bridge
  ip addr add "$net.1/24" dev "$br"
  ip link set "$br" up
  # Docker's FORWARD policy is DROP and bridged frames pass iptables when br_netfilter is
  # loaded: let the hosts reach each other across the bridge.
  if command -v iptables >/dev/null; then iptables -I FORWARD -i "$br" -o "$br" -j ACCEPT 2>/dev/null || true; fi

  local hosts=()
  for i in $(seq 0 $((n - 1))); do
    ns="$PREFIX$name-h$i"; ip="$net.$((10 + i))"
    ip netns add "$ns"
    ip link add "$PREFIX$name$i" type veth peer name "$PREFIX${name}p$i"
    ip link set "$PREFIX${name}p$i" netns "$ns"
    ip -n "$ns" link set "$PREFIX${name}p$i" name eth0
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$net.1"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
    ip link set "$PREFIX$name$i" master "$br"
    ip link set "$PREFIX$name$i" up
    write_sshd_config "$dir" "h$i" "$ip"
    hosts+=("{\"name\":\"h$i\",\"netns\":\"$ns\",\"ip\":\"$ip\",\"port\":22,\"user\":\"root\"}")
  done

  local hidden="null"
  if [ "$jump" = 1 ]; then
    # hj: a namespace joined to h0 by a veth pair of its own; the root namespace has no route to it.
    ns="$PREFIX$name-hj"
    ip netns add "$ns"
    ip link add "$PREFIX${name}j" type veth peer name "$PREFIX${name}k"
    ip link set "$PREFIX${name}j" netns "$PREFIX$name-h0"
    ip link set "$PREFIX${name}k" netns "$ns"
    ip -n "$PREFIX$name-h0" link set "$PREFIX${name}j" name eth1
    ip -n "$PREFIX$name-h0" addr add "$jnet.1/24" dev eth1
    ip -n "$PREFIX$name-h0" link set eth1 up
    ip -n "$ns" link set "$PREFIX${name}k" name eth0
    ip -n "$ns" addr add "$jnet.2/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
    # Without this the root namespace would send hj's packets to its default gateway.
    ip route add unreachable "$jnet.0/24"
    echo "$jnet.0/24" >"$dir/hidden-route"
    write_sshd_config "$dir" hj "$jnet.2"
    hidden="{\"name\":\"hj\",\"netns\":\"$ns\",\"ip\":\"$jnet.2\",\"port\":22,\"user\":\"root\",\"jump\":\"h0\"}"
  fi

  for i in $(seq 0 $((n - 1))); do start_sshd "$name" "h$i"; done
  [ "$jump" = 1 ] && start_sshd "$name" hj

  local joined
  joined="$(IFS=,; echo "${hosts[*]}")"
  cat >"$dir/hosts.json" <<EOF
{"name":"$name","dir":"$dir","gateway":"$net.1","privateKeyFile":"$dir/id_ed25519","publicKeyFile":"$dir/id_ed25519.pub","otherKeyFile":"$dir/id_other","hosts":[$joined],"hidden":$hidden}
EOF
  {
    echo "# Written by scripts/netns-hosts.sh up $name: its hosts as an SSH fleet (dstack apply -f this file)."
    echo "type: fleet"
    echo "name: $name"
    echo "placement: cluster"
    echo "ssh_config:"
    echo "  user: root"
    echo "  identity_file: id_ed25519   # relative to this file"
    echo "  hosts:"
    for i in $(seq 0 $((n - 1))); do echo "    - $net.$((10 + i))"; done
    if [ "$jump" = 1 ]; then echo "    - {hostname: $jnet.2, proxy_jump: {hostname: $net.10, user: root, identity_file: id_ed25519}}"; fi
  } >"$dir/fleet.dstack.yml"
  if [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ]; then
    chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$dir/id_ed25519" "$dir/id_ed25519.pub" "$dir/fleet.dstack.yml"
  fi
  created=1
  cat "$dir/hosts.json"
}

down() { # name
  local name="$1" ns pid
  check_name "$name"
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX$name-h" || true); do
    # Everything still running in the namespace: sshd, runners and their supervisors, jobs.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  if ip link show "$PREFIX${name}b" >/dev/null 2>&1; then
    if command -v iptables >/dev/null; then iptables -D FORWARD -i "$PREFIX${name}b" -o "$PREFIX${name}b" -j ACCEPT 2>/dev/null || true; fi
    ip link del "$PREFIX${name}b"
  fi
  if [ -f "$ROOT_DIR/$name/hidden-route" ]; then ip route del unreachable "$(cat "$ROOT_DIR/$name/hidden-route")" 2>/dev/null || true; fi
  for i in $(seq 0 19); do ip link del "$PREFIX$name$i" 2>/dev/null || true; done
  rm -rf "${ROOT_DIR:?}/$name"
}

# Takes a host's link down inside its namespace: its peers see silence, not a refusal, as when a
# machine loses power or its network.
set_link() { # name host up|down
  local ns="$PREFIX$1-$2"
  ip netns list | grep -q "^$ns\b" || die "no host $2 in set $1"
  ip -n "$ns" link set eth0 "$3"
}

list() {
  ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$PREFIX\([a-z0-9]*\)-h.*/\1/p" | sort -u
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up)
    check_tools
    name="${1:-}"; [ -n "$name" ] || die "usage: $0 up NAME [N] [--jump] [--path DIR]"
    n=2; jump=0; HOST_PATH=""; want_path=0
    for arg in "${@:2}"; do
      if [ "$want_path" = 1 ]; then HOST_PATH="$arg"; want_path=0; continue; fi
      case "$arg" in --jump) jump=1 ;; --path) want_path=1 ;; *) n="$arg" ;; esac
    done
    [ "$want_path" = 0 ] || die "--path needs a directory"
    [[ -z "$HOST_PATH" || "$HOST_PATH" =~ ^/[A-Za-z0-9_./-]*$ ]] || die "--path must be an absolute path of letters, digits, _ . / -, got '$HOST_PATH'"
    up "$name" "$n" "$jump" ;;
  down) [ -n "${1:-}" ] || die "usage: $0 down NAME"; down "$1" ;;
  down-all) for name in $(list); do down "$name"; done; [ -d "$ROOT_DIR" ] && for d in "$ROOT_DIR"/*/; do [ -d "$d" ] && down "$(basename "$d")"; done; true ;;
  stop-sshd) stop_sshd "$1" "$2" ;;
  start-sshd) check_tools; start_sshd "$1" "$2" ;;
  rekey) check_tools; rekey "$1" "$2" ;;
  cut) set_link "$1" "$2" down ;;
  restore) set_link "$1" "$2" up ;;
  list) list ;;
  *) die "usage: $0 up NAME [N] [--jump] [--path DIR] | down NAME | down-all | stop-sshd NAME HOST | start-sshd NAME HOST | rekey NAME HOST | cut NAME HOST | restore NAME HOST | list" ;;
esac
