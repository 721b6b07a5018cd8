// A stand-in for the `remote` backend (SSH fleet hosts) in one test process: "provisioning" a
// host starts a real runner agent listening on the host's own loopback address (127.0.0.2,
// 127.0.0.3, … are all this machine on Linux), so the engine's fleet code runs against real
// runners, real processes and real TCP between the nodes without sshd. Runners are reached with
// the direct transport. The netns tests use the real backend-ssh plugin instead.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { Backend, definePlugin, InstanceDisk, InstanceResources, InstanceType } from "@dstack-ts/core"
import { DirectTransport } from "@dstack-ts/transport-direct"
import { serveRunner, type RunningRunner } from "../../core/src/runner/serveRunner.ts"
import { runnerPlugins } from "../../cli/src/runnerPlugins.ts"

export interface RemoteStandIn {
  readonly plugin: ReturnType<typeof definePlugin>
  /** The running runners by host name. */
  readonly runners: Map<string, RunningRunner>
  /** What each host was provisioned with (credentials included): the server handed them over. */
  readonly provisioned: Array<Backend.RemoteHost>
  /** Host names deprovisioned, in order. */
  readonly deprovisioned: Array<string>
  /** Hosts whose provisioning is refused (as an sshd refusing the key would be). */
  readonly refuse: Set<string>
}

export const makeRemoteStandIn = (): RemoteStandIn => {
  const runners = new Map<string, RunningRunner>()
  const provisioned: Array<Backend.RemoteHost> = []
  const deprovisioned: Array<string> = []
  const refuse = new Set<string>()
  const instanceType = new InstanceType({
    name: "ssh",
    resources: new InstanceResources({ cpus: 2, memoryMib: 4096, gpus: [], spot: false, disk: new InstanceDisk({ sizeMib: 50 * 1024 }) })
  })
  const backend: Backend.Backend = {
    ...Backend.make({
      type: "remote",
      catalog: () => Effect.succeed([]),
      createInstance: () => Backend.fail("remote", "createInstance", "Invalid", "SSH fleet hosts are provisioned, not created"),
      terminateInstance: () => Effect.void
    }),
    remoteHosts: {
      provision: (host) =>
        refuse.has(host.hostname)
          ? Backend.fail("remote", "provision", "PermissionDenied", `${host.user}@${host.hostname}: the host refused the key`)
          : Effect.promise(async () => {
            provisioned.push(host)
            await runners.get(host.hostname)?.close()
            const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-remote-standin-"))
            const runner = await serveRunner({ host: host.hostname, port: 0, workDir, plugins: runnerPlugins })
            runners.set(host.hostname, runner)
            return { instanceType, runnerPort: runner.port, internalIp: host.hostname }
          }),
      deprovision: (host) =>
        Effect.promise(async () => {
          deprovisioned.push(host.hostname)
          await runners.get(host.hostname)?.close()
          runners.delete(host.hostname)
        })
    }
  }
  const plugin = definePlugin({
    name: "@dstack-ts/test-remote-standin",
    version: "0.1.0",
    core: "^0.1.0",
    backends: {
      remote: () => Effect.acquireRelease(Effect.succeed(backend), () =>
        Effect.promise(async () => {
          for (const runner of runners.values()) await runner.close()
          runners.clear()
        }))
    },
    transports: { remote: DirectTransport.fromConfig }
  })
  return { plugin, runners, provisioned, deprovisioned, refuse }
}
