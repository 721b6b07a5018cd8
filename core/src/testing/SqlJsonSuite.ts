/**
 * The JSON columns of the SQL state store on one driver: what a write stores is a JSON value
 * the database reads (an object, an array), never a JSON string holding the value's text; and
 * migration 9 turns what the statements before it stored on that driver into such values, which
 * the store then reads back as they were written. `oldEncoding` is what those statements stored
 * on the driver: `"string"` on the `postgres` driver (it encoded the JSON text once more),
 * `"object"` on PGlite.
 */
import { expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Scope } from "effect"
import type { StackAttachment } from "../ports/StateStore.ts"
import { migrate, migrations } from "../state/migrations.ts"
import type { SqlDriver } from "../state/SqlDriver.ts"
import * as SqlStateStore from "../state/SqlStateStore.ts"

/** Every jsonb column of the schema. */
const COLUMNS: ReadonlyArray<readonly [table: string, column: string]> = [
  ["runs", "doc"],
  ["jobs", "doc"],
  ["instances", "doc"],
  ["fleets", "doc"],
  ["backends", "config"],
  ["repos", "info"],
  ["repos", "creds"],
  ["stack_frames", "params"],
  ["stack_frames", "attachments"]
]

/** `table.column` → the jsonb types its non-null values have, e.g. `{ "runs.doc": ["object"] }`. */
const storedTypes = (driver: SqlDriver) =>
  driver
    .query(
      COLUMNS.map(
        ([t, c]) => `SELECT DISTINCT '${t}.${c}' AS col, jsonb_typeof(${c}) AS type FROM ${t} WHERE ${c} IS NOT NULL`
      ).join(" UNION ALL ") + " ORDER BY 1, 2"
    )
    .pipe(
      Effect.map((rows) => {
        const types: Record<string, Array<string>> = {}
        for (const r of rows) (types[String(r.col)] ??= []).push(String(r.type))
        return types
      })
    )

/** What every column holds once the values are JSON values. */
const asValues = Object.fromEntries(COLUMNS.map(([t, c]) => [`${t}.${c}`, [c === "attachments" ? "array" : "object"]]))

// Values with what an encoding once more would show: quotes, backslashes, non-ASCII, nesting.
const runDoc = (...submissions: ReadonlyArray<string>) => ({
  run: { status: "running", jobs: [{ job_spec: { job_name: "a \"quoted\" name\\" }, job_submissions: submissions.map((id) => ({ id })) }] },
  submitted_to_runner: []
})
const config = { max_instances: 3, note: "ü \"x\"" }
const info = { repo_type: "remote", repo_name: "r" }
const creds = { protocol: "https", oauth_token: "t\\n" }
const params = { lr: 0.1, name: "n" }
const attachments: ReadonlyArray<StackAttachment> = [
  { description: "weights", params: {}, contentType: "application/x-npy", application: "npy", metadata: { shape: [2] }, size: null, blobKey: null, digest: null }
]
const blob = { size: 4, blobKey: "k", digest: "sha256:x" }

/**
 * Registers the JSON column tests for one driver; `driver` opens it on an empty database
 * (closed with the scope).
 */
