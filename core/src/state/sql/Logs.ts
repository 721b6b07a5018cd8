/**
 * The `logs` table of the SQL state store: job logs and runner events in the database (the
 * PostgreSQL store's default; the embedded store keeps them in files instead). One row per
 * event; a poll is one ordered range of the `(project, job, diagnose, ts_ms, seq)` index, and
 * its `next_token` is the last row's `(ts_ms, seq)`.
 */
import { Buffer } from "node:buffer"
import { Effect } from "effect"
import { type LogEvent, type LogQuery, type Logs, type LogSource, MAX_LOG_LIMIT, type NewLogEvent } from "../../ports/StateStore.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, toStoreError, unreadableRow } from "./Errors.ts"
import { Params, whereSql } from "./Statements.ts"

// The `source` column: 1, 2, 3 in this order.
const LOG_SOURCES: ReadonlyArray<LogSource> = ["stdout", "stderr", "runner"]
const sourceCode = (s: LogSource): number => LOG_SOURCES.indexOf(s) + 1

// One statement per chunk of events; the messages travel as one base64 blob sliced by
// offsets on the server, about twice as fast as an array of per-event values.
const APPEND_CHUNK_EVENTS = 5000
const APPEND_CHUNK_BYTES = 8 * 1024 * 1024

export const make = ({ sql, noteWrites }: SqlContext): Logs => {
  const appendChunk = (chunk: ReadonlyArray<NewLogEvent>) => {
    const offsets: Array<number> = []
    const lengths: Array<number> = []
    let at = 1
    for (const e of chunk) {
      offsets.push(at)
      lengths.push(e.message.byteLength)
      at += e.message.byteLength
    }
    const blob = Buffer.concat(chunk.map((e) => e.message)).toString("base64")
    return sql(
      `WITH b AS (SELECT decode($6::text, 'base64') AS blob)
       INSERT INTO logs (project, job_submission_id, diagnose, ts_ms, source, message)
       SELECT u.p, u.j, u.s = 3, u.t, u.s, substring(b.blob FROM u.o FOR u.l)
       FROM b, unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[], $5::integer[], $7::integer[]) AS u(p, j, t, s, o, l)`,
      [
        chunk.map((e) => e.project),
        chunk.map((e) => e.jobSubmissionId),
        chunk.map((e) => e.timestamp.getTime()),
        chunk.map((e) => sourceCode(e.source)),
        offsets,
        blob,
        lengths
      ]
    ).pipe(Effect.mapError(toStoreError("logs.append")))
  }

  return {
    append: (events: ReadonlyArray<NewLogEvent>) =>
      Effect.gen(function* () {
        let start = 0
        while (start < events.length) {
          let end = start
          let bytes = 0
          while (end < events.length && end - start < APPEND_CHUNK_EVENTS && (end === start || bytes + events[end].message.byteLength <= APPEND_CHUNK_BYTES)) {
            bytes += events[end].message.byteLength
            end++
          }
          yield* appendChunk(events.slice(start, end))
          start = end
        }
        yield* noteWrites("logs", events.length)
      }),
    poll: (q: LogQuery) =>
      Effect.gen(function* () {
        const limit = q.limit ?? MAX_LOG_LIMIT
        if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LOG_LIMIT) {
          return yield* failWith("logs.poll", "Invalid", `limit must be an integer in 1..${MAX_LOG_LIMIT}, got ${limit}`)
        }
        const p = new Params()
        const where = [
          `project = ${p.add(q.project)}`,
          `job_submission_id = ${p.add(q.jobSubmissionId)}`,
          `diagnose = ${q.diagnose === true ? "true" : "false"}`
        ]
        if (q.startTime !== undefined) where.push(`ts_ms >= ${p.add(q.startTime.getTime())}::bigint`)
        if (q.endTime !== undefined) where.push(`ts_ms < ${p.add(q.endTime.getTime())}::bigint`)
        const op = q.descending === true ? "<" : ">"
        if (q.nextToken !== undefined && q.nextToken !== "") {
          const match = /^(\d+)_(\d+)$/.exec(q.nextToken)
          if (match === null) return yield* failWith("logs.poll", "Invalid", `malformed next_token '${q.nextToken}'`)
          where.push(`(ts_ms, seq) ${op} (${p.add(match[1])}::bigint, ${p.add(match[2])}::bigint)`)
        }
        const dir = q.descending === true ? "DESC" : "ASC"
        const rows = yield* sql(
          `SELECT ts_ms::float8 AS ts, seq::text AS seq_text, source, message FROM logs ${whereSql(where)}
           ORDER BY ts_ms ${dir}, seq ${dir} LIMIT ${p.add(limit + 1)}`,
          p.values
        ).pipe(Effect.mapError(toStoreError("logs.poll")))
        const page = rows.slice(0, limit)
        const events: Array<LogEvent> = []
        for (const r of page) {
          const source = LOG_SOURCES[Number(r.source) - 1]
          if (source === undefined) {
            return yield* Effect.fail(unreadableRow("logs.poll", "logs", String(r.seq_text), `unknown source ${String(r.source)}`))
          }
          events.push({ timestamp: new Date(Number(r.ts)), source, message: r.message as Uint8Array })
        }
        const last = page[page.length - 1]
        if (last === undefined) return { events }
        const token = `${Number(last.ts)}_${String(last.seq_text)}`
        return rows.length > limit ? { events, nextToken: token, cursor: token } : { events, cursor: token }
      }),
    delete: (project: string, ids: ReadonlyArray<string>) =>
      sql(`DELETE FROM logs WHERE project = $1 AND job_submission_id = ANY($2::text[])`, [project, [...ids]]).pipe(
        Effect.mapError(toStoreError("logs.delete")),
        Effect.asVoid
      )
  }
}
