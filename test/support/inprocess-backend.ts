// A backend plugin for tests: each "instance" is a real runner agent served on a loopback port
// inside the test process, so engine tests exercise the real runner, real processes and real
// HTTP without a separate backend package. Never part of a server build.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import {
  Backend,
  definePlugin,
  InstanceDisk,
  InstanceOffer,
  InstanceResources,
  InstanceType,
  JobProvisioningData
} from "@dstack-ts/core"
import { serveRunner, type RunningRunner } from "../../core/src/runner/serveRunner.ts"
import { runnerPlugins } from "../../cli/src/runnerPlugins.ts"
import { DirectTransport } from "@dstack-ts/transport-direct"

export interface InProcessBackendOptions {
  /** What the single offer claims to have. */
  readonly cpus?: number
  readonly memoryMib?: number
  readonly price?: number
  /** How long creating an instance takes before its runner starts (a slow cloud), in ms. */
  readonly createDelayMs?: number
}

export const makeInProcessPlugin = (options: InProcessBackendOptions = {}) => {
  const runners = new Map<string, RunningRunner>()
  const created: Array<string> = []
  const instanceType = new InstanceType({
    name: "inprocess",
    resources: new InstanceResources({
      cpus: options.cpus ?? 4,
      memoryMib: options.memoryMib ?? 16 * 1024,
      gpus: [],
      spot: false,
      disk: new InstanceDisk({ sizeMib: 200 * 1024 })
    })
  })
  const backend = Backend.make({
    type: "inprocess",
    catalog: () => Effect.succeed([new InstanceOffer({ backend: "inprocess", region: "here", price: options.price ?? 0, instance: instanceType })]),
    createInstance: (_offer, config) =>
      Effect.promise(async () => {
        if (options.createDelayMs !== undefined) await new Promise((r) => setTimeout(r, options.createDelayMs))
        const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-inproc-"))
        const runner = await serveRunner({ host: "127.0.0.1", port: 0, workDir, plugins: runnerPlugins })
        runners.set(config.instanceId, runner)
        created.push(config.instanceId)
        return new JobProvisioningData({
          backend: "inprocess",
          instanceType,
          instanceId: config.instanceId,
          hostname: "127.0.0.1",
          region: "here",
          price: options.price ?? 0,
          dockerized: false,
          runnerPort: runner.port
        })
      }),
    terminateInstance: (instanceId) =>
      Effect.promise(async () => {
        await runners.get(instanceId)?.close()
        runners.delete(instanceId)
      })
  })
  const plugin = definePlugin({
    name: "@dstack-ts/test-backend-inprocess",
    version: "0.1.0",
    core: "^0.1.0",
    backends: {
      inprocess: () => Effect.acquireRelease(Effect.succeed(backend), () =>
        Effect.promise(async () => {
          for (const runner of runners.values()) await runner.close()
          runners.clear()
        }))
    },
    // Its runners listen on loopback in this process: the direct transport reaches them.
    transports: { inprocess: DirectTransport.fromConfig }
  })
  return { plugin, runners, created }
}
