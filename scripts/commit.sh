#!/usr/bin/env bash
# Commit only the given paths, serialised with other committers working in the same tree.
# usage: scripts/commit.sh "message" path [path...]
set -euo pipefail
msg=$1; shift
exec 9>/tmp/dstack-ts-git.lock
flock 9
git add -A -- "$@"
git commit -q -m "$msg" -- "$@" && git log --oneline -1
