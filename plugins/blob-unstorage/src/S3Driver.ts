/**
 * An unstorage driver for S3-compatible object stores, on aws4fetch (AWS Signature Version 4
 * over `fetch`). unstorage's own `s3` driver does not fit a blob store: its key listing ignores
 * the prefix and stops at the first page (1,000 keys), and it answers a missing bucket as a
 * missing key. This one lists with ListObjectsV2 by prefix through every continuation page and
 * turns S3's error codes into errors that name the cause (`S3RequestError`).
 *
 * Requests use path-style URLs, `<endpoint>/<bucket>/<key>`; unstorage's `:` separators become
 * `/` in object keys, under an optional `base` prefix.
 */
import { AwsClient } from "aws4fetch"
import type { Driver } from "unstorage"
import type { BlobStore } from "@dstack-ts/core"

export interface S3DriverOptions {
  /** The bucket that holds the objects; it must exist. */
  readonly bucket: string
  /** The S3 API's base URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://minio:9000`. */
  readonly endpoint: string
  /** The region requests are signed for, e.g. `eu-west-1` (`us-east-1` for most S3-compatible servers). */
  readonly region: string
  /** The access key id of the credentials. */
  readonly accessKeyId: string
  /** The secret access key of the credentials. */
  readonly secretAccessKey: string
  /** A key prefix inside the bucket (without a trailing `/`), so that several stores can share one bucket. */
  readonly base?: string | undefined
}

/** A failed S3 request: the S3 error code (or the network error's code) and the reason for the BlobStore. */
export class S3RequestError extends Error {
  override readonly name = "S3RequestError"
  constructor(
    message: string,
    /** `NoSuchBucket`, `SignatureDoesNotMatch`, `ECONNREFUSED` … */
    readonly code: string,
    /** The HTTP status, when the endpoint answered. */
    readonly status: number | undefined,
    readonly reason: BlobStore.BlobStoreErrorReason,
    options?: { readonly cause?: unknown }
  ) {
    super(message, options)
  }
}

const xmlText = (xml: string, tag: string): string | undefined => {
  const m = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(xml)
  return m === null ? undefined : xmlDecode(m[1])
}

const xmlDecode = (s: string): string =>
  s.replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) =>
    e === "lt"
      ? "<"
      : e === "gt"
      ? ">"
      : e === "quot"
      ? "\""
      : e === "apos"
      ? "'"
      : e === "amp"
      ? "&"
      : String.fromCodePoint(e.startsWith("#x") ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)))

/** What to tell the operator for an S3 error code. */
const HINTS: Readonly<Record<string, string>> = {
  SignatureDoesNotMatch: "check the blob store's secret_access_key",
  InvalidAccessKeyId: "check the blob store's access_key_id",
  AuthorizationHeaderMalformed: "check the blob store's region",
  NoSuchBucket: "create the bucket or fix the blob store's bucket",
  AccessDenied: "the credentials may not use this bucket"
}

const reasonOfStatus = (status: number, code: string): BlobStore.BlobStoreErrorReason => {
  if (code === "NoSuchBucket") return "Invalid"
  if (code === "NoSuchKey") return "NotFound"
  if (status === 401 || status === 403) return "PermissionDenied"
  if (code === "RequestTimeout" || status === 408 || status === 504) return "Timeout"
  if (status === 429 || status >= 500) return "Transport"
  if (status === 400) return "Invalid"
  return "Unknown"
}

