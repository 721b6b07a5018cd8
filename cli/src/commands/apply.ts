// `dstack apply -f FILE`: loads a configuration, shows the plan, and submits the run.
import { defineCommand } from "citty"
import { stat } from "node:fs/promises"
import { resolve } from "node:path"
import { CliError, clientFor, confirmOrFail, globalArgs, notAvailable, runEffect } from "../context.ts"
import { applyOverrides, collectOverrides, overrideArgs, parseApplyArgs } from "../applyArgs.ts"
import { sshAccessLines } from "../sshAccess.ts"
import { print, table, withSpinner } from "../ui.ts"
import type * as DstackClient from "@dstack-ts/client"

type Run = DstackClient.Run

const formatBytes = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`

/**
 * Forwards the run's ports in the background once it is running; a run that exposes no ports
 * is left alone. A run that ends before it runs is not an error here (the logs and the exit
 * code tell); an instance this client cannot reach is reported once and the logs go on.
 */
const forwardPorts = (run: Run): { readonly close: () => Promise<void> } => {
  const appSpecs = run.entity.jobs[0]?.jobSpec.appSpecs ?? []
  // A dev environment is attached without ports too: its `ssh RUN` alias and IDE link.
  if (appSpecs.length === 0 && run.entity.runSpec.configuration.type !== "dev-environment") return { close: async () => {} }
  let closed = false
  const attached = run.attach().then(
    async (ports) => {
      if (closed) return run.detach()
      for (const [jobPort, localPort] of Object.entries(ports)) process.stderr.write(`Port ${jobPort} forwarded to http://127.0.0.1:${localPort}\n`)
      for (const line of await sshAccessLines(run)) process.stderr.write(`${line}\n`)
    },
    async (error: unknown) => {
      if (closed) return
      await run.refresh().catch(() => undefined)
      if (!run.finished) process.stderr.write(`Ports not forwarded: ${error instanceof Error ? error.message : String(error)}\n`)
    }
  )
  return {
    close: async () => {
      closed = true
      await attached
      if (run.ports !== undefined) await run.detach()
    }
  }
}

const applyArgs = {
  file: { type: "string", alias: "f", description: "The configuration file", default: ".dstack.yml", valueHint: "path" },
  yes: { type: "boolean", alias: "y", description: "Do not ask for confirmation" },
  detach: { type: "boolean", alias: "d", description: "Do not attach to the run or follow its logs once it is submitted" },
  force: { type: "boolean", description: "Apply without checking that the plan still names the current run (upstream's force); an active service is updated in place either way, other active runs must be stopped first" },
  name: { type: "string", alias: "n", description: "The run name (default: from the configuration, else a random one); for a fleet, the fleet name", valueHint: "run_name" },
  // Upstream's overrides of the configuration's keys (run configurations only).
  ...overrideArgs,
  ...globalArgs
} as const

