// The RunnerTransport conformance suite run for core's direct transport: runners on loopback
// ports, forwards only in place (direct opens no tunnel).
import * as RunnerTransport from "../../src/ports/RunnerTransport.ts"
import { testTransport } from "../../src/testing/index.ts"

testTransport("direct", RunnerTransport.layerDirect, { forward: "in-place" })
