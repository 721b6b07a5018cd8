// The RunnerTransport conformance suite run for the direct transport: runners on loopback
// ports, forwards only in place (direct opens no tunnel).
import { testTransport } from "@dstack-ts/core/testing"
import { DirectTransport } from "../src/index.ts"

testTransport("direct", DirectTransport.layer, { forward: "in-place" })
