/**
 * Attaching to a run: its ports become reachable on localhost (`map_to_port`, else the same
 * port), as upstream's `Run.attach()` does through an SSH tunnel. This build reaches instances
 * on the client's own machine (the `local` backend): a job's port is forwarded with a local TCP
 * proxy — to the port itself for a process job, to the published host port for a container.
 * Instances on other hosts need the SSH transport, and say so. Node and Deno only (node:net);
 * the client loads this module only when `attach` is called, so browsers never do.
 */
import * as net from "node:net"
import type { Run as RunEntity } from "@dstack-ts/core/wire"
import { latestSubmission } from "@dstack-ts/core/wire"

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"])

export interface Attachment {
  /** Job port → the local port it is reachable on. */
  readonly ports: Readonly<Record<number, number>>
  readonly close: () => Promise<void>
}

/** Why a run cannot be attached to from here, or undefined when it can. */
export const attachProblem = (run: RunEntity): string | undefined => {
  const sub = run.jobs[0] && latestSubmission(run.jobs[0])
  const pd = sub?.jobProvisioningData
  if (pd === undefined || pd.hostname === null) return `run ${run.runSpec.runName} has no instance yet`
  if (!LOOPBACK.has(pd.hostname)) {
    return `run ${run.runSpec.runName} runs on ${pd.hostname}: attaching to instances on other hosts needs the SSH transport, which this build does not have yet`
  }
  return undefined
}

const listen = (localPort: number, targetPort: number) =>
  new Promise<net.Server>((resolve, reject) => {
    const sockets = new Set<net.Socket>()
    const server = net.createServer((client) => {
      const upstream = net.connect(targetPort, "127.0.0.1")
      sockets.add(client).add(upstream)
      const drop = () => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      client.pipe(upstream).pipe(client)
      client.on("error", drop).on("close", drop)
      upstream.on("error", drop).on("close", drop)
    })
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(new Error(e.code === "EADDRINUSE" ? `local port ${localPort} is in use: pick another map_to_port ("LOCAL:${targetPort}")` : e.message))
    )
    server.listen(localPort, "127.0.0.1", () => {
      ;(server as net.Server & { dropAll?: () => void }).dropAll = () => sockets.forEach((s) => s.destroy())
      resolve(server)
    })
  })

/** Forwards the run's ports (of its first job) to localhost. */
export const attach = async (run: RunEntity): Promise<Attachment> => {
  const problem = attachProblem(run)
  if (problem !== undefined) throw new Error(problem)
  const job = run.jobs[0]
  const pd = latestSubmission(job)!.jobProvisioningData!
  // Where the runner published each port (containers); a process job listens on the port itself.
  type RuntimeData = { readonly ports?: Record<string, number> }
  const runtime: RuntimeData = await fetch(`http://127.0.0.1:${pd.runnerPort ?? 10999}/api/job_runtime_data`)
    .then((r): Promise<RuntimeData> | RuntimeData => (r.ok ? (r.json() as Promise<RuntimeData>) : {}))
    .catch((): RuntimeData => ({}))
  const published = runtime.ports ?? {}
  const servers: Array<net.Server> = []
  const ports: Record<number, number> = {}
  try {
    for (const app of job.jobSpec.appSpecs) {
      const target = published[String(app.port)] ?? app.port
      const local = app.mapToPort ?? app.port
      ports[app.port] = local
      // Already reachable where it should be: nothing to forward.
      if (local === target) continue
      servers.push(await listen(local, target))
    }
  } catch (error) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
    throw error
  }
  return {
    ports,
    close: async () => {
      for (const s of servers) (s as net.Server & { dropAll?: () => void }).dropAll?.()
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
    }
  }
}
