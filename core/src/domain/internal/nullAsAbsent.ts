// Objects as upstream's clients send them (and as YAML writes an empty key). The upstream Python client (pydantic) writes
// every unset optional field as `null`; dstack-ts's schemas mostly mark such fields optional
// (absent) without accepting `null`. `nullAsAbsent` rewrites a schema once (the router does so for
// every request schema at mount time), so that wherever an object's key is optional and its schema does not itself accept
// `null`, a `null` there is read as the key being absent (and so takes its default). Keys whose
// schema accepts `null` (an env value of `null` means "from the caller's environment"),
// required keys and array items keep their `null`. Unknown keys are ignored, as before.
import { Either, ParseResult, Schema, SchemaAST as AST } from "effect"

/**
 * Whether `ast` decodes a `null` itself (then a `null` is a value, not an absence): tried, since
 * a custom transformation from `unknown` may or may not take one.
 */
const acceptsNull = (ast: AST.AST): boolean => Either.isRight(ParseResult.decodeUnknownEither(Schema.make(ast))(null))

/** A required key's literal, which unions find their member by; undefined for any other type. */
const literalOf = (ast: AST.AST): AST.AST | undefined => {
  const encoded = AST.encodedAST(ast)
  return AST.isLiteral(encoded) ? encoded : undefined
}

const dropNulls = (keys: ReadonlyArray<PropertyKey>) => (input: unknown) => {
  const record = input as Record<PropertyKey, unknown>
  let out: Record<PropertyKey, unknown> | undefined
  for (const key of keys) {
    if (record[key] === null) {
      out ??= { ...record }
      delete out[key]
    }
  }
  return ParseResult.succeed(out ?? record)
}

const rewrite = (ast: AST.AST, memo: Map<AST.AST, AST.AST>): AST.AST => {
  const known = memo.get(ast)
  if (known !== undefined) return known
  let out: AST.AST
  switch (ast._tag) {
    case "TypeLiteral": {
      const props = ast.propertySignatures.map((p) => new AST.PropertySignature(p.name, rewrite(p.type, memo), p.isOptional, p.isReadonly, p.annotations))
      const index = ast.indexSignatures.map((i) => new AST.IndexSignature(i.parameter, rewrite(i.type, memo), i.isReadonly))
      const inner = new AST.TypeLiteral(props, index, ast.annotations)
      const nullable = ast.propertySignatures.filter((p) => p.isOptional && !acceptsNull(p.type)).map((p) => p.name)
      if (nullable.length === 0) {
        out = inner
        break
      }
      // First an outline that only takes the object apart (any key, any value; the literal tags
      // that unions choose a member by stay required), then its `null`s dropped, then the
      // object decoded by its own schema: every error, with its message and path, as before.
      const outline = new AST.TypeLiteral(
        ast.propertySignatures.map((p) => {
          const tag = p.isOptional ? undefined : literalOf(p.type)
          return new AST.PropertySignature(p.name, tag ?? AST.unknownKeyword, tag === undefined, p.isReadonly)
        }),
        [new AST.IndexSignature(AST.stringKeyword, AST.unknownKeyword, true)]
      )
      out = new AST.Transformation(outline, inner, new AST.FinalTransformation(dropNulls(nullable), ParseResult.succeed))
      break
    }
    case "Union": {
      out = AST.Union.make(ast.types.map((t) => rewrite(t, memo)), ast.annotations)
      break
    }
    case "TupleType": {
      out = new AST.TupleType(
        ast.elements.map((e) => new AST.OptionalType(rewrite(e.type, memo), e.isOptional, e.annotations)),
        ast.rest.map((r) => new AST.Type(rewrite(r.type, memo), r.annotations)),
        ast.isReadonly,
        ast.annotations
      )
      break
    }
    case "Refinement": {
      out = new AST.Refinement(rewrite(ast.from, memo), ast.filter, ast.annotations)
      break
    }
    case "Transformation": {
      // Only the encoded side reads the request's JSON; the decoded side is left as it is.
      out = new AST.Transformation(rewrite(ast.from, memo), ast.to, ast.transformation, ast.annotations)
      break
    }
    case "Suspend": {
      const f = ast.f
      let resolved: AST.AST | undefined
      out = new AST.Suspend(() => (resolved ??= rewrite(f(), memo)), ast.annotations)
      break
    }
    default:
      out = ast
  }
  memo.set(ast, out)
  return out
}

const cache = new WeakMap<Schema.Schema.Any, Schema.Schema.Any>()

/**
 * `schema` decoding `null` on an optional key as the key's absence (see the file's comment).
 * The same schema for the same input; only for decoding (encoding is unchanged but unused).
 */
export const nullAsAbsent = <A, I, R>(schema: Schema.Schema<A, I, R>): Schema.Schema<A, I, R> => {
  const known = cache.get(schema as Schema.Schema.Any)
  if (known !== undefined) return known as Schema.Schema<A, I, R>
  const made = Schema.make<A, I, R>(rewrite(schema.ast, new Map()))
  cache.set(schema as Schema.Schema.Any, made as Schema.Schema.Any)
  return made
}
