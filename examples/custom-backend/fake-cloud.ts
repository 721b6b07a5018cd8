/**
 * A backend plugin for an imaginary cloud, "Fake Cloud", written as a template for real ones.
 * Its catalog offers two instance types in two regions at different prices; an "instance" is a
 * real dstack-ts runner started on 127.0.0.1 inside this process, so jobs really run. Each step
 * says what a real cloud backend would do instead.
 */
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  Backend,
  type BackendFactory,
  definePlugin,
  InstanceDisk,
  InstanceOffer,
  InstanceResources,
  InstanceType,
  JobProvisioningData,
  Runner
} from "@dstack-ts/core"
import { Effect, ParseResult, Schedule, Schema } from "effect"

const TYPE = "fake-cloud"
const MODULE = "FakeCloudBackend"

/** The regions this cloud has. A real backend would list them from its API or SDK. */
export const REGIONS = ["us-east", "eu-west"] as const

/**
 * The plugin's section of the server configuration, as it appears in YAML (snake_case):
 * `{ type: fake-cloud, regions: [eu-west], api_key: ... }`. A real backend would take
 * credentials here; `regions` limits where it looks for offers.
 */
export const FakeCloudConfig = Schema.Struct({
  type: Schema.optional(Schema.Literal(TYPE)),
  regions: Schema.optional(Schema.Array(Schema.Literal(...REGIONS))),
  apiKey: Schema.optional(Schema.String).pipe(Schema.fromKey("api_key"))
})

/** Two instance types; the price list below gives each a price per region. */
const instanceTypes = {
  "fc.small": new InstanceType({
    name: "fc.small",
    resources: new InstanceResources({
      cpus: 2,
      memoryMib: 4 * 1024,
      gpus: [],
      spot: false,
      disk: new InstanceDisk({ sizeMib: 50 * 1024 }),
      description: "2 vCPU, 4 GB"
    })
  }),
  "fc.large": new InstanceType({
    name: "fc.large",
    resources: new InstanceResources({
      cpus: 8,
      memoryMib: 32 * 1024,
      gpus: [],
      spot: false,
      disk: new InstanceDisk({ sizeMib: 200 * 1024 }),
      description: "8 vCPU, 32 GB"
    })
  })
}

/** USD per hour by region and instance type: eu-west is a little dearer than us-east. */
export const PRICES: Readonly<Record<(typeof REGIONS)[number], Readonly<Record<keyof typeof instanceTypes, number>>>> = {
  "us-east": { "fc.small": 0.1, "fc.large": 0.4 },
  "eu-west": { "fc.small": 0.12, "fc.large": 0.48 }
}

const fail = (method: string, reason: Backend.BackendErrorReason, message: string, cause?: unknown) =>
  Backend.fail(MODULE, method, reason, message, cause)

/**
 * Makes the backend for one configuration section. Scoped: when the server stops, the scope
 * closes and every instance still running is terminated (a real backend would close its SDK
 * clients here; it would not terminate VMs, which outlive the server).
 */
