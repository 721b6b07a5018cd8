// The resolve hook of record-packages.mjs (it runs on Node's loader thread).
import { appendFileSync } from "node:fs"

let file

export function initialize(data) {
  file = data.file
}

export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context)
  if (file !== undefined && !/^(\.|\/|node:|file:|data:)/.test(specifier)) appendFileSync(file, `${specifier}\n`)
  return resolved
}
