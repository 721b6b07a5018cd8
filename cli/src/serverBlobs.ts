// Where `dstack server` keeps blobs (code archives, stack files), read from the environment:
// an S3-compatible bucket when DSTACK_SERVER_S3_BUCKET is set (upstream dstack's variable),
// which every replica on one PostgreSQL database can share; files under the server directory
// otherwise.
import { join } from "node:path"
import { CliError } from "./context.ts"

/** A blob store by name, as `createServer`'s `blobs` option takes it. */
export interface BlobsChoice {
  readonly driver: string
  readonly options: Readonly<Record<string, unknown>>
}

const set = (env: NodeJS.ProcessEnv, name: string): string | undefined => {
  const value = env[name]
  return value === undefined || value.trim() === "" ? undefined : value.trim()
}

/**
 * The blob store for these environment variables:
 * - `DSTACK_SERVER_S3_BUCKET`: the bucket (it must exist); without it, `fs` under `<serverDir>/blobs`.
 * - `DSTACK_SERVER_S3_BUCKET_REGION` (else `AWS_REGION`, `AWS_DEFAULT_REGION`, `us-east-1`).
 * - `DSTACK_SERVER_S3_ENDPOINT` (else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
 *   `https://s3.<region>.amazonaws.com`): for MinIO, Ceph, R2 and other S3-compatible stores.
 * - `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`: the credentials (required with a bucket).
 * - `DSTACK_SERVER_S3_PREFIX`: a key prefix inside the bucket (optional).
 */
export const serverBlobs = (env: NodeJS.ProcessEnv, serverDir: string): BlobsChoice => {
  const bucket = set(env, "DSTACK_SERVER_S3_BUCKET")
  if (bucket === undefined) return { driver: "fs", options: { base: join(serverDir, "blobs") } }
  const region = set(env, "DSTACK_SERVER_S3_BUCKET_REGION") ?? set(env, "AWS_REGION") ?? set(env, "AWS_DEFAULT_REGION") ?? "us-east-1"
  const endpoint = set(env, "DSTACK_SERVER_S3_ENDPOINT") ?? set(env, "AWS_ENDPOINT_URL_S3") ?? set(env, "AWS_ENDPOINT_URL") ??
    `https://s3.${region}.amazonaws.com`
  const missing = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].filter((name) => set(env, name) === undefined)
  if (missing.length > 0) {
    throw new CliError(`DSTACK_SERVER_S3_BUCKET is set, but ${missing.join(" and ")} ${missing.length > 1 ? "are" : "is"} not: the s3 blob store needs credentials`)
  }
  const prefix = set(env, "DSTACK_SERVER_S3_PREFIX")
  return {
    driver: "s3",
    options: {
      bucket,
      endpoint,
      region,
      access_key_id: set(env, "AWS_ACCESS_KEY_ID"),
      secret_access_key: set(env, "AWS_SECRET_ACCESS_KEY"),
      ...(prefix === undefined ? {} : { base: prefix })
    }
  }
}