/** Builds the driver; nothing is requested until a method is called (see `checkBucket`). */
export const s3Driver = (options: S3DriverOptions): Driver & { readonly checkBucket: () => Promise<void> } => {
  const client = new AwsClient({
    service: "s3",
    region: options.region,
    accessKeyId: options.accessKeyId,
    secretAccessKey: options.secretAccessKey,
    // aws4fetch retries 5xx and 429 answers; network failures are not retried.
    retries: 2
  })
  const endpoint = options.endpoint.replace(/\/+$/, "")
  const bucketUrl = `${endpoint}/${encodeURIComponent(options.bucket)}`
  const base = options.base === undefined || options.base === "" ? "" : `${options.base.replace(/^\/+|\/+$/g, "")}/`
  const objectKey = (key: string) => base + key.replaceAll(":", "/")
  const objectUrl = (key: string) => `${bucketUrl}/${objectKey(key).split("/").map(encodeURIComponent).join("/")}`
  const where = `bucket ${JSON.stringify(options.bucket)} at ${endpoint}`

  /** One signed request; 404 NoSuchKey answers undefined when `missingOk`, every other failure throws. */
  const request = async (
    what: string,
    url: string,
    init: { readonly method: string; readonly body?: Uint8Array | string; readonly headers?: Record<string, string> },
    missingOk: boolean
  ): Promise<Response | undefined> => {
    let res: Response
    try {
      res = await client.fetch(url, init as RequestInit)
    } catch (cause) {
      const code = String((cause as { cause?: { code?: unknown } })?.cause?.code ?? (cause as { code?: unknown })?.code ?? "ENETWORK")
      const detail = cause instanceof Error ? ((cause.cause as Error | undefined)?.message ?? cause.message) : String(cause)
      throw new S3RequestError(
        `cannot reach the S3 endpoint ${endpoint} (${what}): ${detail}`,
        code,
        undefined,
        code === "ETIMEDOUT" || code === "UND_ERR_CONNECT_TIMEOUT" ? "Timeout" : "Transport",
        { cause }
      )
    }
    if (res.ok) return res
    const text = init.method === "HEAD" ? "" : await res.text().catch(() => "")
    const code = xmlText(text, "Code") ?? (res.status === 404 ? (url === bucketUrl ? "NoSuchBucket" : "NoSuchKey") : `HTTP${res.status}`)
    if (missingOk && code === "NoSuchKey") return undefined
    const message = xmlText(text, "Message") ?? res.statusText
    const hint = HINTS[code]
    throw new S3RequestError(
      `S3 answered ${res.status} ${code} to ${what} in ${where}: ${message}${hint === undefined ? "" : ` (${hint})`}`,
      code,
      res.status,
      reasonOfStatus(res.status, code)
    )
  }

  const get = (key: string) => request(`GET ${objectKey(key)}`, objectUrl(key), { method: "GET" }, true)

  /** Reads an answer's body; a connection lost midway is a Transport error like any other. */
  const body = async <A>(key: string, read: () => Promise<A>): Promise<A> => {
    try {
      return await read()
    } catch (cause) {
      throw new S3RequestError(
        `the S3 endpoint ${endpoint} broke off GET ${objectKey(key)} in ${where}: ${cause instanceof Error ? cause.message : String(cause)}`,
        "ECONNRESET",
        undefined,
        "Transport",
        { cause }
      )
    }
  }
  const put = async (key: string, body: Uint8Array | string) => {
    await request(`PUT ${objectKey(key)}`, objectUrl(key), { method: "PUT", body }, false)
  }

  const listKeys = async (prefix: string): Promise<Array<string>> => {
    const keys: Array<string> = []
    let token: string | undefined
    do {
      const params = new URLSearchParams({ "list-type": "2", prefix: base + prefix })
      if (token !== undefined) params.set("continuation-token", token)
      const res = await request(`ListObjectsV2 prefix ${JSON.stringify(base + prefix)}`, `${bucketUrl}?${params}`, { method: "GET" }, false)
      const xml = await res!.text()
      if (!xml.includes("<ListBucketResult")) {
        throw new S3RequestError(`S3 answered ListObjectsV2 in ${where} with no <ListBucketResult>: ${xml.slice(0, 200)}`, "InvalidResponse", res!.status, "Unknown")
      }
      for (const m of xml.matchAll(/<Contents>[\s\S]*?<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Contents>/g)) {
        const key = xmlDecode(m[1])
        if (key.startsWith(base)) keys.push(key.slice(base.length).replaceAll("/", ":"))
      }
      token = xmlText(xml, "IsTruncated") === "true" ? xmlText(xml, "NextContinuationToken") : undefined
    } while (token !== undefined)
    return keys
  }

  return {
    name: "s3",
    options,
    /** Fails with a clear error when the bucket is missing, the credentials are refused or the endpoint is down. */
    checkBucket: async () => {
      const params = new URLSearchParams({ "list-type": "2", "max-keys": "1", prefix: base })
      const res = await request("ListObjectsV2 (checking the bucket)", `${bucketUrl}?${params}`, { method: "GET" }, false)
      await res!.body?.cancel()
    },
    hasItem: async (key) => {
      // GET, not HEAD: a HEAD error has no body, so a missing bucket would read as a missing key.
      const res = await get(key)
      await res?.body?.cancel()
      return res !== undefined
    },
    getItem: async (key) => {
      const res = await get(key)
      return res === undefined ? null : body(key, () => res.text())
    },
    getItemRaw: async (key) => {
      const res = await get(key)
      return res === undefined ? null : new Uint8Array(await body(key, () => res.arrayBuffer()))
    },
    setItem: (key, value) => put(key, value),
    setItemRaw: (key, value) => put(key, value instanceof Uint8Array ? value : new TextEncoder().encode(String(value))),
    removeItem: async (key) => {
      await request(`DELETE ${objectKey(key)}`, objectUrl(key), { method: "DELETE" }, true)
    },
    getKeys: (prefix) => listKeys(prefix === undefined || prefix === "" ? "" : prefix.replaceAll(":", "/")),
    clear: async (prefix) => {
      const keys = await listKeys(prefix === undefined || prefix === "" ? "" : prefix.replaceAll(":", "/"))
      for (const key of keys) await request(`DELETE ${objectKey(key)}`, objectUrl(key), { method: "DELETE" }, true)
    }
  }
}
