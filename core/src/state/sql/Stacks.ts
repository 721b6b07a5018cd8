/**
 * The `stacks`, `stack_frames` and `stack_settings` tables of the SQL state store: stacks
 * (owner, name, access, head), their frames with attachments as JSON, and each user's default
 * access for new stacks.
 */
import { Effect } from "effect"
import type { StackAccess, StackAttachment, StackFrameRecord, StackRecord, Stacks } from "../../ports/StateStore.ts"
import type { Row } from "../SqlDriver.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, toStoreError } from "./Errors.ts"
import { json, toDate } from "./Statements.ts"

const stackFromRow = (r: Row): StackRecord => ({
  owner: String(r.owner),
  name: String(r.name),
  access: r.access as StackAccess,
  head: (r.head as string | null) ?? null,
  createdAt: toDate(r.created_at),
  updatedAt: toDate(r.updated_at)
})

const frameFromRow = (r: Row): StackFrameRecord => ({
  id: String(r.id),
  owner: String(r.owner),
  name: String(r.name),
  message: (r.message as string | null) ?? null,
  params: (r.params ?? {}) as Record<string, unknown>,
  attachments: (r.attachments ?? []) as ReadonlyArray<StackAttachment>,
  status: r.status as StackFrameRecord["status"],
  createdBy: String(r.created_by),
  createdAt: toDate(r.created_at),
  committedAt: r.committed_at === null || r.committed_at === undefined ? null : toDate(r.committed_at)
})

const one = <A>(method: string, what: string, f: (r: Row) => A) => (rows: ReadonlyArray<Row>) =>
  rows.length === 0 ? failWith(method, "NotFound", what) : Effect.succeed(f(rows[0]))

