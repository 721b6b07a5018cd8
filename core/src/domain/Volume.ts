/**
 * Volume mounts of a run (`volumes:`): a network volume by name (`my-vol:/data` or
 * `{name, path}`) or a directory of the instance (`/mnt/cache:/cache` or `{instance_path, path}`).
 */
import { ParseResult, Schema } from "effect"
import { isPlainObject, show } from "./Grammar.ts"

const AbsolutePath = Schema.String.pipe(
  Schema.filter((s) => s.startsWith("/") || `expected an absolute path (starting with /), got ${show(s)}`)
)
const HostPath = Schema.String.pipe(
  Schema.filter((s) => s.startsWith("/") || s.startsWith("~") || `expected an absolute path on the instance (/… or ~/…), got ${show(s)}`)
)
const VolumeName = Schema.String.pipe(
  Schema.filter((s) => /^[a-z0-9][a-z0-9-]*$/i.test(s) || `expected a volume name (letters, digits and -), got ${show(s)}`)
)

/** A named network volume mounted at `path`. */
export const VolumeMountPoint = Schema.Struct({
  name: VolumeName.annotations({ description: "The name of the volume." }),
  path: AbsolutePath.annotations({ description: "Where to mount it in the container." })
}).annotations({ identifier: "VolumeMountPoint" })
export type VolumeMountPoint = typeof VolumeMountPoint.Type

/** A directory of the instance mounted at `path`. */
export const InstanceMountPoint = Schema.Struct({
  instancePath: Schema.propertySignature(HostPath)
    .annotations({ description: "The directory on the instance." })
    .pipe(Schema.fromKey("instance_path")),
  path: AbsolutePath.annotations({ description: "Where to mount it in the container." })
}).annotations({ identifier: "InstanceMountPoint" })
export type InstanceMountPoint = typeof InstanceMountPoint.Type

export type VolumeMount = VolumeMountPoint | InstanceMountPoint

export const isInstanceMount = (m: VolumeMount): m is InstanceMountPoint => "instancePath" in m

const MOUNT_EXPECTED = "a mount such as my-volume:/data, /host/dir:/data, {name, path} or {instance_path, path}"

/** A mount: `name:/path`, `/host:/container`, `{name, path}` or `{instance_path, path}`. */
export const VolumeMount: Schema.Schema<VolumeMount, typeof VolumeMountPoint.Encoded | typeof InstanceMountPoint.Encoded | string> =
  Schema.transformOrFail(Schema.Unknown, Schema.Union(Schema.typeSchema(VolumeMountPoint), Schema.typeSchema(InstanceMountPoint)), {
    strict: true,
    decode: (u, options, ast) => {
      if (typeof u === "string") {
        const i = u.indexOf(":")
        if (i <= 0) return ParseResult.fail(new ParseResult.Type(ast, u, `expected ${MOUNT_EXPECTED}, got ${show(u)}`))
        const [source, path] = [u.slice(0, i), u.slice(i + 1)]
        return source.startsWith("/") || source.startsWith("~")
          ? ParseResult.decodeUnknown(InstanceMountPoint)({ instance_path: source, path }, options)
          : ParseResult.decodeUnknown(VolumeMountPoint)({ name: source, path }, options)
      }
      if (isPlainObject(u)) {
        return "instance_path" in u
          ? ParseResult.decodeUnknown(InstanceMountPoint)(u, options)
          : ParseResult.decodeUnknown(VolumeMountPoint)(u, options)
      }
      return ParseResult.fail(new ParseResult.Type(ast, u, `expected ${MOUNT_EXPECTED}, got ${show(u)}`))
    },
    encode: (m, options) =>
      isInstanceMount(m) ? ParseResult.encode(InstanceMountPoint)(m, options) : ParseResult.encode(VolumeMountPoint)(m, options)
  }).annotations({ identifier: "VolumeMount", description: `A volume mount: ${MOUNT_EXPECTED}.` }) as never

