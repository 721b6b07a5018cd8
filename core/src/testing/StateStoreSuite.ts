/**
 * The conformance suite every StateStore implementation runs: users and tokens, projects and
 * members, backends, repos and code, documents with keyset pagination, claim-with-lease,
 * transactions, the change feed, logs and the first-start bootstrap. Names carry a random
 * suffix, so the suite also runs against a shared database.
 */
import { expect, layer } from "@effect/vitest"
import { Chunk, Duration, Effect, Either, Fiber, Layer, Queue, Stream } from "effect"
import * as StateStore from "../ports/StateStore.ts"

const expectFailure = <A, R>(
  effect: Effect.Effect<A, StateStore.StateStoreError, R>,
  reason: StateStore.StateStoreErrorReason
) =>
  Effect.map(Effect.either(effect), (result) => {
    expect(Either.isLeft(result), `expected a ${reason} failure, got ${JSON.stringify(Either.getOrUndefined(result))}`).toBe(true)
    const error = (result as Either.Left<StateStore.StateStoreError, A>).left
    expect(error._tag).toBe("StateStoreError")
    expect(error.reason, error.message).toBe(reason)
    return error
  })

let counter = 0
const unique = (prefix: string): string =>
  `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`

const store = StateStore.StateStore

/** Waits for the next change that matches, up to a timeout; fails the test otherwise. */
const nextChange = (
  queue: Queue.Dequeue<StateStore.Change>,
  matches: (c: StateStore.Change) => boolean,
  timeout: Duration.DurationInput = "5 seconds"
) =>
  Effect.gen(function* () {
    while (true) {
      const c = yield* Queue.take(queue)
      if (matches(c)) return c
    }
  }).pipe(
    Effect.timeoutFail({ duration: timeout, onTimeout: () => new Error("no matching change arrived in time") }),
    Effect.orDie
  )

/**
 * Registers the StateStore conformance tests for one implementation. The layer is built once
 * for the whole suite.
 *
 * @example
 * testStateStore("embedded (memory)", EmbeddedStateStore.layerMemory())
 */