export const make = ({ sql, withTransaction }: SqlContext): Stacks => {
  const get = (owner: string, name: string) =>
    sql(`SELECT * FROM stacks WHERE owner = $1 AND name = $2`, [owner, name]).pipe(
      Effect.mapError(toStoreError("stacks.get")),
      Effect.flatMap(one("stacks.get", `no stack '${owner}/${name}'`, stackFromRow))
    )
  const getFrame = (id: string) =>
    sql(`SELECT * FROM stack_frames WHERE id = $1`, [id]).pipe(
      Effect.mapError(toStoreError("stacks.getFrame")),
      Effect.flatMap(one("stacks.getFrame", `no frame '${id}'`, frameFromRow))
    )
  return {
    ensure: (owner, name, access) =>
      sql(
        `INSERT INTO stacks (owner, name, access) VALUES ($1, $2, $3) ON CONFLICT (owner, name) DO NOTHING`,
        [owner, name, access]
      ).pipe(Effect.mapError(toStoreError("stacks.ensure")), Effect.zipRight(get(owner, name))),
    get,
    list: (owner, includePublic) =>
      (owner === undefined
        ? sql(`SELECT * FROM stacks ORDER BY owner, name`)
        : sql(
          `SELECT * FROM stacks WHERE owner = $1 ${includePublic ? "OR access = 'public'" : ""} ORDER BY owner, name`,
          [owner]
        )).pipe(Effect.mapError(toStoreError("stacks.list")), Effect.map((rows) => rows.map(stackFromRow))),
    setAccess: (owner, name, access) =>
      sql(`UPDATE stacks SET access = $3, updated_at = clock_timestamp() WHERE owner = $1 AND name = $2 RETURNING *`, [
        owner,
        name,
        access
      ]).pipe(
        Effect.mapError(toStoreError("stacks.setAccess")),
        Effect.flatMap(one("stacks.setAccess", `no stack '${owner}/${name}'`, stackFromRow))
      ),
    delete: (owner, name) =>
      sql(`DELETE FROM stacks WHERE owner = $1 AND name = $2`, [owner, name]).pipe(
        Effect.mapError(toStoreError("stacks.delete")),
        Effect.asVoid
      ),
    insertFrame: (f) =>
      sql(
        `INSERT INTO stack_frames (id, owner, name, message, params, attachments, status, created_by)
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, 'pending', $7) RETURNING *`,
        [f.id, f.owner, f.name, f.message, json(f.params), json(f.attachments), f.createdBy]
      ).pipe(
        Effect.mapError(toStoreError("stacks.insertFrame")),
        Effect.flatMap(one("stacks.insertFrame", `no stack '${f.owner}/${f.name}'`, frameFromRow))
      ),
    getFrame,
    listFrames: (owner, name, limit = 100) =>
      sql(
        `SELECT * FROM stack_frames WHERE owner = $1 AND name = $2 AND status = 'committed'
         ORDER BY committed_at DESC, id DESC LIMIT $3`,
        [owner, name, limit]
      ).pipe(Effect.mapError(toStoreError("stacks.listFrames")), Effect.map((rows) => rows.map(frameFromRow))),
    setAttachmentBlob: (id, index, blob) =>
      withTransaction(
        Effect.gen(function*() {
          const rows = yield* sql(`SELECT * FROM stack_frames WHERE id = $1 FOR UPDATE`, [id]).pipe(
            Effect.mapError(toStoreError("stacks.setAttachmentBlob"))
          )
          const frame = yield* one("stacks.setAttachmentBlob", `no frame '${id}'`, frameFromRow)(rows)
          if (frame.status !== "pending") {
            return yield* failWith("stacks.setAttachmentBlob", "Conflict", `frame '${id}' is already committed`)
          }
          if (!Number.isInteger(index) || index < 0 || index >= frame.attachments.length) {
            return yield* failWith(
              "stacks.setAttachmentBlob",
              "NotFound",
              `frame '${id}' has ${frame.attachments.length} attachment(s); there is no attachment ${index}`
            )
          }
          const attachments = frame.attachments.map((a, i) => (i === index ? { ...a, ...blob } : a))
          const updated = yield* sql(`UPDATE stack_frames SET attachments = $2::text::jsonb WHERE id = $1 RETURNING *`, [
            id,
            json(attachments)
          ]).pipe(Effect.mapError(toStoreError("stacks.setAttachmentBlob")))
          return frameFromRow(updated[0])
        })
      ),
    commitFrame: (id, message) =>
      withTransaction(
        Effect.gen(function*() {
          const rows = yield* sql(`SELECT * FROM stack_frames WHERE id = $1 FOR UPDATE`, [id]).pipe(
            Effect.mapError(toStoreError("stacks.commitFrame"))
          )
          const frame = yield* one("stacks.commitFrame", `no frame '${id}'`, frameFromRow)(rows)
          if (frame.status === "committed") return frame
          const missing = frame.attachments.flatMap((a, i) => (a.blobKey === null ? [i] : []))
          if (missing.length > 0) {
            return yield* failWith(
              "stacks.commitFrame",
              "Invalid",
              `frame '${id}' is not complete: attachment(s) ${missing.join(", ")} not uploaded`
            )
          }
          const updated = yield* sql(
            `UPDATE stack_frames SET status = 'committed', committed_at = clock_timestamp(),
               message = COALESCE($2, message) WHERE id = $1 RETURNING *`,
            [id, message]
          ).pipe(Effect.mapError(toStoreError("stacks.commitFrame")))
          yield* sql(`UPDATE stacks SET head = $3, updated_at = clock_timestamp() WHERE owner = $1 AND name = $2`, [
            frame.owner,
            frame.name,
            id
          ]).pipe(Effect.mapError(toStoreError("stacks.commitFrame")))
          return frameFromRow(updated[0])
        })
      ),
    listPendingFrames: (olderThan, limit) =>
      sql(
        `SELECT * FROM stack_frames WHERE status = 'pending' AND created_at < $1 ORDER BY created_at, id LIMIT $2`,
        [olderThan.toISOString(), limit]
      ).pipe(Effect.mapError(toStoreError("stacks.listPendingFrames")), Effect.map((rows) => rows.map(frameFromRow))),
    deletePendingFrame: (id) =>
      sql(`DELETE FROM stack_frames WHERE id = $1 AND status = 'pending' RETURNING id`, [id]).pipe(
        Effect.mapError(toStoreError("stacks.deletePendingFrame")),
        Effect.map((rows) => rows.length > 0)
      ),
    defaultAccess: (username) =>
      sql(`SELECT default_access FROM stack_settings WHERE username = $1`, [username]).pipe(
        Effect.mapError(toStoreError("stacks.defaultAccess")),
        Effect.map((rows) => (rows.length === 0 ? "private" : (rows[0].default_access as StackAccess)))
      ),
    setDefaultAccess: (username, access) =>
      sql(
        `INSERT INTO stack_settings (username, default_access) VALUES ($1, $2)
         ON CONFLICT (username) DO UPDATE SET default_access = EXCLUDED.default_access`,
        [username, access]
      ).pipe(Effect.mapError(toStoreError("stacks.setDefaultAccess")), Effect.asVoid)
  }
}
