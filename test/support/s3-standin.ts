// An S3 stand-in for tests: a small HTTP server on loopback that speaks the part of the S3 REST
// API the `s3` blob store uses (path-style PUT/GET/HEAD/DELETE of objects, ListObjectsV2 with
// prefix, max-keys and continuation, CreateBucket/HeadBucket), keeps objects in files on disk,
// and verifies AWS Signature Version 4 on every request the way S3 does: an unknown access key
// is 403 InvalidAccessKeyId, a wrong secret 403 SignatureDoesNotMatch, a missing bucket 404
// NoSuchBucket, with S3's XML error bodies. It is a stand-in, not S3: no multipart uploads,
// ranges, versioning, ACLs or virtual-hosted bucket names.
import { createHash, createHmac, randomUUID, timingSafeEqual } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { pipeline } from "node:stream/promises"

export interface S3StandinOptions {
  readonly accessKeyId?: string
  readonly secretAccessKey?: string
  readonly region?: string
  /** Buckets that exist from the start. */
  readonly buckets?: ReadonlyArray<string>
  /** The most keys one ListObjectsV2 page answers (S3: 1000); small values force continuation. */
  readonly maxKeysPerPage?: number
  /** Where objects are kept (default: a fresh temporary directory, removed by `close`). */
  readonly dir?: string
  /** A port to listen on (default: any free one); a restarted stand-in can take its old port. */
  readonly port?: number
}

export interface S3Standin {
  /** `http://127.0.0.1:<port>`: the `endpoint` option of the store. */
  readonly endpoint: string
  readonly port: number
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly region: string
  readonly dir: string
  /** Requests answered so far, by S3 operation (`PutObject`, `ListObjectsV2` …). */
  readonly operations: Map<string, number>
  /**
   * Faults to inject: `cutGetsAfter` bytes, each GetObject answer is cut off (the connection
   * destroyed) after that many bytes of its body; undefined for none.
   */
  readonly faults: { cutGetsAfter: number | undefined }
  /** The keys of a bucket, sorted. */
  readonly keys: (bucket: string) => ReadonlyArray<string>
  readonly close: () => Promise<void>
}

interface StoredObject {
  readonly file: string
  readonly size: number
  readonly etag: string
  readonly lastModified: Date
  readonly contentType: string | undefined
}

const xmlEscape = (s: string): string =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;")

/** RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ percent-encoded. */
const uriEncode = (s: string): string =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)

const hmac = (key: string | Buffer, data: string): Buffer => createHmac("sha256", key).update(data, "utf8").digest()
const sha256Hex = (data: string | Buffer): string => createHash("sha256").update(data).digest("hex")