export const testStateStore = <E>(name: string, storeLayer: Layer.Layer<StateStore.StateStore, E>): void => {
  // Live services: leases expire by the database's real clock.
  layer(storeLayer, { timeout: "120 seconds", excludeTestServices: true })(`StateStore conformance: ${name}`, (it) => {
    // -------------------------------------------------------------------------------------------
    // Users and tokens

    it.effect("creates, reads, updates and deletes users", () =>
      Effect.gen(function* () {
        const s = yield* store
        const username = unique("u")
        const hash = yield* StateStore.hashToken(unique("t"))
        const created = yield* s.users.create({ username, globalRole: "user", tokenHash: hash, email: "a@b.c" })
        expect(created.username).toBe(username)
        expect(created.globalRole).toBe("user")
        expect(created.email).toBe("a@b.c")
        expect(created.active).toBe(true)
        expect(created.createdAt).toBeInstanceOf(Date)
        expect((yield* s.users.get(username)).id).toBe(created.id)
        expect((yield* s.users.getByTokenHash(hash)).username).toBe(username)
        expect((yield* s.users.list()).map((u) => u.username)).toContain(username)

        const updated = yield* s.users.update(username, { globalRole: "admin", email: null, active: false })
        expect(updated.globalRole).toBe("admin")
        expect(updated.email).toBeNull()
        expect(updated.active).toBe(false)

        yield* expectFailure(s.users.create({ username, globalRole: "user", tokenHash: "other" }), "AlreadyExists")
        yield* expectFailure(s.users.create({ username: unique("u"), globalRole: "user", tokenHash: hash }), "AlreadyExists")
        yield* expectFailure(s.users.create({ username: "bad name!", globalRole: "user", tokenHash: "x1" }), "Invalid")
        yield* expectFailure(
          s.users.create({ username: unique("u"), globalRole: "root" as never, tokenHash: unique("x") }),
          "Invalid"
        )
        yield* expectFailure(s.users.update(unique("missing"), { active: true }), "NotFound")
        yield* expectFailure(s.users.setTokenHash(unique("missing"), "h"), "NotFound")

        yield* s.users.delete([username, unique("never-existed")])
        yield* expectFailure(s.users.get(username), "NotFound")
        yield* expectFailure(s.users.getByTokenHash(hash), "NotFound")
      }))

    it.effect("keeps each user's SSH key pair; onlyIfMissing keeps the first one stored", () =>
      Effect.gen(function* () {
        const s = yield* store
        const username = unique("key")
        yield* s.users.create({ username, globalRole: "user", tokenHash: yield* StateStore.hashToken(unique("t")) })
        expect(yield* s.users.getSshKey(username)).toBeNull()
        const first = { publicKey: "ssh-rsa AAAA1 u\n", privateKey: "PEM1" }
        const second = { publicKey: "ssh-rsa AAAA2 u\n", privateKey: "PEM2" }
        expect(yield* s.users.setSshKey(username, first, { onlyIfMissing: true })).toEqual(first)
        // A second first-key loses to the stored one; a plain set replaces it.
        expect(yield* s.users.setSshKey(username, second, { onlyIfMissing: true })).toEqual(first)
        expect(yield* s.users.getSshKey(username)).toEqual(first)
        expect(yield* s.users.setSshKey(username, second)).toEqual(second)
        expect(yield* s.users.getSshKey(username)).toEqual(second)
        yield* expectFailure(s.users.getSshKey(unique("missing")), "NotFound")
        yield* expectFailure(s.users.setSshKey(unique("missing"), first), "NotFound")
        yield* expectFailure(s.users.setSshKey(unique("missing"), first, { onlyIfMissing: true }), "NotFound")
      }))

    it.effect("issues tokens that authenticate, stores only their hash, and refreshes them", () =>
      Effect.gen(function* () {
        const s = yield* store
        const username = unique("tok")
        const { token, user } = yield* StateStore.createUserWithToken({ username, globalRole: "user" })
        expect(token).toMatch(/^[0-9a-f-]{36}$/)
        expect((yield* StateStore.authenticate(token)).id).toBe(user.id)
        // The stored value is the sha256, not the token.
        yield* expectFailure(s.users.getByTokenHash(token), "NotFound")
        expect((yield* s.users.getByTokenHash(yield* StateStore.hashToken(token))).id).toBe(user.id)

        const fresh = yield* StateStore.refreshToken(username)
        expect(fresh).not.toBe(token)
        yield* expectFailure(StateStore.authenticate(token), "NotFound")
        expect((yield* StateStore.authenticate(fresh)).username).toBe(username)

        yield* s.users.update(username, { active: false })
        yield* expectFailure(StateStore.authenticate(fresh), "NotFound")
        yield* expectFailure(StateStore.authenticate("not-a-token"), "NotFound")
      }))

    // -------------------------------------------------------------------------------------------
    // Projects

    const newUser = (role: "admin" | "user" = "user") =>
      StateStore.createUserWithToken({ username: unique("m"), globalRole: role }).pipe(Effect.map((r) => r.user))

    it.effect("creates projects with the owner as admin member and manages members", () =>
      Effect.gen(function* () {
        const s = yield* store
        const owner = yield* newUser()
        const alice = yield* newUser()
        const bob = yield* newUser()
        const name = unique("p")
        const project = yield* s.projects.create({ name, owner: owner.username })
        expect(project.projectName).toBe(name)
        expect(project.owner.username).toBe(owner.username)
        expect(project.isPublic).toBe(false)
        expect(project.members.map((m) => [m.user.username, m.projectRole])).toEqual([[owner.username, "admin"]])

        yield* expectFailure(s.projects.create({ name, owner: owner.username }), "AlreadyExists")
        yield* expectFailure(s.projects.create({ name: unique("p"), owner: unique("nobody") }), "NotFound")
        yield* expectFailure(s.projects.create({ name: "no/slashes", owner: owner.username }), "Invalid")

        const added = yield* s.projects.addMembers(name, [
          { username: alice.username, projectRole: "manager" },
          { username: bob.username, projectRole: "user" }
        ])
        expect(added.members.map((m) => [m.user.username, m.projectRole])).toEqual([
          [owner.username, "admin"],
          [alice.username, "manager"],
          [bob.username, "user"]
        ])
        // Adding an existing member changes the role.
        const promoted = yield* s.projects.addMembers(name, [{ username: bob.username, projectRole: "admin" }])
        expect(promoted.members.find((m) => m.user.username === bob.username)?.projectRole).toBe("admin")

        yield* expectFailure(s.projects.addMembers(name, [{ username: unique("ghost"), projectRole: "user" }]), "NotFound")
        yield* expectFailure(s.projects.addMembers(unique("nope"), [{ username: bob.username, projectRole: "user" }]), "NotFound")
        yield* expectFailure(s.projects.addMembers(name, [{ username: bob.username, projectRole: "owner" as never }]), "Invalid")

        const removed = yield* s.projects.removeMembers(name, [alice.username])
        expect(removed.members.map((m) => m.user.username)).toEqual([owner.username, bob.username])

        const set = yield* s.projects.setMembers(name, [{ username: alice.username, projectRole: "user" }])
        expect(set.members.map((m) => [m.user.username, m.projectRole])).toEqual([[alice.username, "user"]])
        // A failed replacement changes nothing.
        yield* expectFailure(
          s.projects.setMembers(name, [
            { username: bob.username, projectRole: "user" },
            { username: unique("ghost"), projectRole: "user" }
          ]),
          "NotFound"
        )
        expect((yield* s.projects.get(name)).members.map((m) => m.user.username)).toEqual([alice.username])

        expect((yield* s.projects.listForUser(alice.username)).map((p) => p.projectName)).toContain(name)
        expect((yield* s.projects.listForUser(bob.username)).map((p) => p.projectName)).not.toContain(name)
        expect((yield* s.projects.list()).map((p) => p.projectName)).toContain(name)

        // The owner cannot be deleted while the project exists; a member can.
        yield* expectFailure(s.users.delete([owner.username]), "Conflict")
        yield* s.users.delete([alice.username])
        expect((yield* s.projects.get(name)).members).toEqual([])

        yield* s.projects.delete([name])
        yield* expectFailure(s.projects.get(name), "NotFound")
        yield* s.users.delete([owner.username])
      }))

    it.effect("lists public projects for everyone", () =>
      Effect.gen(function* () {
        const s = yield* store
        const owner = yield* newUser()
        const stranger = yield* newUser()
        const name = unique("pub")
        yield* s.projects.create({ name, owner: owner.username, isPublic: true })
        expect((yield* s.projects.listForUser(stranger.username)).map((p) => p.projectName)).toContain(name)
      }))

    // -------------------------------------------------------------------------------------------
    // Backends, repos, code

    it.effect("keeps a project's secrets by name: upsert, get, list newest first, all-or-nothing delete, gone with the project", () =>
      Effect.gen(function* () {
        const s = yield* store
        const owner = yield* newUser()
        const project = unique("sec")
        const other = unique("sec")
        yield* s.projects.create({ name: project, owner: owner.username })
        yield* s.projects.create({ name: other, owner: owner.username })

        const first = yield* s.secrets.upsert({ id: crypto.randomUUID(), project, name: "HF_TOKEN", value: "v1:cipher-a" })
        expect(first).toMatchObject({ project, name: "HF_TOKEN", value: "v1:cipher-a" })
        expect(first.createdAt).toBeInstanceOf(Date)
        // Replacing keeps the row (its id and creation time), with the new value.
        const replaced = yield* s.secrets.upsert({ id: crypto.randomUUID(), project, name: "HF_TOKEN", value: "v1:cipher-b" })
        expect(replaced.id).toBe(first.id)
        expect(replaced.value).toBe("v1:cipher-b")
        expect(replaced.createdAt.getTime()).toBe(first.createdAt.getTime())
        yield* s.secrets.upsert({ id: crypto.randomUUID(), project, name: "WANDB", value: "v1:cipher-c" })
        yield* s.secrets.upsert({ id: crypto.randomUUID(), project: other, name: "HF_TOKEN", value: "v1:other" })
        expect((yield* s.secrets.get(project, "HF_TOKEN")).value).toBe("v1:cipher-b")
        expect((yield* s.secrets.get(other, "HF_TOKEN")).value).toBe("v1:other")
        expect((yield* s.secrets.list(project)).map((x) => x.name)).toEqual(["WANDB", "HF_TOKEN"])
        yield* expectFailure(s.secrets.get(project, "NOPE"), "NotFound")
        yield* expectFailure(s.secrets.upsert({ id: crypto.randomUUID(), project: unique("none"), name: "X", value: "v" }), "NotFound")

        // A delete naming a missing secret deletes nothing and names it.
        const refused = yield* Effect.flip(s.secrets.delete(project, ["WANDB", "NOPE"]))
        expect(refused.reason).toBe("NotFound")
        expect(refused.message).toContain("NOPE")
        expect((yield* s.secrets.list(project)).length).toBe(2)
        yield* s.secrets.delete(project, ["WANDB", "HF_TOKEN"])
        expect(yield* s.secrets.list(project)).toEqual([])
        expect((yield* s.secrets.list(other)).length).toBe(1)
        yield* s.projects.delete([other])
        expect(yield* s.secrets.list(other)).toEqual([])
      }))

    it.effect("keeps backend configs, repos and the code index per project", () =>
      Effect.gen(function* () {
        const s = yield* store
        const owner = yield* newUser()
        const project = unique("bk")
        yield* s.projects.create({ name: project, owner: owner.username })

        yield* s.backends.upsert({ project, type: "aws", config: { regions: ["us-east-1"] } })
        yield* s.backends.upsert({ project, type: "aws", config: { regions: ["eu-west-1"], nested: { a: [1, 2] } } })
        yield* s.backends.upsert({ project, type: "local", config: {} })
        expect((yield* s.backends.get(project, "aws")).config).toEqual({ regions: ["eu-west-1"], nested: { a: [1, 2] } })
        expect((yield* s.backends.list(project)).map((b) => b.type)).toEqual(["aws", "local"])
        yield* s.backends.delete(project, ["aws"])
        yield* expectFailure(s.backends.get(project, "aws"), "NotFound")
        yield* expectFailure(s.backends.upsert({ project: unique("none"), type: "aws", config: {} }), "NotFound")

        const repoId = unique("repo")
        yield* s.repos.upsert({ project, repoId, type: "remote", info: { repo_url: "https://x/y.git" }, creds: { token: "s" } })
        const repo = yield* s.repos.get(project, repoId)
        expect(repo).toEqual({ project, repoId, type: "remote", info: { repo_url: "https://x/y.git" }, creds: { token: "s" } })
        yield* s.repos.upsert({ project, repoId, type: "remote", info: { repo_url: "https://x/z.git" }, creds: null })
        expect((yield* s.repos.get(project, repoId)).creds).toBeNull()
        expect((yield* s.repos.list(project)).map((r) => r.repoId)).toEqual([repoId])
        yield* expectFailure(s.repos.get(project, unique("nope")), "NotFound")

        yield* s.codes.put({ project, repoId, hash: "abc", blobKey: "codes/abc", size: 5_000_000_000 })
        // Idempotent: the first record stays.
        yield* s.codes.put({ project, repoId, hash: "abc", blobKey: "codes/other", size: 1 })
        expect(yield* s.codes.get(project, repoId, "abc")).toEqual({
          project,
          repoId,
          hash: "abc",
          blobKey: "codes/abc",
          size: 5_000_000_000
        })
        yield* expectFailure(s.codes.get(project, repoId, "def"), "NotFound")
        yield* expectFailure(s.codes.put({ project, repoId: unique("norepo"), hash: "x", blobKey: "k", size: 1 }), "NotFound")

        yield* s.repos.delete(project, [repoId])
        yield* expectFailure(s.codes.get(project, repoId, "abc"), "NotFound")
        yield* s.projects.delete([project])
        expect(yield* s.backends.list(project)).toEqual([])
      }))

    // -------------------------------------------------------------------------------------------
    // Documents

    for (const kind of StateStore.documentKinds) {
      it.effect(`stores ${kind} documents with indexed columns and versions`, () =>
        Effect.gen(function* () {
          const docs = StateStore.documents(yield* store, kind)
          const project = unique("proj")
          const id = unique(kind)
          const doc = { spec: { commands: ["echo hi"], env: { A: "1" } }, n: 1.5, nil: null }
          const at = new Date("2026-01-02T03:04:05.678Z")
          const row = yield* docs.insert({ id, project, name: "alpha", status: "submitted", parentId: "p1", submittedAt: at, doc })
          expect(row).toMatchObject({ kind, id, project, name: "alpha", status: "submitted", parentId: "p1", deleted: false, version: 1 })
          expect(row.submittedAt.toISOString()).toBe(at.toISOString())
          expect(row.lease).toBeNull()
          expect(row.doc).toEqual(doc)
          expect((yield* docs.get(id)).doc).toEqual(doc)
          expect((yield* docs.getByName(project, "alpha")).id).toBe(id)

          yield* expectFailure(docs.insert({ id, project, name: "other", status: "submitted", doc: {} }), "AlreadyExists")
          yield* expectFailure(docs.get(unique("missing")), "NotFound")
          yield* expectFailure(docs.getByName(project, "missing"), "NotFound")

          const updated = yield* docs.update(id, { status: "running", doc: { ...doc, n: 2 } })
          expect(updated.status).toBe("running")
          expect(updated.version).toBe(2)
          expect(updated.doc).toEqual({ ...doc, n: 2 })
          expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(row.updatedAt.getTime())
          // Unchanged columns stay.
          expect(updated.name).toBe("alpha")
          expect(updated.parentId).toBe("p1")

          const err = yield* expectFailure(docs.update(id, { status: "done" }, { expectedVersion: 1 }), "Conflict")
          expect(err.isRetryable).toBe(true)
          expect((yield* docs.update(id, { status: "done" }, { expectedVersion: 2 })).version).toBe(3)
          yield* expectFailure(docs.update(unique("missing"), { status: "x" }), "NotFound")

          yield* docs.remove([id])
          yield* expectFailure(docs.get(id), "NotFound")
        }))
    }

    it.effect("keeps run and fleet names unique among live rows only", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("proj")
        for (const docs of [s.runs, s.fleets]) {
          const first = yield* docs.insert({ id: unique("a"), project, name: "same", status: "running", doc: {} })
          yield* expectFailure(docs.insert({ id: unique("b"), project, name: "same", status: "submitted", doc: {} }), "AlreadyExists")
          // Another project may use the name.
          yield* docs.insert({ id: unique("c"), project: unique("other"), name: "same", status: "submitted", doc: {} })
          yield* docs.update(first.id, { deleted: true })
          yield* expectFailure(docs.getByName(project, "same"), "NotFound")
          const second = yield* docs.insert({ id: unique("d"), project, name: "same", status: "submitted", doc: {} })
          expect((yield* docs.getByName(project, "same")).id).toBe(second.id)
          // Deleted rows are listed only on request.
          expect((yield* docs.list({ projects: [project] })).map((d) => d.id)).toEqual([second.id])
          expect((yield* docs.list({ projects: [project], includeDeleted: true })).length).toBe(2)
        }
        // Jobs of a run share names freely.
        const runId = unique("run")
        yield* s.jobs.insert({ id: unique("j"), project, name: "job-0", status: "submitted", parentId: runId, doc: {} })
        yield* s.jobs.insert({ id: unique("j"), project, name: "job-0", status: "submitted", parentId: runId, doc: {} })
        expect((yield* s.jobs.list({ parentIds: [runId] })).length).toBe(2)
      }))

    it.effect("finds a live run by any of its job submissions' ids, as its document changes", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("proj")
        const [a, b, c, d] = [unique("sub"), unique("sub"), unique("sub"), unique("sub")]
        // The shape of a stored run record (engine/RunRecord.ts): submissions under run.jobs[*].
        const record = (...jobs: ReadonlyArray<ReadonlyArray<string>>) => ({
          run: { status: "running", jobs: jobs.map((ids) => ({ job_spec: { job_name: "x" }, job_submissions: ids.map((id) => ({ id, status: "running" })) })) },
          submitted_to_runner: []
        })
        const run = yield* s.runs.insert({ id: unique("run"), project, name: unique("r"), status: "running", doc: record([a], [b]) })
        yield* s.runs.insert({ id: unique("run"), project, name: unique("r"), status: "running", doc: record([c]) })
        yield* s.runs.insert({ id: unique("run"), project, name: unique("r"), status: "submitted", doc: { run: { jobs: [] } } })
        const found = yield* s.runs.getBySubmissionId(b)
        expect(found.id).toBe(run.id)
        expect(found.doc).toEqual(record([a], [b]))
        expect((yield* s.runs.getBySubmissionId(a)).id).toBe(run.id)
        yield* expectFailure(s.runs.getBySubmissionId(d), "NotFound")
        // A retry adds a submission; the earlier ones still name the run.
        yield* s.runs.update(run.id, { doc: record([a, d], [b]) })
        expect((yield* s.runs.getBySubmissionId(d)).id).toBe(run.id)
        expect((yield* s.runs.getBySubmissionId(a)).id).toBe(run.id)
        // Nothing but whole ids matches: not a prefix, not another field's value.
        yield* expectFailure(s.runs.getBySubmissionId(a.slice(0, -1)), "NotFound")
        yield* expectFailure(s.runs.getBySubmissionId("running"), "NotFound")
        // A deleted run is found no more.
        yield* s.runs.update(run.id, { deleted: true })
        yield* expectFailure(s.runs.getBySubmissionId(b), "NotFound")
        expect((yield* s.runs.getBySubmissionId(c)).project).toBe(project)
      }))

    it.effect("lists with filters and keyset pagination in both directions", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("page")
        const base = Date.parse("2026-03-01T00:00:00Z")
        const ids: Array<string> = []
        for (let i = 0; i < 25; i++) {
          // Pairs share a submission time, so the id breaks ties.
          const id = `r-${String(i).padStart(2, "0")}-${unique("x")}`
          ids.push(id)
          yield* s.runs.insert({
            id,
            project,
            name: `run-${i}`,
            status: i % 3 === 0 ? "running" : "done",
            userName: i % 2 === 0 ? "alice" : "bob",
            repoId: "repo-1",
            submittedAt: new Date(base + Math.floor(i / 2) * 1000),
            doc: { i }
          })
        }
        const byKey = [...ids].sort((a, b) => {
          const ia = ids.indexOf(a)
          const ib = ids.indexOf(b)
          return Math.floor(ia / 2) - Math.floor(ib / 2) || (a < b ? -1 : a > b ? 1 : 0)
        })

        const walk = (ascending: boolean) =>
          Effect.gen(function* () {
            const seen: Array<string> = []
            let prev: StateStore.StoredDocument | undefined
            for (let pageNo = 0; pageNo < 10; pageNo++) {
              const page = yield* s.runs.list(
                { projects: [project] },
                {
                  limit: 10,
                  ascending,
                  ...(prev === undefined ? {} : { prevSubmittedAt: prev.submittedAt, prevId: prev.id })
                }
              )
              if (page.length === 0) break
              seen.push(...page.map((d) => d.id))
              prev = page[page.length - 1]
            }
            return seen
          })
        expect(yield* walk(true)).toEqual(byKey)
        expect(yield* walk(false)).toEqual([...byKey].reverse())

        const running = yield* s.runs.list({ projects: [project], statuses: ["running"] })
        expect(running.length).toBe(9)
        expect(running.every((d) => d.status === "running")).toBe(true)
        expect((yield* s.runs.list({ projects: [project], userName: "alice" })).length).toBe(13)
        expect((yield* s.runs.list({ projects: [project], repoId: "repo-2" })).length).toBe(0)
        expect((yield* s.runs.list({ ids: [ids[3], ids[4], "nope"] })).map((d) => d.id).sort()).toEqual([ids[3], ids[4]].sort())
        expect((yield* s.runs.list({ projects: [project] }, { limit: 0 })).length).toBe(0)
        // Several projects at once, and the ids and documents alone in the same order.
        expect((yield* s.runs.list({ projects: [project, unique("none")] })).length).toBe(25)
        const page = { limit: 7, ascending: false, prevSubmittedAt: new Date(base + 9_000), prevId: byKey[18] }
        const full = yield* s.runs.list({ projects: [project], statuses: ["done"] }, page)
        const docs = yield* s.runs.listDocs({ projects: [project], statuses: ["done"] }, page)
        expect(docs).toEqual(full.map((d) => ({ id: d.id, doc: d.doc })))
        expect(docs.length).toBe(7)
      }))

    // -------------------------------------------------------------------------------------------
    // Claim with lease

    const seedJobs = (n: number, status = "submitted") =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("claim")
        const base = Date.now() - 60_000
        const ids: Array<string> = []
        for (let i = 0; i < n; i++) {
          const id = unique(`job${i}`)
          ids.push(id)
          yield* s.jobs.insert({ id, project, name: `j${i}`, status, submittedAt: new Date(base + i), doc: { i } })
        }
        return { project, ids }
      })

    it.effect("claims free rows oldest first, never the same row twice while leased", () =>
      Effect.gen(function* () {
        const s = yield* store
        const { ids, project } = yield* seedJobs(5)
        const filter = { projects: [project], statuses: ["submitted"] }
        const a = yield* s.jobs.claim({ filter, owner: "replica-a", leaseMs: 60_000, limit: 3 })
        expect(a.map((d) => d.id)).toEqual(ids.slice(0, 3))
        for (const d of a) {
          expect(d.lease?.owner).toBe("replica-a")
          expect(d.lease?.expiresAt.getTime()).toBeGreaterThan(Date.now() + 30_000)
        }
        expect(new Set(a.map((d) => d.lease?.token)).size).toBe(3)
        const b = yield* s.jobs.claim({ filter, owner: "replica-b", leaseMs: 60_000, limit: 10 })
        expect(b.map((d) => d.id)).toEqual(ids.slice(3))
        expect(yield* s.jobs.claim({ filter, owner: "replica-c", leaseMs: 60_000, limit: 10 })).toEqual([])

        // Claims by id, and the status filter is respected.
        const { ids: more, project: p2 } = yield* seedJobs(2, "running")
        expect(yield* s.jobs.claim({ filter: { ids: more, statuses: ["submitted"] }, owner: "x", leaseMs: 1000 })).toEqual([])
        expect((yield* s.jobs.claim({ filter: { ids: [more[1]], projects: [p2] }, owner: "x", leaseMs: 1000 })).map((d) => d.id)).toEqual([
          more[1]
        ])
        yield* expectFailure(s.jobs.claim({ filter, owner: "x", leaseMs: 0 }), "Invalid")
      }))

    it.effect("updates under a lease; a stale or foreign token fails with LeaseLost", () =>
      Effect.gen(function* () {
        const s = yield* store
        const { ids, project } = yield* seedJobs(1)
        const [claimed] = yield* s.jobs.claim({ filter: { projects: [project] }, owner: "a", leaseMs: 60_000 })
        const token = claimed.lease!.token
        const updated = yield* s.jobs.update(claimed.id, { status: "provisioning" }, { lease: token })
        expect(updated.status).toBe("provisioning")
        // Updates keep the lease.
        expect(updated.lease?.token).toBe(token)
        yield* expectFailure(s.jobs.update(ids[0], { status: "running" }, { lease: "not-the-token" }), "LeaseLost")
        yield* expectFailure(s.jobs.renew(ids[0], "not-the-token", 1000), "LeaseLost")
        yield* expectFailure(s.jobs.release(ids[0], "not-the-token"), "LeaseLost")
        const renewed = yield* s.jobs.renew(ids[0], token, 120_000)
        expect(renewed.expiresAt.getTime()).toBeGreaterThan(claimed.lease!.expiresAt.getTime())
        yield* s.jobs.release(ids[0], token)
        expect((yield* s.jobs.get(ids[0])).lease).toBeNull()
        // Released: the old token is stale now.
        yield* expectFailure(s.jobs.update(ids[0], { status: "running" }, { lease: token }), "LeaseLost")
        const [again] = yield* s.jobs.claim({ filter: { projects: [project] }, owner: "b", leaseMs: 60_000 })
        expect(again.id).toBe(ids[0])
        expect(again.lease!.token).not.toBe(token)
      }))

    it.effect("an update under a lease may free it in the same statement", () =>
      Effect.gen(function* () {
        const s = yield* store
        const { ids, project } = yield* seedJobs(1)
        const [claimed] = yield* s.jobs.claim({ filter: { projects: [project] }, owner: "a", leaseMs: 60_000 })
        const token = claimed.lease!.token
        // A stale token neither writes nor frees anything.
        yield* expectFailure(s.jobs.update(ids[0], { status: "running" }, { lease: "not-the-token", releaseLease: true }), "LeaseLost")
        expect((yield* s.jobs.get(ids[0])).lease?.token).toBe(token)
        const updated = yield* s.jobs.update(ids[0], { status: "provisioning" }, { lease: token, releaseLease: true })
        expect(updated.status).toBe("provisioning")
        expect(updated.version).toBe(claimed.version + 1)
        expect(updated.lease).toBeNull()
        expect((yield* s.jobs.get(ids[0])).lease).toBeNull()
        // Freed: the token is stale, and another claimer gets the row at once.
        yield* expectFailure(s.jobs.release(ids[0], token), "LeaseLost")
        const [again] = yield* s.jobs.claim({ filter: { projects: [project] }, owner: "b", leaseMs: 60_000 })
        expect(again.id).toBe(ids[0])
        // Without a lease the option has nothing to free: a lease held by another stays.
        yield* s.jobs.update(ids[0], { status: "running" }, { releaseLease: true })
        expect((yield* s.jobs.get(ids[0])).lease?.token).toBe(again.lease!.token)
      }))

    it.effect("inserts a row already leased: nobody claims it until its holder frees it", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("leased-insert")
        const id = unique("inst")
        const row = yield* s.instances.insert({ id, project, name: "i0", status: "provisioning", doc: { i: 0 }, lease: { owner: "creator", leaseMs: 60_000 } })
        expect(row.lease?.owner).toBe("creator")
        expect(row.lease?.expiresAt.getTime()).toBeGreaterThan(Date.now() + 30_000)
        expect((yield* s.instances.get(id)).lease?.token).toBe(row.lease!.token)
        // Leased from the start: a claimer gets nothing, an unleased write is refused.
        expect(yield* s.instances.claim({ filter: { ids: [id] }, owner: "other", leaseMs: 60_000 })).toEqual([])
        yield* expectFailure(s.instances.update(id, { status: "busy" }, { unleased: true }), "LeaseLost")
        // Its holder renews it and frees it with its last write.
        expect(yield* s.instances.renewMany([{ id, token: row.lease!.token }], 60_000)).toHaveLength(1)
        const done = yield* s.instances.update(id, { status: "busy" }, { lease: row.lease!.token, releaseLease: true })
        expect(done.lease).toBeNull()
        expect((yield* s.instances.claim({ filter: { ids: [id] }, owner: "other", leaseMs: 60_000 })).map((d) => d.id)).toEqual([id])
        // Without `lease` a row is inserted free, and a lease of no time is refused (nothing inserted).
        expect((yield* s.instances.insert({ id: unique("inst"), project, name: "i1", status: "provisioning", doc: {} })).lease).toBeNull()
        const refused = unique("inst")
        yield* expectFailure(s.instances.insert({ id: refused, project, name: "i2", status: "provisioning", doc: {}, lease: { owner: "creator", leaseMs: 0 } }), "Invalid")
        yield* expectFailure(s.instances.get(refused), "NotFound")
      }))

    it.effect("an update of an unleased row fails while another holds its lease, and writes once it is free", () =>
      Effect.gen(function* () {
        const s = yield* store
        const { ids, project } = yield* seedJobs(1)
        const free = yield* s.jobs.update(ids[0], { status: "provisioning" }, { unleased: true })
        expect(free.status).toBe("provisioning")
        const [claimed] = yield* s.jobs.claim({ filter: { projects: [project] }, owner: "a", leaseMs: 60_000 })
        const err = yield* expectFailure(s.jobs.update(ids[0], { status: "running" }, { unleased: true, expectedVersion: claimed.version }), "LeaseLost")
        expect(err.message).toContain("leased by a")
        expect((yield* s.jobs.get(ids[0])).status).toBe("provisioning")
        // At another version it is a conflict, whoever holds it.
        yield* expectFailure(s.jobs.update(ids[0], { status: "running" }, { unleased: true, expectedVersion: claimed.version + 5 }), "Conflict")
        // An expired lease does not stop it.
        yield* s.jobs.release(ids[0], claimed.lease!.token)
        const [short] = yield* s.jobs.claim({ filter: { projects: [project] }, owner: "b", leaseMs: 1 })
        yield* Effect.sleep("20 millis")
        const taken = yield* s.jobs.update(ids[0], { status: "running" }, { unleased: true, expectedVersion: short.version })
        expect(taken.version).toBe(short.version + 1)
        // Its holder's write under that lease is refused now.
        yield* expectFailure(s.jobs.update(ids[0], { status: "done" }, { lease: short.lease!.token }), "LeaseLost")
      }))

    it.effect("renews many leases in one call, answering only those still held", () =>
      Effect.gen(function* () {
        const s = yield* store
        const { ids, project } = yield* seedJobs(4)
        const filter = { projects: [project] }
        const held = yield* s.jobs.claim({ filter, owner: "a", leaseMs: 60_000, limit: 3 })
        expect(held.length).toBe(3)
        const before = new Map(held.map((d) => [d.id, d.lease!.expiresAt.getTime()]))
        // The third lease is let go (taken over, as far as "a" knows), the fourth row was never held.
        yield* s.jobs.release(held[2].id, held[2].lease!.token)
        const renewed = yield* s.jobs.renewMany(
          [
            ...held.map((d) => ({ id: d.id, token: d.lease!.token })),
            { id: ids.find((id) => !before.has(id))!, token: "never-held" },
            { id: held[0].id, token: "a-stale-token" }
          ],
          120_000
        )
        expect(renewed.map((r) => r.id).sort()).toEqual([held[0].id, held[1].id].sort())
        for (const r of renewed) {
          expect(r.lease.owner).toBe("a")
          expect(r.lease.token).toBe(held.find((d) => d.id === r.id)!.lease!.token)
          expect(r.lease.expiresAt.getTime()).toBeGreaterThan(before.get(r.id)!)
          expect((yield* s.jobs.get(r.id)).lease?.expiresAt.getTime()).toBe(r.lease.expiresAt.getTime())
        }
        expect(yield* s.jobs.renewMany([], 1000)).toEqual([])
        yield* expectFailure(s.jobs.renewMany([{ id: held[0].id, token: held[0].lease!.token }], 0), "Invalid")
      }))

    it.effect("takes over rows whose lease expired; the old holder's token is then stale", () =>
      Effect.gen(function* () {
        const s = yield* store
        const { ids, project } = yield* seedJobs(2)
        const filter = { projects: [project] }
        const a = yield* s.jobs.claim({ filter, owner: "dead-replica", leaseMs: 200, limit: 2 })
        expect(a.length).toBe(2)
        expect(yield* s.jobs.claim({ filter, owner: "b", leaseMs: 60_000, limit: 2 })).toEqual([])
        yield* Effect.sleep("350 millis")
        // Expired but not yet taken: the holder can no longer write or renew.
        yield* expectFailure(s.jobs.update(ids[0], { status: "running" }, { lease: a[0].lease!.token }), "LeaseLost")
        yield* expectFailure(s.jobs.renew(ids[0], a[0].lease!.token, 1000), "LeaseLost")
        expect(yield* s.jobs.renewMany(a.map((d) => ({ id: d.id, token: d.lease!.token })), 1000)).toEqual([])
        const b = yield* s.jobs.claim({ filter, owner: "b", leaseMs: 60_000, limit: 2 })
        expect(b.map((d) => d.id)).toEqual(ids)
        expect(b.every((d) => d.lease?.owner === "b")).toBe(true)
        yield* expectFailure(s.jobs.update(ids[1], { status: "running" }, { lease: a[1].lease!.token }), "LeaseLost")
      }))

    it.effect("concurrent claimers get each row exactly once", () =>
      Effect.gen(function* () {
        const s = yield* store
        const { ids, project } = yield* seedJobs(60)
        const claimer = (owner: string) =>
          Effect.gen(function* () {
            const mine: Array<string> = []
            while (true) {
              const got = yield* s.jobs.claim({ filter: { projects: [project] }, owner, leaseMs: 60_000, limit: 4 })
              if (got.length === 0) return mine
              mine.push(...got.map((d) => d.id))
            }
          })
        const results = yield* Effect.all([claimer("a"), claimer("b"), claimer("c"), claimer("d")], { concurrency: "unbounded" })
        const all = results.flat()
        expect(all.length).toBe(ids.length)
        expect(new Set(all)).toEqual(new Set(ids))
      }))

    // -------------------------------------------------------------------------------------------
    // Transactions

    it.effect("commits a transaction as a whole and rolls it back on failure", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("tx")
        const runId = unique("run")
        const jobId = unique("job")
        yield* s.withTransaction(
          Effect.gen(function* () {
            yield* s.runs.insert({ id: runId, project, name: "r", status: "submitted", doc: {} })
            // Nested: joins the outer transaction.
            yield* s.withTransaction(s.jobs.insert({ id: jobId, project, name: "j", status: "submitted", parentId: runId, doc: {} }))
          })
        )
        expect((yield* s.runs.get(runId)).id).toBe(runId)
        expect((yield* s.jobs.get(jobId)).parentId).toBe(runId)

        const failedRun = unique("run")
        const result = yield* Effect.either(
          s.withTransaction(
            Effect.gen(function* () {
              yield* s.runs.insert({ id: failedRun, project, name: "r2", status: "submitted", doc: {} })
              yield* s.runs.update(runId, { status: "terminating" })
              return yield* Effect.fail("boom" as const)
            })
          )
        )
        expect(result).toEqual(Either.left("boom"))
        yield* expectFailure(s.runs.get(failedRun), "NotFound")
        expect((yield* s.runs.get(runId)).status).toBe("submitted")

        // A store failure inside rolls back too and surfaces as the store error.
        const dup = yield* Effect.either(
          s.withTransaction(
            Effect.gen(function* () {
              yield* s.runs.update(runId, { status: "terminating" })
              yield* s.jobs.insert({ id: jobId, project, name: "j", status: "submitted", doc: {} })
            })
          )
        )
        expect(Either.isLeft(dup) && dup.left.reason).toBe("AlreadyExists")
        expect((yield* s.runs.get(runId)).status).toBe("submitted")
      }))

    it.effect("isolates a transaction from concurrent writers until it commits", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("iso")
        const id = unique("run")
        yield* s.runs.insert({ id, project, name: "r", status: "submitted", doc: { n: 0 } })
        // Ten concurrent read-modify-write transactions under optimistic versions: every one
        // either commits or gets Conflict, and the count equals the commits.
        const bump = s.withTransaction(
          Effect.gen(function* () {
            const cur = yield* s.runs.get(id)
            yield* s.runs.update(id, { doc: { n: (cur.doc as { n: number }).n + 1 } }, { expectedVersion: cur.version })
          })
        ).pipe(Effect.retry({ while: (e) => e.reason === "Conflict", times: 50 }))
        yield* Effect.all(Array.from({ length: 10 }, () => bump), { concurrency: "unbounded" })
        expect((yield* s.runs.get(id)).doc).toEqual({ n: 10 })
      }))

    // -------------------------------------------------------------------------------------------
    // Change feed

    it.effect("announces inserts, updates, deletions and log appends, but not claims", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const s = yield* store
          const queue = yield* s.subscribe
          const project = unique("feed")
          const id = unique("job")
          const inserted = yield* s.jobs.insert({ id, project, name: "j", status: "submitted", doc: {} })
          // A document's notice carries its version after the change (a reader that holds it can skip a read).
          expect(yield* nextChange(queue, (c) => c.id === id)).toEqual({ kind: "job", id, project, version: inserted.version })

          const [claimed] = yield* s.jobs.claim({ filter: { ids: [id] }, owner: "a", leaseMs: 10_000 })
          const updated = yield* s.jobs.update(id, { status: "running" }, { lease: claimed.lease!.token })
          expect(updated.version).toBe(inserted.version + 1)
          // An update made through this store comes with the row it wrote: a follower takes it as read.
          expect(yield* nextChange(queue, (c) => c.id === id)).toEqual({ kind: "job", id, project, version: updated.version, row: updated })
          yield* s.jobs.renew(id, claimed.lease!.token, 10_000)
          yield* s.jobs.release(id, claimed.lease!.token)
          yield* s.jobs.remove([id])
          // The next change about this job is the removal (no version: the row is gone): claim,
          // renew and release said nothing.
          expect(yield* nextChange(queue, (c) => c.id === id)).toEqual({ kind: "job", id, project })
          yield* Effect.sleep("100 millis")
          expect(Chunk.toReadonlyArray(yield* Queue.takeAll(queue)).filter((c) => c.id === id)).toEqual([])

          const sub = unique("sub")
          yield* s.logs.append([
            { project, jobSubmissionId: sub, timestamp: new Date(), source: "stdout", message: new Uint8Array([104, 105]) }
          ])
          expect(yield* nextChange(queue, (c) => c.id === sub)).toEqual({ kind: "log", id: sub, project })

          // The Stream form sees changes after it starts.
          const runId = unique("run")
          const fiber = yield* s.changes.pipe(
            Stream.filter((c) => c.id === runId),
            Stream.take(1),
            Stream.runCollect,
            Effect.fork
          )
          // The stream subscribes when it starts running.
          yield* Effect.sleep("100 millis")
          yield* s.runs.insert({ id: runId, project, name: runId, status: "pending", doc: {} })
          const seen = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
          expect(Chunk.toReadonlyArray(seen)).toEqual([{ kind: "run", id: runId, project, version: 1 }])
        })
      ))

    it.effect("sends the row of each update made through this store with its notice and its report, but not from inside a transaction", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const s = yield* store
          const queue = yield* s.subscribe
          const reports: Array<StateStore.Invalidation> = []
          yield* s.watch((c) => reports.push(c))
          const rowsReported = (version: number) => reports.flatMap((c) => (c.kind === "run" && c.id === runId && c.version === version ? [c.row] : []))
          const project = unique("rows")
          const runId = unique("run")
          yield* s.runs.insert({ id: runId, project, name: "r", status: "pending", doc: { n: 0 } })
          // Notices in the order written, each with its own row (several writes, one after another).
          const written: Array<StateStore.StoredDocument> = []
          for (let n = 1; n <= 3; n++) written.push(yield* s.runs.update(runId, { doc: { n } }))
          for (const row of written) {
            const change = yield* nextChange(queue, (c) => c.id === runId && c.version === row.version)
            expect(change.row).toEqual(row)
            // `watch` listeners are told with the row too, by the time the write returns (a bare
            // report of the same version, from the feed, may come besides).
            expect(rowsReported(row.version)).toContainEqual(row)
            expect((change.row!.doc as { n: number }).n).toBe(written.indexOf(row) + 1)
          }
          // Two writes at once: each notice carries the row of its version.
          const both = yield* Effect.all([s.runs.update(runId, { status: "running" }), s.runs.update(runId, { status: "done" })], { concurrency: 2 })
          // (Notices come in the order the writes committed: the lower version first.)
          for (const row of [...both].sort((a, b) => a.version - b.version)) {
            expect((yield* nextChange(queue, (c) => c.id === runId && c.version === row.version)).row).toEqual(row)
          }
          // Inside a transaction the write may still be rolled back: its notice says only the version.
          const inTx = yield* s.withTransaction(s.runs.update(runId, { status: "terminated" }))
          const txChange = yield* nextChange(queue, (c) => c.id === runId && c.version === inTx.version)
          expect(txChange.row).toBeUndefined()
          expect(rowsReported(inTx.version).length).toBeGreaterThan(0)
          expect(rowsReported(inTx.version).every((row) => row === undefined)).toBe(true)
          // A failed update (a stale version) sends nothing, and the next one its own row.
          yield* expectFailure(s.runs.update(runId, { status: "failed" }, { expectedVersion: 1 }), "Conflict")
          const after = yield* s.runs.update(runId, { status: "failed" })
          expect(after.version).toBe(inTx.version + 1)
          expect((yield* nextChange(queue, (c) => c.id === runId)).row).toEqual(after)
        })
      ))

    it.effect("does not announce a rolled-back change", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const s = yield* store
          const queue = yield* s.subscribe
          const project = unique("rb")
          const rolledBack = unique("run")
          const committed = unique("run")
          yield* Effect.either(
            s.withTransaction(
              Effect.zipRight(s.runs.insert({ id: rolledBack, project, name: "a", status: "pending", doc: {} }), Effect.fail("no"))
            )
          )
          yield* s.runs.insert({ id: committed, project, name: "b", status: "pending", doc: {} })
          const c = yield* nextChange(queue, (c) => c.project === project)
          expect(c.id).toBe(committed)
        })
      ))

    it.effect("tells watchers of each write synchronously, and again when its transaction ends", () =>
      Effect.scoped(
        Effect.gen(function* () {
          const s = yield* store
          const seen: Array<StateStore.Invalidation> = []
          yield* s.watch((c) => seen.push(c))
          const mine = (id: string) => seen.filter((c) => c.kind !== "access" && c.id === id).length
          const access = () => seen.filter((c) => c.kind === "access").length
          const project = unique("watch")
          const runId = unique("run")
          // Reported by the time the call returns: a cache of reads is stale at once.
          yield* s.runs.insert({ id: runId, project, name: "w", status: "pending", doc: {} })
          expect(mine(runId)).toBeGreaterThanOrEqual(1)
          let before = mine(runId)
          const updated = yield* s.runs.update(runId, { status: "running" })
          expect(mine(runId)).toBeGreaterThan(before)
          // A write's report names the version it gave the document (a listener that read it may skip the report).
          expect(seen.slice(before).some((c) => c.kind === "run" && c.id === runId && c.version === updated.version)).toBe(true)
          // Lease-only changes are not changes of the document.
          const [claimed] = yield* s.runs.claim({ filter: { ids: [runId] }, owner: "w", leaseMs: 10_000 })
          yield* s.runs.release(runId, claimed.lease!.token)
          before = mine(runId)
          yield* s.runs.remove([runId])
          expect(mine(runId)).toBeGreaterThan(before)

          // Inside a transaction: at the write, and again once it ended (here rolled back).
          const txRun = unique("run")
          let duringTx = 0
          yield* Effect.either(
            s.withTransaction(
              s.runs.insert({ id: txRun, project, name: "t", status: "pending", doc: {} }).pipe(
                Effect.tap(() => Effect.sync(() => (duringTx = mine(txRun)))),
                Effect.zipRight(Effect.fail("no"))
              )
            )
          )
          expect(duringTx).toBeGreaterThanOrEqual(1)
          expect(mine(txRun)).toBeGreaterThan(duringTx)

          // Users, tokens, projects, members and a project's backends: "access".
          const username = unique("watcher")
          for (const change of [
            s.users.create({ username, globalRole: "user", tokenHash: unique("hash") }),
            s.users.update(username, { active: false }),
            s.users.setTokenHash(username, unique("hash")),
            s.projects.create({ name: project, owner: username }),
            s.projects.addMembers(project, [{ username, projectRole: "user" }]),
            s.projects.setMembers(project, [{ username, projectRole: "admin" }]),
            s.projects.removeMembers(project, [username]),
            s.backends.upsert({ project, type: "local", config: { max_instances: 1 } }),
            s.backends.upsert({ project, type: "local", config: { max_instances: 2 } }),
            s.backends.delete(project, ["local"]),
            s.projects.delete([project]),
            s.users.delete([username])
          ] as ReadonlyArray<Effect.Effect<unknown, StateStore.StateStoreError>>) {
            const count = access()
            yield* change
            expect(access()).toBeGreaterThan(count)
          }
        })
      ))

    // -------------------------------------------------------------------------------------------
    // Logs

    const text = (s: string) => new TextEncoder().encode(s)
    const read = (m: Uint8Array) => new TextDecoder().decode(m)

    it.effect("appends logs in batches and polls them in pages, both directions", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("logs")
        const sub = unique("sub")
        const base = Date.parse("2026-04-01T00:00:00Z")
        const n = 2500
        const events: Array<StateStore.NewLogEvent> = []
        for (let i = 0; i < n; i++) {
          // Ten events per millisecond: order within a millisecond is insertion order.
          events.push({ project, jobSubmissionId: sub, timestamp: new Date(base + Math.floor(i / 10)), source: i % 7 === 0 ? "stderr" : "stdout", message: text(`line ${i}\n`) })
        }
        events.push({ project, jobSubmissionId: sub, timestamp: new Date(base), source: "runner", message: text("runner says hi") })
        events.push({ project, jobSubmissionId: unique("other"), timestamp: new Date(base), source: "stdout", message: text("other job") })
        // Binary-safe.
        events.push({ project, jobSubmissionId: sub, timestamp: new Date(base + 10_000), source: "stdout", message: new Uint8Array([0, 255, 10, 13, 128]) })
        yield* s.logs.append(events.slice(0, 1200))
        yield* s.logs.append(events.slice(1200))

        const pollAll = (descending: boolean) =>
          Effect.gen(function* () {
            const out: Array<StateStore.LogEvent> = []
            let nextToken: string | undefined
            let pages = 0
            do {
              const page = yield* s.logs.poll({ project, jobSubmissionId: sub, descending, limit: 1000, ...(nextToken === undefined ? {} : { nextToken }) })
              out.push(...page.events)
              nextToken = page.nextToken
              pages++
            } while (nextToken !== undefined && pages < 10)
            return { out, pages }
          })
        const asc = yield* pollAll(false)
        expect(asc.pages).toBe(3)
        expect(asc.out.length).toBe(n + 1)
        expect(asc.out.slice(0, n).map((e) => read(e.message))).toEqual(events.slice(0, n).map((e) => read(e.message)))
        expect(asc.out[7].source).toBe("stderr")
        expect(asc.out[1].source).toBe("stdout")
        expect(asc.out[5].timestamp.getTime()).toBe(base)
        expect(Array.from(asc.out[n].message)).toEqual([0, 255, 10, 13, 128])

        const desc = yield* pollAll(true)
        expect(desc.out.map((e) => read(e.message))).toEqual(asc.out.map((e) => read(e.message)).reverse())

        // start_time inclusive, end_time exclusive.
        const window = yield* s.logs.poll({ project, jobSubmissionId: sub, startTime: new Date(base + 5), endTime: new Date(base + 7) })
        expect(window.events.map((e) => read(e.message))).toEqual(events.slice(50, 70).map((e) => read(e.message)))
        expect(window.nextToken).toBeUndefined()

        const diagnose = yield* s.logs.poll({ project, jobSubmissionId: sub, diagnose: true })
        expect(diagnose.events.map((e) => read(e.message))).toEqual(["runner says hi"])
        expect(diagnose.events[0].source).toBe("runner")

        const small = yield* s.logs.poll({ project, jobSubmissionId: sub, limit: 2 })
        expect(small.events.length).toBe(2)
        expect(small.nextToken).toBeDefined()

        yield* expectFailure(s.logs.poll({ project, jobSubmissionId: sub, limit: 1001 }), "Invalid")
        yield* expectFailure(s.logs.poll({ project, jobSubmissionId: sub, limit: 0 }), "Invalid")
        yield* expectFailure(s.logs.poll({ project, jobSubmissionId: sub, nextToken: "garbage" }), "Invalid")
        expect((yield* s.logs.poll({ project: unique("elsewhere"), jobSubmissionId: sub })).events).toEqual([])

        yield* s.logs.delete(project, [sub])
        expect((yield* s.logs.poll({ project, jobSubmissionId: sub })).events).toEqual([])
        yield* s.logs.append([])
      }))

    it.effect("stores empty and multi-megabyte log messages intact", () =>
      Effect.gen(function* () {
        const s = yield* store
        const project = unique("biglogs")
        const sub = unique("sub")
        const big = (size: number, seed: number) => {
          const out = new Uint8Array(size)
          for (let i = 0; i < size; i++) out[i] = (i * 31 + seed) & 0xff
          return out
        }
        const at = new Date("2026-05-01T00:00:00Z")
        const messages = [new Uint8Array(0), big(5 * 1024 * 1024, 1), big(4 * 1024 * 1024 + 3, 2), text("tail")]
        yield* s.logs.append(messages.map((message) => ({ project, jobSubmissionId: sub, timestamp: at, source: "stdout" as const, message })))
        const page = yield* s.logs.poll({ project, jobSubmissionId: sub })
        expect(page.events.map((e) => e.message.byteLength)).toEqual(messages.map((m) => m.byteLength))
        for (let i = 0; i < messages.length; i++) {
          const got = page.events[i].message
          const want = messages[i]
          let same = got.byteLength === want.byteLength
          for (let k = 0; same && k < want.byteLength; k += 4093) same = got[k] === want[k]
          expect(same, `message ${i}`).toBe(true)
          expect(got[got.byteLength - 1]).toBe(want[want.byteLength - 1])
        }
      }))

    // -------------------------------------------------------------------------------------------
    // First start

    it.effect("bootstraps the admin user and the main project once", () =>
      Effect.gen(function* () {
        const s = yield* store
        const adminUsername = unique("admin")
        const projectName = unique("main")
        const first = yield* StateStore.bootstrap({ adminUsername, projectName, adminToken: "fixed-admin-token-0001" })
        expect(first.createdAdmin).toBe(true)
        expect(first.createdProject).toBe(true)
        expect(first.adminToken).toBe("fixed-admin-token-0001")
        expect(first.admin.globalRole).toBe("admin")
        expect(first.project.owner.username).toBe(adminUsername)
        expect(first.project.members.map((m) => [m.user.username, m.projectRole])).toEqual([[adminUsername, "admin"]])
        expect((yield* StateStore.authenticate("fixed-admin-token-0001")).username).toBe(adminUsername)

        const again = yield* StateStore.bootstrap({ adminUsername, projectName })
        expect(again.createdAdmin).toBe(false)
        expect(again.createdProject).toBe(false)
        expect(again.adminToken).toBeUndefined()
        expect(again.admin.id).toBe(first.admin.id)
        expect((yield* s.users.list()).filter((u) => u.username === adminUsername).length).toBe(1)

        // The configured token stays authoritative across restarts.
        yield* StateStore.bootstrap({ adminUsername, projectName, adminToken: "rotated-admin-token-0002" })
        yield* expectFailure(StateStore.authenticate("fixed-admin-token-0001"), "NotFound")
        expect((yield* StateStore.authenticate("rotated-admin-token-0002")).username).toBe(adminUsername)

        const random = yield* StateStore.bootstrap({ adminUsername: unique("admin"), projectName: unique("main") })
        expect(random.adminToken).toMatch(/^[0-9a-f-]{36}$/)
      }))
  })
}