export const makeFakeCloud: BackendFactory = (raw) =>
  Effect.gen(function*() {
    // 1. Decode the configuration; a bad section fails with `Invalid`, naming the field.
    const config = yield* Schema.decodeUnknown(FakeCloudConfig, { onExcessProperty: "error" })(raw ?? {}).pipe(
      Effect.mapError((error) =>
        new Backend.BackendError({
          module: MODULE,
          method: "make",
          reason: "Invalid",
          message: `invalid fake-cloud configuration:\n${ParseResult.TreeFormatter.formatErrorSync(error)}`,
          cause: error
        })
      )
    )
    const regions = config.regions ?? REGIONS

    // The "cloud": what runs, by instance id. A real backend keeps no such table; the cloud's
    // API is the source of truth, and the server stores the provisioning data we return.
    const running = new Map<string, { readonly runner: Runner.RunningRunner; readonly workDir: string }>()

    const stop = (instanceId: string) =>
      Effect.promise(async () => {
        const instance = running.get(instanceId)
        running.delete(instanceId)
        await instance?.runner.close()
        if (instance) fs.rmSync(instance.workDir, { recursive: true, force: true })
      })
    yield* Effect.addFinalizer(() => Effect.forEach([...running.keys()], stop, { discard: true }))

    return Backend.make({
      type: TYPE,

      // 2. The catalog: every (region, instance type) with its price. A real backend would call
      // the cloud's pricing and quota APIs (and cache them). `Backend.make` filters these by
      // the job's resources, spot policy and max_price, sorts them by price, and explains
      // every offer it leaves out; the server then applies `regions:` and `instance_types:`.
      catalog: () =>
        Effect.succeed(
          regions.flatMap((region) =>
            Object.values(instanceTypes).map((instance) =>
              new InstanceOffer({
                backend: TYPE,
                region,
                price: PRICES[region][instance.name as keyof typeof instanceTypes],
                instance,
                availability: "available"
              })
            )
          )
        ),

      // 3. Provision: a real backend would create a VM from an image that starts the dstack
      // runner (or a host agent), tagged with `config.instanceId` so that a retried call finds
      // the VM it already created; then wait until the VM has an address and the runner
      // answers its healthcheck; then return where it is. Here the "VM" is a runner on
      // loopback, started in this process.
      createInstance: (offer, instanceConfig) =>
        Effect.gen(function*() {
          const instanceId = `fc-${randomUUID()}`
          const workDir = fs.mkdtempSync(path.join(os.tmpdir(), `${instanceConfig.instanceName}-`))
          const runner = yield* Effect.tryPromise({
            try: () => Runner.serveRunner({ host: "127.0.0.1", port: 0, workDir }),
            catch: (cause) => new Backend.BackendError({ module: MODULE, method: "createInstance", reason: "Unknown", message: `the runner did not start: ${String(cause)}`, cause })
          })
          running.set(instanceId, { runner, workDir })

          // Wait for the host agent: a real VM takes minutes to boot, so poll with a deadline
          // and fail with `Timeout` (the engine then tries the next offer or retries).
          yield* Effect.tryPromise(() => fetch(`${runner.url}/api/healthcheck`).then((r) => r.ok ? r : Promise.reject(new Error(`HTTP ${r.status}`)))).pipe(
            Effect.retry({ times: 20, schedule: Schedule.spaced("250 millis") }),
            Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error("no answer in 60 s") }),
            Effect.catchAll((cause) =>
              Effect.zipRight(stop(instanceId), fail("createInstance", "Timeout", `the runner of ${instanceId} did not answer its healthcheck`, cause))
            )
          )

          // The provisioning data: what the server stores and how it reaches the runner. A
          // real VM would have a public hostname, an SSH user and port, `dockerized: true`
          // when a host agent runs jobs in containers, and the VM id as `instanceId`.
          return new JobProvisioningData({
            backend: TYPE,
            instanceType: offer.instance,
            instanceId,
            hostname: "127.0.0.1",
            region: offer.region,
            price: offer.price,
            username: os.userInfo().username,
            dockerized: false,
            runnerPort: runner.port,
            // Anything the backend needs later to terminate the instance (a zone, a disk id).
            backendData: JSON.stringify({ workDir })
          })
        }),

      // 4. Terminate: a real backend would delete the VM by id in its region. An instance
      // that is already gone fails with `NotFound`, which `Backend.make` turns into success,
      // so termination is idempotent (the engine may call it more than once).
      terminateInstance: (instanceId) =>
        running.has(instanceId) ? stop(instanceId) : fail("terminateInstance", "NotFound", `no fake-cloud instance ${instanceId}`)
    })
  })

/** The plugin: contributes the backend type `fake-cloud`. */
export default definePlugin({
  name: "@acme/backend-fake-cloud",
  version: "0.1.0",
  core: "^0.1.0",
  description: "Fake Cloud: two instance types in two regions; instances are runners on loopback",
  backends: { [TYPE]: makeFakeCloud }
})
