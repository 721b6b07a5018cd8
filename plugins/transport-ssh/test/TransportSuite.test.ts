// The RunnerTransport conformance suite run for the SSH transport against real sshd hosts
// (network namespaces, test/support/netns.ts). The suite's stand-in runners listen on this
// machine's address on the hosts' bridge; a relay inside the host makes each one answer on the
// host's own 127.0.0.1 at the same port, where a runner listens and where the tunnel dials.
import { RunnerTransport } from "@dstack-ts/core"
import { testTransport } from "@dstack-ts/core/testing"
import { Effect, Layer } from "effect"
import * as net from "node:net"
import { afterAll, beforeAll } from "vitest"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../../../test/support/netns.ts"
import { SshTransport } from "../src/index.ts"

let hosts: NetnsHosts

const target = (runnerPort: number): RunnerTransport.RunnerTarget => {
  const host = hosts.hosts[0]!
  return { hostname: host.ip, runnerPort, ssh: { user: host.user, port: host.port, privateKey: hosts.privateKey } }
}

/** A free port on this machine's bridge address (the relay takes the same port on the host). */
const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen({ host: hosts.gateway, port: 0 }, () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 1 })
  })
  afterAll(async () => {
    await hosts?.down()
  })

  testTransport("ssh", Layer.scoped(RunnerTransport.RunnerTransport, SshTransport.make({ reconnectAttempts: 2 })), {
    listen: (server) =>
      Effect.gen(function*() {
        const port = yield* Effect.acquireRelease(
          Effect.async<number>((resume) => {
            server.once("error", (error) => resume(Effect.die(error)))
            server.listen({ host: hosts.gateway, port: 0 }, () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
          }),
          () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
        )
        yield* Effect.acquireRelease(
          Effect.promise(() => hosts.relay(hosts.hosts[0]!, port, port)),
          (relay) => Effect.promise(() => relay.close())
        )
        return target(port)
      }),
    unreachable: Effect.map(freePort, target)
  })
})
