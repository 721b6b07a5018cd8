// Real SSH hosts for tests: network namespaces on a bridge, each with its own IP and its own
// sshd, made and removed by scripts/netns-hosts.sh (./netnsHosts.ts). The test process stays in
// the root namespace and reaches the hosts by IP; the namespaces share this machine's
// filesystem, so `node` and /var/run/docker.sock work on them. Tests that need them use
// `describeWithNetns`: skipped loudly where they cannot be made (not root, no `ip`, no sshd),
// failed under CI=true.
import { describeWith } from "./components.ts"
import { netnsUnavailable } from "./netnsHosts.ts"

export * from "./netnsHosts.ts"

const unavailable = await netnsUnavailable()

/**
 * `describe` for tests on netns hosts: skipped with the reason where they cannot be made,
 * failing under CI=true.
 */
export const describeWithNetns = (body: () => void): void =>
  describeWith("netns-ssh-hosts", unavailable === undefined, unavailable ?? "", body)