export const testSqlJsonColumns = <E>(
  name: string,
  oldEncoding: "string" | "object",
  driver: Effect.Effect<SqlDriver, E, Scope.Scope>
): void => {
  it.live(`${name}: the store writes JSON values the database reads, and reads them back`, () =>
    Effect.scoped(
      Effect.gen(function* () {
        const d = yield* driver
        const s = yield* SqlStateStore.make(d)
        yield* s.users.create({ username: "alice", globalRole: "admin", tokenHash: "h" })
        yield* s.projects.create({ name: "proj", owner: "alice" })
        yield* s.backends.upsert({ project: "proj", type: "local", config })
        yield* s.repos.upsert({ project: "proj", repoId: "r1", type: "remote", info, creds })
        yield* s.stacks.ensure("alice", "st", "private")
        const frame = yield* s.stacks.insertFrame({
          id: "f1", owner: "alice", name: "st", message: null, params, attachments, status: "pending",
          createdBy: "alice", createdAt: new Date(), committedAt: null
        })
        yield* s.stacks.setAttachmentBlob(frame.id, 0, blob)
        for (const kind of ["runs", "jobs", "instances", "fleets"] as const) {
          yield* s[kind].insert({ id: `${kind}-1`, project: "proj", name: kind, status: "running", doc: runDoc("sub-a") })
        }
        yield* s.runs.update("runs-1", { doc: runDoc("sub-a", "sub-b") })
        expect(yield* storedTypes(d)).toEqual(asValues)
        // SQL sees into the documents.
        expect(yield* d.query(`SELECT doc #>> '{run,status}' AS status, submission_ids FROM runs`)).toEqual([
          { status: "running", submission_ids: ["sub-a", "sub-b"] }
        ])
        expect((yield* s.runs.getBySubmissionId("sub-b")).doc).toEqual(runDoc("sub-a", "sub-b"))
        expect((yield* s.backends.get("proj", "local")).config).toEqual(config)
        expect(yield* s.repos.get("proj", "r1")).toMatchObject({ info, creds })
        expect((yield* s.stacks.getFrame("f1")).attachments).toEqual([{ ...attachments[0], ...blob }])
      })
    ), 60_000)

  it.live(`${name}: migration 9 makes what earlier versions stored JSON values, read back as written`, () =>
    Effect.scoped(
      Effect.gen(function* () {
        const d = yield* driver
        yield* migrate(d, migrations.filter((m) => m.version <= 8))
        // The statements of the versions before migration 9: JSON text as a jsonb-typed parameter.
        const oldWrites = (suffix: string) =>
          Effect.gen(function* () {
            for (const kind of ["runs", "jobs", "instances", "fleets"]) {
              yield* d.query(`INSERT INTO ${kind} (id, project, name, status, doc) VALUES ($1, 'proj', $1, 'running', $2::jsonb)`, [
                `${kind}-${suffix}`,
                JSON.stringify(runDoc(`sub-${suffix}`))
              ])
            }
          })
        yield* d.query(`INSERT INTO users (id, username, global_role, token_hash) VALUES ('u1', 'alice', 'admin', 'h')`)
        yield* d.query(`INSERT INTO projects (id, name, owner) VALUES ('p1', 'proj', 'alice')`)
        yield* d.query(`INSERT INTO backends (project, type, config) VALUES ('proj', 'local', $1::jsonb)`, [JSON.stringify(config)])
        yield* d.query(`INSERT INTO repos (project, repo_id, type, info, creds) VALUES ('proj', 'r1', 'remote', $1::jsonb, $2::jsonb)`, [
          JSON.stringify(info),
          JSON.stringify(creds)
        ])
        yield* d.query(`INSERT INTO repos (project, repo_id, type, info, creds) VALUES ('proj', 'r2', 'remote', $1::jsonb, $2::jsonb)`, [
          JSON.stringify(info),
          null
        ])
        yield* d.query(`INSERT INTO stacks (owner, name, access) VALUES ('alice', 'st', 'private')`)
        yield* d.query(
          `INSERT INTO stack_frames (id, owner, name, params, attachments, status, created_by)
           VALUES ('f1', 'alice', 'st', $1::jsonb, $2::jsonb, 'pending', 'alice')`,
          [JSON.stringify(params), JSON.stringify(attachments)]
        )
        yield* oldWrites("old")
        const before = yield* storedTypes(d)
        expect(before).toEqual(oldEncoding === "string" ? Object.fromEntries(COLUMNS.map(([t, c]) => [`${t}.${c}`, ["string"]])) : asValues)

        // The store migrates on start, and reads back what was written.
        const s = yield* SqlStateStore.make(d)
        expect(yield* storedTypes(d)).toEqual(asValues)
        expect(yield* d.query(`SELECT max(version) AS v FROM dstack_migrations`)).toEqual([{ v: 9 }])
        expect(yield* d.query(`SELECT doc #>> '{run,status}' AS status, submission_ids FROM runs`)).toEqual([
          { status: "running", submission_ids: ["sub-old"] }
        ])
        expect((yield* s.runs.getBySubmissionId("sub-old")).doc).toEqual(runDoc("sub-old"))
        for (const kind of ["jobs", "instances", "fleets"] as const) {
          expect((yield* s[kind].get(`${kind}-old`)).doc).toEqual(runDoc("sub-old"))
        }
        expect((yield* s.backends.get("proj", "local")).config).toEqual(config)
        expect(yield* s.repos.list("proj")).toEqual([
          { project: "proj", repoId: "r1", type: "remote", info, creds },
          { project: "proj", repoId: "r2", type: "remote", info, creds: null }
        ])
        expect(yield* s.stacks.getFrame("f1")).toMatchObject({ params, attachments })
        // Rows the migration rewrote keep their version (nothing changed for a reader).
        expect((yield* s.runs.get("runs-old")).version).toBe(1)

        // A write of an earlier version's statements, once migrated: refused where it would
        // store text again (the database checks), stored as before where it never did.
        const late = yield* Effect.either(oldWrites("late"))
        if (oldEncoding === "string") {
          expect(late._tag === "Left" && late.left.code).toBe("23514")
        } else {
          expect(late._tag).toBe("Right")
          expect((yield* s.runs.getBySubmissionId("sub-late")).id).toBe("runs-late")
        }
      })
    ), 60_000)
}
