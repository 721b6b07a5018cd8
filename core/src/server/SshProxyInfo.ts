/**
 * Where the server's SSH proxy (SshProxy.ts) is reached, as runs answers advertise it: upstream's
 * `job_connection_info.sshproxy_hostname/port/upstream_id`, which upstream's CLI reads to attach
 * through the proxy (`SSHProxyAttach`) instead of an SSH chain to the job's host.
 */
import { Context } from "effect"

export interface SshProxyAddress {
  /** The host name clients connect to. */
  readonly hostname: string
  readonly port: number
}

/**
 * The advertised address of the SSH proxy (undefined when the server runs none) and the public
 * lines of its host keys (`ssh-rsa AAAA…`), which `/api/server/get_info` answers as
 * `sshproxy_host_keys` so clients pin them in the `ssh RUN` alias.
 */
export class SshProxySettings extends Context.Reference<SshProxySettings>()("@dstack-ts/core/SshProxySettings", {
  defaultValue: (): { readonly address: SshProxyAddress | undefined; readonly hostKeys?: ReadonlyArray<string> | undefined } => ({ address: undefined })
}) {}

/** Upstream's `upstream_id` of a job: its latest submission's id (a UUID) as 32 lowercase hex digits. */
export const upstreamIdOf = (submissionId: string): string => submissionId.replace(/-/g, "").toLowerCase()

/**
 * A run's wire form with `job_connection_info` on each job, as upstream fills it when its
 * proxy is enabled: the proxy's address and the job's upstream id.
 */
export const withConnectionInfo = <W>(run: W, address: SshProxyAddress): W => {
  const wire = run as { readonly jobs?: ReadonlyArray<any> }
  return {
    ...run,
    jobs: (wire.jobs ?? []).map((job) => {
      const subs: ReadonlyArray<{ readonly id?: string }> = job.job_submissions ?? []
      const latest = subs[subs.length - 1]
      if (latest?.id === undefined) return job
      return {
        ...job,
        job_connection_info: {
          ...(job.job_connection_info ?? {}),
          sshproxy_hostname: address.hostname,
          sshproxy_port: address.port,
          sshproxy_upstream_id: upstreamIdOf(latest.id)
        }
      }
    })
  } as W
}
