#!/bin/busybox sh
# One connection of the busybox test service of test/e2e/services-docker.test.ts, run by
# `nc -ll -e` in the busybox image: a WebSocket upgrade is answered (Sec-WebSocket-Accept from
# sha1sum and base64) and each short text frame is echoed back as "echo <text>"; any other
# request gets "hello from busybox: <request line>" (and " (<n> bytes)" when it had a body of
# n bytes, read whole first) and the connection closes.
read -r request
key=""
length=""
while read -r header; do
  header=$(printf '%s' "$header" | tr -d '\r')
  [ -z "$header" ] && break
  case "$header" in
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${header#*:}" | tr -d ' ') ;;
    [Cc]ontent-[Ll]ength:*) length=$(printf '%s' "${header#*:}" | tr -d ' ') ;;
  esac
done
if [ -z "$key" ]; then
  body="hello from busybox: $(printf '%s' "$request" | tr -d '\r')"
  if [ -n "$length" ] && [ "$length" -gt 0 ]; then body="$body ($(head -c "$length" | wc -c | tr -d ' ') bytes)"; fi
  printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
  exit 0
fi
digest=""
for h in $(printf '%s' "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -c1-40 | sed 's/../& /g'); do
  digest="$digest\\$(printf '%03o' "0x$h")"
done
accept=$(printf "$digest" | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
while :; do
  set -- $(dd bs=1 count=2 2>/dev/null | od -An -tu1)
  [ $# -lt 2 ] && exit 0
  [ $(($1 & 15)) -eq 8 ] && exit 0
  len=$(($2 & 127))
  set -- $(dd bs=1 count=$((4 + len)) 2>/dev/null | od -An -tu1)
  m0=$1 m1=$2 m2=$3 m3=$4
  shift 4
  out="" i=0
  for b in "$@"; do
    case $((i % 4)) in 0) m=$m0 ;; 1) m=$m1 ;; 2) m=$m2 ;; 3) m=$m3 ;; esac
    out="$out\\$(printf '%03o' $((b ^ m)))"
    i=$((i + 1))
  done
  printf "\\201\\$(printf '%03o' $((len + 5)))echo $out"
done