export default defineCommand({
  meta: { name: "apply", description: "Apply a configuration: a run (task, service, dev-environment) is planned, submitted and followed; a fleet (type: fleet, ssh_config) is planned and created. As upstream, the options from -e/--env on override the run configuration's keys before planning (the plan lists the result); each value is read as the key's YAML value, and a key this build does not carry out is refused naming the option. A fleet takes only -n/--name" },
  args: applyArgs,
  run: async ({ args, rawArgs }) => {
    // citty keeps the last of a repeated flag and drops unknown ones: the strict parse keeps
    // every `-e`/`-b`/`--fleet` and refuses what `dstack apply` does not take.
    const values = parseApplyArgs(rawArgs, applyArgs)
    const path = resolve(args.file)
    const info = await stat(path).catch(() => undefined)
    if (info === undefined) throw new CliError(`Configuration file ${args.file} does not exist`)
    if (!info.isFile()) throw new CliError(`Configuration file ${args.file} is not a file`)
    const { loadConfiguration } = await import("@dstack-ts/core")
    // A ConfigurationError lists every problem at file:line:col, keys this build does not carry
    // out yet included (before anything is uploaded); main.ts prints them all.
    // A name under `env` without a value takes its value from this environment, as upstream's.
    const loaded = await runEffect(loadConfiguration(args.file, { supportedOnly: true, clientEnv: process.env }))
    // The arguments override the file's keys before the plan is asked for, held to the same
    // schema and the same refusals as the file (naming the argument).
    const overrides = collectOverrides(values, loaded.type)
    const { AnyConfiguration, unsupportedKeys } = await import("@dstack-ts/core")
    const fleetName = loaded.type === "fleet" && args.name !== undefined ? [{ arg: "-n/--name", path: ["name"], value: args.name }] : []
    const configuration = applyOverrides(AnyConfiguration as never, loaded, [...overrides, ...fleetName], unsupportedKeys)
    if (configuration.type === "fleet") {
      const { applyFleet } = await import("../fleetApply.ts")
      return applyFleet(configuration, args.file, { yes: args.yes, detach: args.detach })
    }
    if (configuration.type !== "task" && configuration.type !== "service" && configuration.type !== "dev-environment") {
      throw notAvailable(`Applying a ${(configuration as { type: string }).type} configuration`)
    }
    const client = await clientFor()
    // The working directory is the run's code, as upstream: packed honouring .gitignore and
    // .dstackignore, uploaded by hash (an unchanged tree is not uploaded again).
    const { LocalRepo } = await import("@dstack-ts/core")
    const repo = await withSpinner("Packing the code", () => runEffect(LocalRepo.fromDir(process.cwd())))
    await withSpinner(`Uploading the code (${repo.files.length} files, ${formatBytes(repo.codeSize)})`, async () => {
      await client.repos.init(repo)
      await client.repos.upload(repo)
    })
    const plan = await withSpinner("Getting the run plan", () => client.runs.getPlan(configuration, { runName: args.name, repo }))
    const offers = plan.jobPlans.reduce((n, j) => n + j.totalOffers, 0)
    const best = plan.jobPlans[0]?.offers[0]
    print(`Project ${plan.projectName}, user ${plan.user}: ${plan.action} ${plan.runSpec.runName ?? "a run"}, ${plan.jobPlans.length} job(s), ${offers} offer(s)${best ? `, best ${best.backend} ${best.instance.name} $${best.price}/h` : ""}`)
    // The properties the server planned with: the file's keys and the command-line overrides.
    const { planProperties } = await import("../planProperties.ts")
    const planned = (plan.runSpec.configuration ?? configuration) as typeof configuration
    print(table(["PROPERTY", "VALUE"], planProperties(planned)))
    print(configuration.image ? `Executor: docker (image ${configuration.image})` : "Executor: process (no image: the commands run under bash on the host)")
    const first = plan.jobPlans[0]
    if (first !== undefined && first.offers.length > 0) {
      const gib = (mib: number) => `${Math.round((mib / 1024) * 10) / 10}GB`
      print(
        table(
          ["#", "BACKEND", "REGION", "INSTANCE", "RESOURCES", "SPOT", "PRICE"],
          first.offers.slice(0, 3).map((o, i) => {
            const r = o.instance.resources
            const gpus = r.gpus.length === 0 ? "" : `, ${r.gpus.length}x${r.gpus[0].name}`
            return [String(i + 1), o.backend, o.region, o.instance.name, `${r.cpus}xCPU, ${gib(r.memoryMib)}, ${gib(r.disk.sizeMib)} disk${gpus}`, r.spot ? "yes" : "no", `$${o.price}`]
          })
        )
      )
      if (first.totalOffers > 3) print(`… ${first.totalOffers - 3} more offers`)
    } else if (first?.noOffersReason) {
      throw new CliError(`No offers: ${first.noOffersReason}`)
    }
    await confirmOrFail(args.yes, "Submit the run?")
    const run = await client.runs.apply(plan, { force: args.force === true })
    print(`Run ${run.name} submitted`)
    if (configuration.type === "service") {
      // The server proxies the service: its URL, and the model endpoint when it serves a model.
      const base = client.url.replace(/\/+$/, "")
      const project = encodeURIComponent(client.project)
      print(`Service URL: ${base}/proxy/services/${project}/${encodeURIComponent(run.name)}/${configuration.auth ? " (send Authorization: Bearer <your dstack token>)" : ""}`)
      if (configuration.model !== undefined) print(`Model ${configuration.model.name}: OpenAI-compatible at ${base}/proxy/models/${project}/v1`)
    }
    if (args.detach) return
    // Like upstream, an attached apply forwards the run's ports to localhost while it follows the
    // logs (messages on stderr, so stdout stays the job's output); Ctrl-C leaves the run running.
    const forwarding = forwardPorts(run)
    const interrupted = () => {
      process.stderr.write(`\nDetached from ${run.name}; it keeps running. \`dstack attach ${run.name}\` reattaches, \`dstack stop ${run.name}\` stops it.\n`)
      void forwarding.close().finally(() => process.exit(130))
    }
    process.once("SIGINT", interrupted)
    try {
      for await (const chunk of run.logs()) process.stdout.write(chunk)
    } finally {
      process.removeListener("SIGINT", interrupted)
      await forwarding.close()
    }
    // The exit code says how the run ended: 0 only for done.
    await run.refresh()
    if (run.status !== "done") {
      const entity = run.entity
      const sub = entity.jobs[0]?.jobSubmissions[entity.jobs[0].jobSubmissions.length - 1]
      const why = [entity.terminationReason, sub?.terminationReason, sub?.exitStatus !== undefined ? `exit status ${sub.exitStatus}` : undefined, sub?.terminationReasonMessage]
        .filter((x) => x !== undefined && x !== null && x !== "")
        .join(", ")
      throw new CliError(`Run ${run.name} ${run.status}${why ? `: ${why}` : ""}`)
    }
  }
})
