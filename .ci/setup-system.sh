#!/usr/bin/env bash
# Installs and starts the real components the test suites need: Docker Engine, busybox for the
# locally built test image, a private image registry (docker-registry + htpasswd), OpenSSH
# server, iproute2 (network namespaces as hosts), PostgreSQL, Redis, Chromium and Slurm
# (slurm-wlm + munge: the tests start their own cluster on netns
# hosts, test/support/slurmCluster.ts). Idempotent: safe to run on a machine that already has them.
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /usr/bin/busybox ] || [ -x /bin/busybox ] || need+=(busybox-static)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v git >/dev/null || need+=(git)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
{ command -v slurmctld && command -v slurmd && command -v sbatch; } >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "==> starting dockerd"
  (dockerd >/tmp/dockerd.log 2>&1 &)
  for i in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/dockerd.log; exit 1; }
fi
echo "==> dockerd $(docker version --format '{{.Server.Version}}')"

if [ -f .ci/postgres.sh ]; then
  # prints the URL of a running server for the tests
  url=$(bash .ci/postgres.sh | tail -1)
  echo "DSTACK_TEST_DATABASE_URL=$url" >> "${CI_ENV_FILE:-/tmp/dstack-ts-ci.env}"
  echo "==> postgresql at $url"
fi

# SSH fleet tests run on network namespaces with their own sshd (scripts/netns-hosts.sh): they
# need the privilege-separation directory, and a set left by a killed earlier run is removed.
mkdir -p /run/sshd
if [ -x scripts/netns-hosts.sh ]; then
  bash scripts/netns-hosts.sh down-all
  echo "==> netns SSH hosts: $(ip -V) / $(sshd -V 2>&1 | head -1 || true)"
fi
# The upstream dstack client (test/upstream): shared/upstream-client beside the checkout or in a
# folder above it, made importable by its own setup.sh (Debian packages, no PyPI). Its tests
# fail under CI=true when it is missing; DSTACK_UPSTREAM_CLIENT names it where it lies elsewhere.
upstream=${DSTACK_UPSTREAM_CLIENT:-}
if [ -z "$upstream" ]; then
  dir=$(pwd)
  while [ "$dir" != / ]; do
    [ -f "$dir/shared/upstream-client/setup.sh" ] && { upstream="$dir/shared/upstream-client"; break; }
    dir=$(dirname "$dir")
  done
fi
if [ -n "$upstream" ]; then
  bash "$upstream/setup.sh" >/dev/null
  echo "DSTACK_UPSTREAM_CLIENT=$upstream" >> "${CI_ENV_FILE:-/tmp/dstack-ts-ci.env}"
  echo "==> upstream dstack client at $upstream"
else
  echo "==> no shared/upstream-client found: test/upstream will fail under CI=true"
fi
