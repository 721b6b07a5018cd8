// The start-up check that replicas share their blobs: a server whose state store is shared
// (PostgreSQL) records that a code archive or stack file exists where every replica sees it, so
// its blob store must be shared too, or another replica fails to find the bytes.
import type { StoreReach } from "../ports/BlobStore.ts"

/** Refusal to start: a shared state store with blobs that only this machine sees. */
export class LocalBlobsError extends Error {
  readonly _tag = "LocalBlobsError"
  override readonly name = "LocalBlobsError"
}

const describe = (choice: unknown): string =>
  typeof choice === "string"
    ? `\`${choice}\``
    : typeof choice === "object" && choice !== null && typeof (choice as { driver?: unknown }).driver === "string"
    ? `\`${(choice as { driver: string }).driver}\``
    : "given"

/**
 * The refusal for this pair of stores, or undefined when they fit: a `shared` state store with a
 * blob store whose reach is `process` or `host`, unless `allowLocalBlobs`. A store that does not
 * say its reach is not judged.
 */
export const localBlobsProblem = (
  state: { readonly reach?: StoreReach | undefined; readonly choice: unknown },
  blobs: { readonly reach?: StoreReach | undefined; readonly choice: unknown },
  allowLocalBlobs: boolean
): LocalBlobsError | undefined => {
  if (allowLocalBlobs || state.reach !== "shared" || blobs.reach === undefined || blobs.reach === "shared") return undefined
  const where = blobs.reach === "process" ? "in this process's memory" : "on this machine's disk"
  return new LocalBlobsError(
    `The state store ${describe(state.choice)} is shared by every server replica on its database, but the blob store ` +
      `${describe(blobs.choice)} keeps code archives and stack files ${where}: another replica would not find them. ` +
      `Choose a shared blob store in the server's \`blobs\` option (\`s3\` or \`redis\` of @dstack-ts/blob-unstorage; ` +
      `\`dstack server\`: DSTACK_SERVER_S3_BUCKET), or set \`allowLocalBlobs\` ` +
      `(\`dstack server --allow-local-blobs\`) when this is the only server on the database.`
  )
}
