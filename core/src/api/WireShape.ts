/**
 * A fingerprint of the JSON shape a schema encodes to: its keys, which are optional, their
 * types, literals and union members. Stored beside a value encoded with the schema, it tells a
 * later reader whether the stored JSON is still exactly what this build's schema would write —
 * so it can be sent as is instead of decoded and encoded again.
 */
import { SchemaAST } from "effect"
import type { Schema } from "effect"

const describe = (root: SchemaAST.AST): string => {
  // Suspended (recursive) schemas refer back by number.
  const seen = new Map<SchemaAST.AST, number>()
  const go = (ast: SchemaAST.AST): string => {
    const at = seen.get(ast)
    if (at !== undefined) return `#${at}`
    switch (ast._tag) {
      case "Suspend": {
        seen.set(ast, seen.size)
        return `S(${go(SchemaAST.encodedAST(ast.f()))})`
      }
      case "Refinement":
        return go(ast.from)
      case "Transformation":
        return go(ast.from)
      case "Declaration": {
        const id = SchemaAST.getIdentifierAnnotation(ast)
        return `D(${id._tag === "Some" ? id.value : "?"};${ast.typeParameters.map(go).join(",")})`
      }
      case "Literal":
        return `L(${typeof ast.literal === "bigint" ? `${ast.literal}n` : JSON.stringify(ast.literal)})`
      case "UniqueSymbol":
        return `Y(${String(ast.symbol)})`
      case "Enums":
        return `E(${JSON.stringify(ast.enums)})`
      case "TemplateLiteral":
        return `TL(${JSON.stringify(ast.head)};${ast.spans.map((s) => `${go(s.type)}${JSON.stringify(s.literal)}`).join(",")})`
      case "TupleType":
        return `T(${ast.elements.map((e) => `${go(e.type)}${e.isOptional ? "?" : ""}`).join(",")};${ast.rest.map((r) => go(r.type)).join(",")})`
      case "TypeLiteral": {
        const props = ast.propertySignatures.map((p) => `${JSON.stringify(String(p.name))}${p.isOptional ? "?" : ""}:${go(p.type)}`).sort()
        const index = ast.indexSignatures.map((i) => `[${go(i.parameter)}]:${go(i.type)}`).sort()
        return `{${props.join(",")};${index.join(",")}}`
      }
      case "Union":
        return `U(${ast.types.map(go).sort().join("|")})`
      default:
        return ast._tag
    }
  }
  return go(SchemaAST.encodedAST(root))
}

// cyrb53: a fast 53-bit string hash, the same on every runtime.
const hash53 = (text: string): string => {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ ch, 2654435761)
    h2 = Math.imul(h2 ^ ch, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)
}

/** The fingerprint of the JSON shape `schema` encodes to (a short string). */
export const wireShape = (schema: Schema.Schema.Any): string => hash53(describe(schema.ast))

/** The readable description the fingerprint hashes (for tests and debugging). */
export const describeWireShape = (schema: Schema.Schema.Any): string => describe(schema.ast)