/** Starts a stand-in; `close` stops it and removes its directory (unless `dir` was given). */
export const startS3Standin = async (options: S3StandinOptions = {}): Promise<S3Standin> => {
  const accessKeyId = options.accessKeyId ?? "STANDINACCESSKEY"
  const secretAccessKey = options.secretAccessKey ?? "standin-secret-access-key"
  const region = options.region ?? "us-east-1"
  const maxKeysPerPage = options.maxKeysPerPage ?? 1000
  const ownDir = options.dir === undefined
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "dstack-s3-standin-"))
  fs.mkdirSync(path.join(dir, "objects"), { recursive: true })
  const buckets = new Map<string, Map<string, StoredObject>>()
  for (const b of options.buckets ?? []) buckets.set(b, new Map())
  const operations = new Map<string, number>()
  const faults: { cutGetsAfter: number | undefined } = { cutGetsAfter: undefined }
  const count = (op: string) => operations.set(op, (operations.get(op) ?? 0) + 1)

  const sendError = (res: http.ServerResponse, status: number, code: string, message: string, resource: string) => {
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message>` +
      `<Resource>${xmlEscape(resource)}</Resource><RequestId>${randomUUID()}</RequestId></Error>`
    res.writeHead(status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body) })
    res.end(body)
  }

  /** Checks the SigV4 Authorization header; answers the error to send, or undefined. */
  const authenticate = (req: http.IncomingMessage, rawPath: string, rawQuery: string): [number, string, string] | undefined => {
    const auth = req.headers.authorization
    if (auth === undefined) return [403, "AccessDenied", "Access Denied (no Authorization header)"]
    const m = /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/
      .exec(auth)
    if (m === null) return [400, "AuthorizationHeaderMalformed", "The authorization header is malformed"]
    const [, keyId, date, credRegion, service, signedHeaders, signature] = m
    if (keyId !== accessKeyId) return [403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."]
    if (service !== "s3") return [400, "AuthorizationHeaderMalformed", `The authorization header is malformed; the service '${service}' is wrong; expecting 's3'`]
    if (credRegion !== region) {
      return [400, "AuthorizationHeaderMalformed", `The authorization header is malformed; the region '${credRegion}' is wrong; expecting '${region}'`]
    }
    const amzDate = req.headers["x-amz-date"]
    if (typeof amzDate !== "string" || amzDate.slice(0, 8) !== date) return [403, "AccessDenied", "X-Amz-Date is missing or does not match the credential date"]
    const payloadHash = req.headers["x-amz-content-sha256"]
    if (typeof payloadHash !== "string") return [400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"]
    const names = signedHeaders.split(";")
    if (!names.includes("host")) return [403, "AccessDenied", "The host header must be signed"]
    const canonicalHeaders = names.map((name) => {
      const value = req.headers[name]
      const text = Array.isArray(value) ? value.join(",") : (value ?? "")
      return `${name}:${text.trim().replace(/\s+/g, " ")}\n`
    }).join("")
    const canonicalUri = rawPath.split("/").map((segment) => uriEncode(decodeURIComponent(segment))).join("/")
    const canonicalQuery = rawQuery === ""
      ? ""
      : rawQuery.split("&").filter((p) => p !== "").map((pair) => {
        const eq = pair.indexOf("=")
        const k = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq))
        const v = eq < 0 ? "" : decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, " "))
        return [uriEncode(k), uriEncode(v)] as const
      }).sort(([k1, v1], [k2, v2]) => (k1 < k2 ? -1 : k1 > k2 ? 1 : v1 < v2 ? -1 : v1 > v2 ? 1 : 0)).map(([k, v]) => `${k}=${v}`).join("&")
    const canonicalRequest = [req.method, canonicalUri, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].join("\n")
    const scope = `${date}/${credRegion}/s3/aws4_request`
    const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(canonicalRequest)].join("\n")
    const signingKey = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), credRegion), "s3"), "aws4_request")
    const expected = createHmac("sha256", signingKey).update(stringToSign, "utf8").digest()
    const given = Buffer.from(signature, "hex")
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return [403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method."]
    }
    return undefined
  }

  const listObjects = (res: http.ServerResponse, bucket: string, objects: Map<string, StoredObject>, query: URLSearchParams) => {
    count("ListObjectsV2")
    const prefix = query.get("prefix") ?? ""
    const asked = Number(query.get("max-keys") ?? "1000")
    const maxKeys = Math.max(0, Math.min(Number.isFinite(asked) ? asked : 1000, maxKeysPerPage))
    const token = query.get("continuation-token")
    const after = token === null ? query.get("start-after") ?? "" : Buffer.from(token, "base64url").toString("utf8")
    const matching = [...objects.keys()].filter((k) => k.startsWith(prefix) && k > after).sort()
    const page = matching.slice(0, maxKeys)
    const truncated = matching.length > page.length
    const contents = page.map((key) => {
      const o = objects.get(key)!
      return `<Contents><Key>${xmlEscape(key)}</Key><LastModified>${o.lastModified.toISOString()}</LastModified>` +
        `<ETag>&quot;${o.etag}&quot;</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`
    }).join("")
    const next = truncated ? `<NextContinuationToken>${Buffer.from(page.at(-1)!, "utf8").toString("base64url")}</NextContinuationToken>` : ""
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
      `<Name>${xmlEscape(bucket)}</Name><Prefix>${xmlEscape(prefix)}</Prefix><KeyCount>${page.length}</KeyCount>` +
      `<MaxKeys>${maxKeys}</MaxKeys><IsTruncated>${truncated}</IsTruncated>${contents}${next}</ListBucketResult>`
    res.writeHead(200, { "content-type": "application/xml", "content-length": Buffer.byteLength(body) })
    res.end(body)
  }

  const putObject = async (req: http.IncomingMessage, res: http.ServerResponse, objects: Map<string, StoredObject>, key: string, resource: string) => {
    count("PutObject")
    const file = path.join(dir, "objects", randomUUID())
    const md5 = createHash("md5")
    const sha = createHash("sha256")
    let size = 0
    req.on("data", (piece: Buffer) => {
      md5.update(piece)
      sha.update(piece)
      size += piece.length
    })
    await pipeline(req, fs.createWriteStream(file))
    const claimed = req.headers["x-amz-content-sha256"]
    if (claimed !== "UNSIGNED-PAYLOAD" && claimed !== sha.digest("hex")) {
      fs.rmSync(file, { force: true })
      return sendError(res, 400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.", resource)
    }
    const old = objects.get(key)
    const etag = md5.digest("hex")
    const type = req.headers["content-type"]
    objects.set(key, { file, size, etag, lastModified: new Date(), contentType: typeof type === "string" ? type : undefined })
    if (old !== undefined) fs.rmSync(old.file, { force: true })
    res.writeHead(200, { etag: `"${etag}"`, "content-length": 0 })
    res.end()
  }

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const raw = req.url ?? "/"
    const q = raw.indexOf("?")
    const rawPath = q < 0 ? raw : raw.slice(0, q)
    const rawQuery = q < 0 ? "" : raw.slice(q + 1)
    const query = new URLSearchParams(rawQuery)
    const denied = authenticate(req, rawPath, rawQuery)
    if (denied !== undefined) {
      req.resume()
      return sendError(res, denied[0], denied[1], denied[2], rawPath)
    }
    const parts = rawPath.split("/").slice(1).map((s) => decodeURIComponent(s))
    const bucket = parts[0] ?? ""
    const key = parts.slice(1).join("/")
    const resource = `/${bucket}${key === "" ? "" : `/${key}`}`
    if (bucket === "") {
      req.resume()
      return sendError(res, 400, "InvalidRequest", "The stand-in does not list buckets", resource)
    }
    const objects = buckets.get(bucket)
    if (key === "" && req.method === "PUT") {
      count("CreateBucket")
      req.resume()
      if (objects !== undefined) return sendError(res, 409, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.", resource)
      buckets.set(bucket, new Map())
      res.writeHead(200, { location: `/${bucket}`, "content-length": 0 })
      return res.end()
    }
    if (objects === undefined) {
      req.resume()
      if (req.method === "HEAD") {
        res.writeHead(404)
        return res.end()
      }
      return sendError(res, 404, "NoSuchBucket", "The specified bucket does not exist", resource)
    }
    if (key === "") {
      req.resume()
      if (req.method === "HEAD") {
        count("HeadBucket")
        res.writeHead(200)
        return res.end()
      }
      if (req.method === "GET" && query.get("list-type") === "2") return listObjects(res, bucket, objects, query)
      return sendError(res, 501, "NotImplemented", `The stand-in does not implement ${req.method} ${raw} on a bucket`, resource)
    }
    switch (req.method) {
      case "PUT":
        if (req.headers["x-amz-copy-source"] !== undefined) {
          req.resume()
          return sendError(res, 501, "NotImplemented", "The stand-in does not implement CopyObject", resource)
        }
        return putObject(req, res, objects, key, resource)
      case "GET":
      case "HEAD": {
        count(req.method === "GET" ? "GetObject" : "HeadObject")
        req.resume()
        const o = objects.get(key)
        if (o === undefined) {
          if (req.method === "HEAD") {
            res.writeHead(404)
            return res.end()
          }
          return sendError(res, 404, "NoSuchKey", "The specified key does not exist.", resource)
        }
        res.writeHead(200, {
          "content-length": o.size,
          etag: `"${o.etag}"`,
          "last-modified": o.lastModified.toUTCString(),
          "content-type": o.contentType ?? "binary/octet-stream"
        })
        if (req.method === "HEAD") return res.end()
        if (faults.cutGetsAfter !== undefined && o.size > faults.cutGetsAfter) {
          const head = fs.createReadStream(o.file, { start: 0, end: Math.max(0, faults.cutGetsAfter - 1) })
          for await (const piece of head) res.write(piece)
          return res.destroy()
        }
        return pipeline(fs.createReadStream(o.file), res)
      }
      case "DELETE": {
        count("DeleteObject")
        req.resume()
        const o = objects.get(key)
        objects.delete(key)
        if (o !== undefined) fs.rmSync(o.file, { force: true })
        res.writeHead(204)
        return res.end()
      }
      default:
        req.resume()
        return sendError(res, 405, "MethodNotAllowed", `The specified method is not allowed against this resource: ${req.method}`, resource)
    }
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) sendError(res, 500, "InternalError", `stand-in failure: ${String(error)}`, req.url ?? "")
      else res.destroy()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    accessKeyId,
    secretAccessKey,
    region,
    dir,
    operations,
    faults,
    keys: (bucket) => [...(buckets.get(bucket)?.keys() ?? [])].sort(),
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      if (ownDir) fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}
