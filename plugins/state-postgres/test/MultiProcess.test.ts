// Two OS processes on one PostgreSQL: migrations applied once when both start at the same
// moment, each of 200 jobs claimed exactly once, and a killed replica's rows taken over by the
// survivor once their leases expire.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterEach, expect, it } from "vitest"
import { StateMigrations } from "@dstack-ts/core"
import { describeWith } from "../../../test/support/components.ts"
import { createTestDatabase, findPostgres, psqlLines, type TestDatabase } from "../../../test/support/postgres.ts"
import { type Child, spawnFixture } from "./support.ts"

const pg = await findPostgres()

const children: Array<Child> = []
const databases: Array<TestDatabase> = []
afterEach(async () => {
  for (const c of children.splice(0)) if (c.process.exitCode === null) c.process.kill("SIGKILL")
  for (const d of databases.splice(0)) await d.drop()
})

const fresh = async () => {
  const db = await createTestDatabase(pg.url)
  databases.push(db)
  return db
}

const start = (env: Record<string, string>) => {
  const c = spawnFixture("claimer", env)
  children.push(c)
  return c
}

const ids = (c: Child, verb: string) => c.lines.filter((l) => l.startsWith(`${verb} `)).map((l) => l.split(" ")[1])
const claimTimes = (c: Child) => new Map(c.lines.filter((l) => l.startsWith("claim ")).map((l) => [l.split(" ")[1], Number(l.split(" ")[2])]))

describeWith("postgresql", pg.available, pg.reason, () => {
  it("applies migrations once when two servers start at the same moment", async () => {
    const db = await fresh()
    const startAt = String(Date.now() + 3000)
    const a = start({ DATABASE_URL: db.url, MODE: "migrate", START_AT: startAt })
    const b = start({ DATABASE_URL: db.url, MODE: "migrate", START_AT: startAt })
    const [ea, eb] = await Promise.all([a.exited, b.exited])
    expect(ea.code, a.stderr.join("")).toBe(0)
    expect(eb.code, b.stderr.join("")).toBe(0)
    expect(a.lines).toContain("migrated")
    expect(b.lines).toContain("migrated")
    // Each version recorded once (the primary key would refuse a second), all of them there.
    expect(await psqlLines(db.url, "SELECT version FROM dstack_migrations ORDER BY version")).toEqual(
      StateMigrations.migrations.map((m) => String(m.version))
    )
  }, 90_000)

  it("shares 200 jobs between two processes, each claimed once, and takes over a killed one's", async () => {
    const db = await fresh()
    // Schema first (from this process), then 200 submitted jobs.
    const migrate = start({ DATABASE_URL: db.url, MODE: "migrate" })
    expect((await migrate.exited).code, migrate.stderr.join("")).toBe(0)
    await psqlLines(
      db.url,
      `INSERT INTO jobs (id, project, name, status, submitted_at, doc)
       SELECT 'job-' || lpad(g::text, 3, '0'), 'p', 'job-' || g, 'submitted', now() + g * interval '1 millisecond', '{}'::jsonb
       FROM generate_series(1, 200) g`
    )

    // Phase 1: both claim at once; A hangs holding its last batch after 60 claims.
    const startAt = String(Date.now() + 3000)
    const leaseMs = "3000"
    const go = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "dstack-claimers-")), "go")
    const a = start({ DATABASE_URL: db.url, OWNER: "a", START_AT: startAt, LEASE_MS: leaseMs, HANG_AFTER: "60", LIMIT: "5", GO_FILE: go })
    const b = start({ DATABASE_URL: db.url, OWNER: "b", START_AT: startAt, LEASE_MS: leaseMs, LIMIT: "5", GO_FILE: go })
    await Promise.all([a.waitFor((l) => l === "ready", 120_000), b.waitFor((l) => l === "ready", 120_000)])
    fs.writeFileSync(go, "")
    await a.waitFor((l) => l === "hanging", 60_000)
    a.process.kill("SIGKILL")
    const killedAt = Date.now()
    const ea = await a.exited
    expect(ea.signal).toBe("SIGKILL")

    const eb = await b.exited
    expect(eb.code, b.stderr.join("")).toBe(0)

    const aClaims = ids(a, "claim")
    const aDone = ids(a, "done")
    const bClaims = ids(b, "claim")
    const bDone = ids(b, "done")
    const orphaned = aClaims.filter((id) => !aDone.includes(id))
    expect(aClaims.length).toBeGreaterThanOrEqual(60)
    // Both really worked concurrently.
    expect(bClaims.length).toBeGreaterThan(0)
    expect(orphaned.length).toBeGreaterThan(0)
    // No claim was duplicated inside one process, and the only jobs claimed by both are the
    // ones A held when it died.
    expect(new Set(aClaims).size).toBe(aClaims.length)
    expect(new Set(bClaims).size).toBe(bClaims.length)
    expect(bClaims.filter((id) => aClaims.includes(id)).sort()).toEqual([...orphaned].sort())
    // Every job done exactly once, by whoever held it.
    const done = [...aDone, ...bDone]
    expect(done.length).toBe(200)
    expect(new Set(done).size).toBe(200)
    // The takeover waited for the leases: B claimed each orphan only once A's lease on it
    // had run out (same machine, same clock; 100 ms for the clocks of two processes).
    const aTimes = claimTimes(a)
    const bTimes = claimTimes(b)
    for (const id of orphaned) {
      expect(bTimes.get(id)! - aTimes.get(id)!).toBeGreaterThanOrEqual(Number(leaseMs) - 100)
      expect(bTimes.get(id)!).toBeGreaterThan(killedAt)
    }
    const rows = await psqlLines(
      db.url,
      `SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE lease_owner = 'b' AND id = ANY(ARRAY['${orphaned.join("','")}']))
       FROM jobs`
    )
    expect(rows).toEqual([`200|${orphaned.length}`])
  }, 120_000)
})
