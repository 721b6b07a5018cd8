/**
 * Starting a bundled runner from a Node.js startup snapshot, on the machine that runs it. A
 * runner spends most of its start loading its modules (Effect Schema classes built at module
 * load, the bundle compiled); a snapshot made from the bundle (`node --snapshot-blob BLOB
 * --build-snapshot BUNDLE`) holds the heap after that, so a start from it (`node --snapshot-blob
 * BLOB -- BUNDLE ARGS`) goes straight to serving. A snapshot only loads in the node binary that
 * built it, so it is made where the runner runs, by the start itself: the first start with a
 * bundle and a node binary starts without one and builds it in the background (niced), checks
 * it (`DSTACK_RUNNER_SNAPSHOT_CHECK=1`, see Runner.runnerMain) and renames it into place; later
 * starts use it, each saying `dstack-ts: snapshot: starting from BLOB` in its output first. A
 * start from a snapshot that dies before its ready line (a snapshot this node binary cannot
 * load aborts it) says so in the output, marks the snapshot failed and starts the runner
 * without it; a build that fails is marked failed the same way (its messages in `BLOB.log`). Only a
 * script-format bundle (`.cjs`, `bundleRunner(…, { snapshot: true })`) can be a snapshot's
 * entry; any other entry, a node binary `stat` cannot key, or `DSTACK_RUNNER_SNAPSHOT=0` in
 * the environment start it plainly, as before.
 *
 * The snapshot sits beside the bundle: `BUNDLE.<machine>.<node binary's size>.<mtime>.blob`
 * (~13 MB for the default runner build), with `.log`, `.failed` and a `.lock` directory while one
 * is built.
 */

const shQuote = (value: string): string => `'${value.replace(/'/g, `'\\''`)}'`

/**
 * The POSIX sh function `dstack_ts_runner OUT NODE BUNDLE ARGS…`: starts the runner BUNDLE
 * with the node binary NODE and ARGS, its stdout and stderr appended to the file OUT, from a
 * startup snapshot when there is one (above). It does not return: the runner replaces the
 * shell, or (from a snapshot, to fall back) the shell exits with the runner's status.
 */
export const RUNNER_START_FUNCTION = String.raw`dstack_ts_runner() {
  _o=$1 _n=$2 _b=$3; shift 3
  case $_b in *.cjs) ;; *) exec "$_n" "$_b" "$@" >>"$_o" 2>&1 ;; esac
  [ "${"$"}{DSTACK_RUNNER_SNAPSHOT:-1}" = 0 ] && exec "$_n" "$_b" "$@" >>"$_o" 2>&1
  _k=$(stat -L -c '%s.%Y' "$_n" 2>/dev/null) || exec "$_n" "$_b" "$@" >>"$_o" 2>&1
  _s="$_b.$(uname -m).$_k.blob"
  if [ -s "$_s" ] && [ ! -e "$_s.failed" ]; then
    echo "dstack-ts: snapshot: starting from $_s" >>"$_o"
    _w=$(wc -c 2>/dev/null <"$_o" || echo 0)
    "$_n" --snapshot-blob "$_s" -- "$_b" "$@" >>"$_o" 2>&1
    _r=$?
    # Node's own failures to load a snapshot (14, or an abort or a crash), before the ready line:
    # once more without it. A runner that was ready, stopped or refused its arguments ends here.
    case $_r in 14|132|133|134|135|136|139) ;; *) exit $_r ;; esac
    tail -c +$((_w + 1)) "$_o" 2>/dev/null | grep -q '"port":' && exit $_r
    : >"$_s.failed"
    echo "dstack-ts: snapshot: the runner did not start from $_s (exit status $_r); starting it without the snapshot" >>"$_o"
    exec "$_n" "$_b" "$@" >>"$_o" 2>&1
  fi
  if [ ! -e "$_s" ] && [ ! -e "$_s.failed" ]; then
    # A lock whose build was killed (its job ended first) is taken over: at once when the build
    # ran on this host and its process is gone, else after 2 minutes.
    _u=$(uname -n)
    if [ -d "$_s.lock" ]; then
      read -r _h _p 2>/dev/null <"$_s.lock/owner" || { _h=; _p=; }
      if { [ "$_h" = "$_u" ] && [ -n "$_p" ] && ! kill -0 "$_p" 2>/dev/null; } || [ -n "$(find "$_s.lock" -maxdepth 0 -mmin +2 2>/dev/null)" ]; then
        rm -rf "$_s.lock"
      fi
    fi
    if mkdir "$_s.lock" 2>/dev/null; then
      # Owned at once by this shell (the runner, once it execs), then by the build: a job
      # cancelled as soon as it starts leaves a lock the next start on this host takes over.
      echo "$_u $$" >"$_s.lock/owner"
      (
        echo "$_u $(exec sh -c 'echo $PPID')" >"$_s.lock/owner"
        _t="$_s.$$.tmp"
        if nice "$_n" --snapshot-blob "$_t" --build-snapshot "$_b" >"$_s.log" 2>&1 &&
          DSTACK_RUNNER_SNAPSHOT_CHECK=1 "$_n" --snapshot-blob "$_t" -- "$_b" 2>>"$_s.log" | grep -qx 'snapshot ok'; then
          mv -f "$_t" "$_s"
        else
          rm -f "$_t"
          : >"$_s.failed"
        fi
        rm -rf "$_s.lock"
      ) </dev/null >/dev/null 2>&1 &
    fi
  fi
  exec "$_n" "$_b" "$@" >>"$_o" 2>&1
}`

/**
 * The sh lines that start a runner bundle with `dstack_ts_runner` (the function, then its
 * call). `out`, `node` and each argument are sh words as they stand (`"$out"`, `"$node_bin"`);
 * `bundle` is a path, quoted here.
 *
 * @example
 * runnerStartScript({ out: `"$out"`, node: `"$node_bin"`, bundle: "/home/me/runner.cjs", args: ["--port", "0", "--work-dir", `"$work"`] })
 */
export const runnerStartScript = (options: {
  readonly out: string
  readonly node: string
  readonly bundle: string
  readonly args: ReadonlyArray<string>
}): string => `${RUNNER_START_FUNCTION}\ndstack_ts_runner ${options.out} ${options.node} ${shQuote(options.bundle)} ${options.args.join(" ")}`
