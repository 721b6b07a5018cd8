// The RunnerTransport conformance suite run for the local transport, as the host makes it from
// its (empty) configuration: runners on loopback ports, forwards through its TCP proxy.
import { RunnerTransport } from "@dstack-ts/core"
import { testTransport } from "@dstack-ts/core/testing"
import { Layer } from "effect"
import { LocalTransport } from "../src/index.ts"

testTransport("local", Layer.scoped(RunnerTransport.RunnerTransport, LocalTransport.fromConfig({})))
