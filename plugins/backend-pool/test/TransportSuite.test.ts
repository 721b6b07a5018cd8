// The RunnerTransport conformance suite for the pool transport: every runner and echo server
// the suite starts listens on this machine's loopback, and the transport reaches it only
// through a machine joined to the hub (the real agent over a real TCP connection).
import { RunnerTransport } from "@dstack-ts/core"
import { freeLoopbackPort, listenLoopback, testTransport } from "@dstack-ts/core/testing"
import { Effect, Layer } from "effect"
import * as Hub from "../src/Hub.ts"
import * as PoolTransport from "../src/PoolTransport.ts"
import { hello, hubListener, joinMachine } from "./support.ts"

const hub = Hub.make()
const key = Hub.machineKey("conformance", "suite")

const layer = Layer.scoped(
  RunnerTransport.RunnerTransport,
  Effect.gen(function*() {
    const port = yield* hubListener(hub, "conformance")
    yield* joinMachine(port, hello("suite", { heartbeatSeconds: 5 }))
    return PoolTransport.make(hub)
  })
)

testTransport("pool", layer, {
  listen: (server) => Effect.map(listenLoopback(server), (target) => ({ hostname: key, runnerPort: target.runnerPort })),
  unreachable: Effect.map(freeLoopbackPort, (runnerPort) => ({ hostname: key, runnerPort }))
})
