/**
 * The StateStore on PostgreSQL SQL, shared by the embedded store (PGlite) and the
 * `@dstack-ts/state-postgres` plugin: one schema, one set of statements, two drivers.
 *
 * `make` composes the store from one module per table (or family of tables) under `sql/`,
 * all sharing one SQL context (sql/Context.ts): the statement runner that joins the caller's
 * transaction, change reports for `watch`, and write counts for planner statistics.
 *
 * - sql/Users.ts: users and their token hashes
 * - sql/Projects.ts: projects and members
 * - sql/Backends.ts: each project's backend configurations
 * - sql/Repos.ts: repos and their uploaded code
 * - sql/Documents.ts, sql/Leases.ts: runs, jobs, instances, fleets and claim-with-lease on them
 * - sql/Runs.ts: runs found by a job submission's id
 * - sql/Logs.ts: job logs and runner events
 * - sql/Stacks.ts: stacks and their frames
 * - sql/Secrets.ts: project secrets (ciphertext only)
 * - sql/Changes.ts: the change feed (LISTEN/NOTIFY) and `watch`
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import type { Change, DocumentKind, Documents, Logs, PeerMessages, StateStoreError, StateStoreService } from "../ports/StateStore.ts"
import { migrate } from "./migrations.ts"
import * as Backends from "./sql/Backends.ts"
import * as Changes from "./sql/Changes.ts"
import * as Context from "./sql/Context.ts"
import * as SqlDocuments from "./sql/Documents.ts"
import { failWith, toStoreError } from "./sql/Errors.ts"
import * as Leases from "./sql/Leases.ts"
import * as SqlLogs from "./sql/Logs.ts"
import * as Projects from "./sql/Projects.ts"
import * as Repos from "./sql/Repos.ts"
import * as Runs from "./sql/Runs.ts"
import * as Secrets from "./sql/Secrets.ts"
import * as Stacks from "./sql/Stacks.ts"
import * as Users from "./sql/Users.ts"
import type { SqlDriver } from "./SqlDriver.ts"

export interface SqlStateStoreOptions {
  /** Apply pending migrations on start (default true). */
  readonly migrate?: boolean
  /**
   * Keeps job logs elsewhere than in the database (the embedded store uses files); gets the
   * function that puts a change on this store's feed.
   */
  readonly logs?: (announce: (change: Change) => void) => Logs
}

/** The NOTIFY channel the change triggers publish on. */
export const CHANGES_CHANNEL = Changes.CHANGES_CHANNEL

/** The NOTIFY channel of messages between server replicas (`StateStoreService.peers`). */
export const PEERS_CHANNEL = "dstack_peers"
/** PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more. */
const PEER_PAYLOAD_BYTES = 7_900
const utf8 = new TextEncoder()

/**
 * Messages between the replicas sharing a database, over NOTIFY on a channel of their own: for a
 * store several processes share (the PostgreSQL store sets it as its `peers`).
 */
export const peerMessages = (driver: SqlDriver): PeerMessages => ({
  maxBytes: PEER_PAYLOAD_BYTES,
  publish: (payload) => {
    const bytes = utf8.encode(payload).length
    if (bytes > PEER_PAYLOAD_BYTES) return failWith("peers.publish", "Invalid", `a peer message of ${bytes} bytes is over the ${PEER_PAYLOAD_BYTES} bytes NOTIFY carries`)
    return driver.query("SELECT pg_notify($1, $2)", [PEERS_CHANNEL, payload]).pipe(Effect.asVoid, Effect.mapError(toStoreError("peers.publish")))
  },
  listen: (onMessage) => driver.listen(PEERS_CHANNEL, onMessage).pipe(Effect.mapError(toStoreError("peers.listen")))
})

/**
 * Builds the store on a driver: applies pending migrations, starts listening for changes
 * (until the scope closes) and returns the service.
 */
export const make = (
  driver: SqlDriver,
  options: SqlStateStoreOptions = {}
): Effect.Effect<StateStoreService, StateStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    if (options.migrate !== false) {
      yield* migrate(driver).pipe(Effect.mapError(toStoreError("migrate")))
    }
    const feed = yield* Changes.make(driver)
    const ctx = yield* Context.make(driver, feed)
    const documents = (kind: DocumentKind): Documents => ({ ...SqlDocuments.make(ctx, kind), ...Leases.make(ctx, kind) })
    return {
      users: Users.make(ctx),
      projects: Projects.make(ctx),
      backends: Backends.make(ctx),
      repos: Repos.makeRepos(ctx),
      codes: Repos.makeCodes(ctx),
      runs: { ...documents("run"), ...Runs.make(ctx) },
      jobs: documents("job"),
      instances: documents("instance"),
      fleets: documents("fleet"),
      logs: options.logs !== undefined ? options.logs(feed.announce) : SqlLogs.make(ctx),
      stacks: Stacks.make(ctx),
      secrets: Secrets.make(ctx),
      withTransaction: ctx.withTransaction,
      changes: feed.changes,
      subscribe: feed.subscribe,
      watch: feed.watch
    } satisfies StateStoreService
  })
