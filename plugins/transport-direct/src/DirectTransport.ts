/**
 * The `direct` runner transport: no tunnel, the server dials `hostname:runnerPort` itself. Right
 * for a runner on this machine, for hosts on a network the server reaches, and for tests; it
 * opens no forwards: a port of the target is answered in place (nothing opened), since the
 * server reaches the target's ports as it reaches its runner.
 */
import { Effect, Layer } from "effect"
import { RunnerTransport } from "@dstack-ts/core"

const { fail, fetchClient } = RunnerTransport

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"])

const isPort = (port: number, min: number) => Number.isInteger(port) && port >= min && port <= 65535

const urlHost = (hostname: string) => (hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname)

/**
 * A transport with no tunnel: the server dials `hostname:runnerPort` directly. Right for a
 * runner on this machine, for tests, and for hosts whose ports the server reaches (a Kubernetes
 * node's NodePorts). It opens nothing, so `forward` answers in place: with local port 0, the
 * target's own address and port (any host the server reaches, as it reaches the runner); a
 * given local port only for a loopback target whose port it is. Anything else is `Invalid`.
 */
export const direct: RunnerTransport.RunnerTransport = {
  name: "direct",
  connect: (target) =>
    target.hostname === ""
      ? fail("direct", "connect", "Invalid", "the instance has no host name yet")
      : !isPort(target.runnerPort, 1)
      ? fail("direct", "connect", "Invalid", `the runner port must be 1..65535, got ${target.runnerPort}`)
      : Effect.succeed(fetchClient("direct", `http://${urlHost(target.hostname)}:${target.runnerPort}`)),
  forward: (target, localPort, remotePort) =>
    target.hostname === ""
      ? fail("direct", "forward", "Invalid", "the instance has no host name yet")
      : !isPort(remotePort, 1)
      ? fail("direct", "forward", "Invalid", `the remote port must be 1..65535, got ${remotePort}`)
      : !isPort(localPort, 0)
      ? fail("direct", "forward", "Invalid", `the local port must be 0..65535, got ${localPort}`)
      : localPort === 0 || (LOOPBACK.has(target.hostname) && localPort === remotePort)
      ? Effect.succeed({ localHost: target.hostname, localPort: remotePort, remotePort })
      : fail(
        "direct",
        "forward",
        "Invalid",
        `the direct transport cannot forward local port ${localPort} to ${target.hostname}:${remotePort}; use a tunnelling transport (ssh)`
      )
}

/** The direct transport as the `RunnerTransport` service. */
export const layer: Layer.Layer<RunnerTransport.RunnerTransport> = Layer.succeed(RunnerTransport.RunnerTransport, direct)

/** The transport from the server configuration: `direct` takes no options. */
export const fromConfig = (config: unknown): Effect.Effect<RunnerTransport.RunnerTransport, RunnerTransport.RunnerTransportError> =>
  config === undefined || config === null || (typeof config === "object" && Object.keys(config).length === 0)
    ? Effect.succeed(direct)
    : fail("direct", "fromConfig", "Invalid", `the direct transport takes no options, got ${JSON.stringify(config).slice(0, 200)}`)
