/**
 * Ports to expose: `80` (container port 80 on local port 80), `"8080:80"` (local 8080 → 80),
 * `"*:80"` (any free local port → 80), or `{local_port, container_port}`.
 */
import { Either, Schema } from "effect"
import { show, withShorthand } from "./Grammar.ts"

const PORT_EXPECTED = "a port such as 80, \"8080:80\" or \"*:80\""

const parsePort = (s: string | number): number | undefined => {
  const n = typeof s === "number" ? s : /^\d+$/.test(s.trim()) ? Number(s) : NaN
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : undefined
}

/** A port number from 1 to 65535. */
export const Port = Schema.Number.pipe(Schema.int(), Schema.between(1, 65535)).annotations({
  identifier: "Port",
  message: (issue) => ({ message: `expected a port number from 1 to 65535, got ${show(issue.actual)}`, override: true })
})

const parsePortMapping = (input: string | number): Either.Either<PortMapping, string> => {
  const fail = (why?: string) => Either.left(`expected ${PORT_EXPECTED}, got ${show(input)}${why ? ` (${why})` : ""}`)
  if (typeof input === "number") {
    const p = parsePort(input)
    return p === undefined ? fail("ports go from 1 to 65535") : Either.right({ localPort: p, containerPort: p })
  }
  const parts = input.split(":").map((s) => s.trim())
  if (parts.length > 2) return fail()
  const container = parsePort(parts[parts.length - 1])
  if (container === undefined) return fail()
  if (parts.length === 1) return Either.right({ localPort: container, containerPort: container })
  if (parts[0] === "*") return Either.right({ containerPort: container })
  const local = parsePort(parts[0])
  return local === undefined ? fail() : Either.right({ localPort: local, containerPort: container })
}

/** The object form of a port mapping. */
export const PortMappingObject = Schema.Struct({
    localPort: Schema.optionalWith(Port, { exact: true })
      .annotations({ description: "The port on the client. Omit to use any free port." })
      .pipe(Schema.fromKey("local_port")),
    containerPort: Schema.propertySignature(Port)
      .annotations({ description: "The port the application listens on." })
      .pipe(Schema.fromKey("container_port"))
})

/** A port mapping; without `localPort` the client picks a free local port. */
export const PortMapping = withShorthand(
  PortMappingObject,
  parsePortMapping,
  PORT_EXPECTED
).annotations({
  identifier: "PortMapping",
  description: "A port (`80`), a mapping from a local port (`\"8080:80\"`), any local port (`\"*:80\"`), or `{local_port, container_port}`."
})
export interface PortMapping {
  readonly localPort?: number
  readonly containerPort: number
}
