/**
 * The StateStore port: everything the server keeps durably — users and their token hashes,
 * projects and members, backend configs, repos and code blobs, runs, jobs, instances, fleets
 * and job logs — with transactions, claim-with-lease for multi-replica servers, and a change
 * feed that wakes the engine the moment a row changes.
 *
 * Runs, jobs, instances and fleets are stored as JSON documents plus the few columns the
 * server filters and sorts on (id, project, name, status, parent, timestamps, deleted), so the
 * store does not depend on the exact shape of those schemas.
 *
 * Core ships an SQL implementation (core/src/state) with an embedded PostgreSQL (PGlite) as
 * the zero-setup default; the `@dstack-ts/state-postgres` plugin runs the same SQL on a real
 * PostgreSQL server. Stacks and frames will get their own repositories here later.
 */
import { Context, Effect, Schema } from "effect"
import type { Queue, Scope, Stream } from "effect"
import type { GlobalRole, User } from "../domain/User.ts"
import type { Project, ProjectRole } from "../domain/Project.ts"

// ---------------------------------------------------------------------------------------------
// Errors

/** Why a state store call failed. */
export const StateStoreErrorReason = Schema.Literal(
  "NotFound",
  "AlreadyExists",
  "Conflict",
  "LeaseLost",
  "Invalid",
  "Unavailable",
  "Unknown"
)
export type StateStoreErrorReason = typeof StateStoreErrorReason.Type

/**
 * The one error of the StateStore port.
 * - `NotFound`: no such row.
 * - `AlreadyExists`: a row with that key (id, name) exists.
 * - `Conflict`: a concurrent change won (version mismatch, serialization failure, deadlock);
 *   worth retrying after re-reading.
 * - `LeaseLost`: the update carried a lease token that is not (or no longer) the row's lease.
 * - `Invalid`: the request or a stored value is malformed.
 * - `Unavailable`: the database cannot be reached or is shutting down; worth retrying.
 * - `Unknown`: anything else, with the foreign error in `cause`.
 */
export class StateStoreError extends Schema.TaggedError<StateStoreError>("@dstack-ts/core/StateStore/StateStoreError")(
  "StateStoreError",
  {
    module: Schema.String,
    method: Schema.String,
    reason: StateStoreErrorReason,
    message: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  /** True for failures that may pass when tried again. */
  get isRetryable(): boolean {
    return isRetryable(this)
  }
}

/** True for failures that may pass when tried again (`Conflict`, `Unavailable`). */
export const isRetryable = (error: StateStoreError): boolean =>
  error.reason === "Conflict" || error.reason === "Unavailable"

/** Builds a failed effect. */
export const fail = (
  module: string,
  method: string,
  reason: StateStoreErrorReason,
  message: string,
  cause?: unknown
): Effect.Effect<never, StateStoreError> =>
  Effect.fail(new StateStoreError({ module, method, reason, message, ...(cause === undefined ? {} : { cause }) }))

// ---------------------------------------------------------------------------------------------
// Users, projects, backends, repos, code

/** What it takes to create a user; the token itself is never stored, only its hash. */
export interface NewUser {
  readonly username: string
  readonly globalRole: GlobalRole
  readonly tokenHash: string
  readonly email?: string | null
  readonly active?: boolean
}

/** Fields of a user that can change (the token changes through `setTokenHash`). */
export interface UserPatch {
  readonly globalRole?: GlobalRole
  readonly email?: string | null
  readonly active?: boolean
}

export interface Users {
  /** Fails with `AlreadyExists` when the name (or, by accident, the token hash) is taken. */
  readonly create: (user: NewUser) => Effect.Effect<User, StateStoreError>
  readonly get: (username: string) => Effect.Effect<User, StateStoreError>
  /** The user a token hash belongs to, active or not: callers decide what inactive means. */
  readonly getByTokenHash: (tokenHash: string) => Effect.Effect<User, StateStoreError>
  /** All users, by name. */
  readonly list: () => Effect.Effect<ReadonlyArray<User>, StateStoreError>
  readonly update: (username: string, patch: UserPatch) => Effect.Effect<User, StateStoreError>
  readonly setTokenHash: (username: string, tokenHash: string) => Effect.Effect<void, StateStoreError>
  /** Removes the users and their memberships; unknown names are ignored. */
  readonly delete: (usernames: ReadonlyArray<string>) => Effect.Effect<void, StateStoreError>
  /** The user's SSH key pair (upstream's user key), or null when none was made yet. */
  readonly getSshKey: (username: string) => Effect.Effect<UserSshKeyPair | null, StateStoreError>
  /**
   * Stores the user's SSH key pair. With `onlyIfMissing`, a pair already stored is kept, so two
   * servers making a first key at once agree on one. Answers the pair now stored.
   */
  readonly setSshKey: (username: string, key: UserSshKeyPair, options?: { readonly onlyIfMissing?: boolean }) => Effect.Effect<UserSshKeyPair, StateStoreError>
}

/** A user's SSH key pair: the OpenSSH public key line and the private key in PEM. */
export interface UserSshKeyPair {
  readonly publicKey: string
  readonly privateKey: string
}

/** A member as stored: a user name and a role. */
export interface MemberInput {
  readonly username: string
  readonly projectRole: ProjectRole
}

export interface NewProject {
  readonly name: string
  /** The owner's user name; the owner becomes a member with the `admin` role. */
  readonly owner: string
  readonly isPublic?: boolean
}

export interface Projects {
  readonly create: (project: NewProject) => Effect.Effect<Project, StateStoreError>
  readonly get: (name: string) => Effect.Effect<Project, StateStoreError>
  /** All projects, by name. */
  readonly list: () => Effect.Effect<ReadonlyArray<Project>, StateStoreError>
  /** Projects the user is a member of, plus public ones, by name. */
  readonly listForUser: (username: string) => Effect.Effect<ReadonlyArray<Project>, StateStoreError>
  /** Removes the projects with their members, backends, repos and code index. */
  readonly delete: (names: ReadonlyArray<string>) => Effect.Effect<void, StateStoreError>
  /** Replaces the member list. Fails with `NotFound` for an unknown project or user. */
  readonly setMembers: (name: string, members: ReadonlyArray<MemberInput>) => Effect.Effect<Project, StateStoreError>
  /** Adds members, or changes the role of existing ones. */
  readonly addMembers: (name: string, members: ReadonlyArray<MemberInput>) => Effect.Effect<Project, StateStoreError>
  readonly removeMembers: (name: string, usernames: ReadonlyArray<string>) => Effect.Effect<Project, StateStoreError>
}

/** A backend configured in a project: its type (`aws`, `ssh`, `local`, …) and its JSON config. */
export interface BackendRecord {
  readonly project: string
  readonly type: string
  readonly config: unknown
}

export interface Backends {
  /** Creates or replaces the project's config of that backend type. */
  readonly upsert: (record: BackendRecord) => Effect.Effect<void, StateStoreError>
  readonly get: (project: string, type: string) => Effect.Effect<BackendRecord, StateStoreError>
  readonly list: (project: string) => Effect.Effect<ReadonlyArray<BackendRecord>, StateStoreError>
  readonly delete: (project: string, types: ReadonlyArray<string>) => Effect.Effect<void, StateStoreError>
}

/** A repo initialised in a project (`repos/init`): type (remote, local, virtual), info, creds. */
export interface RepoRecord {
  readonly project: string
  readonly repoId: string
  readonly type: string
  readonly info: unknown
  readonly creds: unknown | null
}

export interface Repos {
  readonly upsert: (record: RepoRecord) => Effect.Effect<void, StateStoreError>
  readonly get: (project: string, repoId: string) => Effect.Effect<RepoRecord, StateStoreError>
  readonly list: (project: string) => Effect.Effect<ReadonlyArray<RepoRecord>, StateStoreError>
  /** Removes the repos and their code index entries. */
  readonly delete: (project: string, repoIds: ReadonlyArray<string>) => Effect.Effect<void, StateStoreError>
}

/** Where the code archive with a given hash lives in the BlobStore. */
export interface CodeRecord {
  readonly project: string
  readonly repoId: string
  readonly hash: string
  readonly blobKey: string
  readonly size: number
}

export interface Codes {
  /** Records an uploaded archive; idempotent (the same hash keeps its first record). */
  readonly put: (record: CodeRecord) => Effect.Effect<void, StateStoreError>
  readonly get: (project: string, repoId: string, hash: string) => Effect.Effect<CodeRecord, StateStoreError>
}

// ---------------------------------------------------------------------------------------------
// Stacks: versioned pushes of data objects (frames with attachments), see docs/stacks.md

/** Who may read a stack: anyone (`public`) or its owner and admins (`private`). */
export type StackAccess = "public" | "private"

/** One stored object of a frame: what it is, the params it answers to, where its bytes are. */
export interface StackAttachment {
  readonly description: string | null
  readonly params: Record<string, unknown>
  readonly contentType: string
  readonly application: string
  readonly metadata: Record<string, unknown>
  /** Set when the bytes are stored (upload done); null before. */
  readonly size: number | null
  readonly blobKey: string | null
  readonly digest: string | null
}

/** A revision of a stack: one push. It becomes the head only when committed. */
export interface StackFrameRecord {
  readonly id: string
  readonly owner: string
  readonly name: string
  readonly message: string | null
  readonly params: Record<string, unknown>
  readonly attachments: ReadonlyArray<StackAttachment>
  readonly status: "pending" | "committed"
  readonly createdBy: string
  readonly createdAt: Date
  readonly committedAt: Date | null
}

export interface StackRecord {
  readonly owner: string
  readonly name: string
  readonly access: StackAccess
  /** The id of the last committed frame, or null before the first commit. */
  readonly head: string | null
  readonly createdAt: Date
  readonly updatedAt: Date
}

export interface Stacks {
  /** Creates the stack if it does not exist (with `access`), else returns it unchanged. */
  readonly ensure: (owner: string, name: string, access: StackAccess) => Effect.Effect<StackRecord, StateStoreError>
  readonly get: (owner: string, name: string) => Effect.Effect<StackRecord, StateStoreError>
  /** Stacks owned by `owner` and public ones (every stack when `owner` is undefined), by name. */
  readonly list: (owner: string | undefined, includePublic: boolean) => Effect.Effect<ReadonlyArray<StackRecord>, StateStoreError>
  readonly setAccess: (owner: string, name: string, access: StackAccess) => Effect.Effect<StackRecord, StateStoreError>
  /** Removes the stack with its frames (the caller removes the blobs). */
  readonly delete: (owner: string, name: string) => Effect.Effect<void, StateStoreError>
  readonly insertFrame: (frame: StackFrameRecord) => Effect.Effect<StackFrameRecord, StateStoreError>
  readonly getFrame: (id: string) => Effect.Effect<StackFrameRecord, StateStoreError>
  /** Committed frames of a stack, newest first. */
  readonly listFrames: (owner: string, name: string, limit?: number) => Effect.Effect<ReadonlyArray<StackFrameRecord>, StateStoreError>
  /** Records the stored bytes of attachment `index` of a pending frame. */
  readonly setAttachmentBlob: (
    id: string,
    index: number,
    blob: { readonly size: number; readonly blobKey: string; readonly digest: string }
  ) => Effect.Effect<StackFrameRecord, StateStoreError>
  /** Marks the frame committed and moves the stack's head to it, in one transaction. */
  readonly commitFrame: (id: string, message: string | null) => Effect.Effect<StackFrameRecord, StateStoreError>
  /** Pending (never committed) frames created before `olderThan`, oldest first, at most `limit`. */
  readonly listPendingFrames: (olderThan: Date, limit: number) => Effect.Effect<ReadonlyArray<StackFrameRecord>, StateStoreError>
  /** Removes a frame only while it is pending; answers whether it did (a committed frame stays). */
  readonly deletePendingFrame: (id: string) => Effect.Effect<boolean, StateStoreError>
  /** The user's default access for new stacks (`private` unless set). */
  readonly defaultAccess: (username: string) => Effect.Effect<StackAccess, StateStoreError>
  readonly setDefaultAccess: (username: string, access: StackAccess) => Effect.Effect<void, StateStoreError>
}

// ---------------------------------------------------------------------------------------------
// Documents: runs, jobs, instances, fleets

/** The kinds of engine entities the store keeps as documents. */
export const DocumentKind = Schema.Literal("run", "job", "instance", "fleet")
export type DocumentKind = typeof DocumentKind.Type
export const documentKinds: ReadonlyArray<DocumentKind> = DocumentKind.literals

/** Who holds a row, until when; the token must accompany every update made under the lease. */
export interface Lease {
  readonly owner: string
  readonly token: string
  readonly expiresAt: Date
}

/** A stored run, job, instance or fleet: the indexed columns plus the JSON document. */
export interface StoredDocument {
  readonly kind: DocumentKind
  readonly id: string
  readonly project: string
  readonly name: string
  readonly status: string
  /** The run of a job, the fleet of an instance, … */
  readonly parentId: string | null
  /** The user who submitted it. */
  readonly userName: string | null
  readonly repoId: string | null
  readonly submittedAt: Date
  readonly updatedAt: Date
  readonly deleted: boolean
  /** Starts at 1, grows by one with every update: optimistic concurrency without a lease. */
  readonly version: number
  /** The current lease, if any (possibly expired). */
  readonly lease: Lease | null
  readonly doc: unknown
}

/** A stored row's id and document alone (see `Documents.listDocs`). */
export interface DocumentBody {
  readonly id: string
  readonly doc: unknown
}

export interface NewDocument {
  readonly id: string
  readonly project: string
  readonly name: string
  readonly status: string
  readonly parentId?: string | null
  readonly userName?: string | null
  readonly repoId?: string | null
  /** Defaults to the database's clock. */
  readonly submittedAt?: Date
  readonly doc: unknown
  /**
   * The row is inserted already leased by `owner` for `leaseMs` (the answer carries the lease):
   * what an insert and a claim of the new row would do in two statements.
   */
  readonly lease?: { readonly owner: string; readonly leaseMs: number }
}

export interface DocumentPatch {
  readonly name?: string
  readonly status?: string
  readonly parentId?: string | null
  readonly deleted?: boolean
  readonly doc?: unknown
  /** Defaults to the database's clock. */
  readonly updatedAt?: Date
}

export interface UpdateOptions {
  /** The lease token this update is made under: fails with `LeaseLost` if stale or expired. */
  readonly lease?: string
  /**
   * With `lease`: the same statement also frees that lease (the last write of a holder, where a
   * separate `release` would be a second round trip). Ignored without `lease`.
   */
  readonly releaseLease?: boolean
  /** Fails with `Conflict` unless the row is at this version. */
  readonly expectedVersion?: number
  /**
   * Without `lease`: fails with `LeaseLost` while anyone holds a live lease on the row (a row
   * nobody holds, or whose lease expired, is written). With `expectedVersion`, a take of a row
   * as listed in one statement, where a claim and an update would be two.
   */
  readonly unleased?: boolean
}

/** Which rows a list or a claim looks at; every given field narrows the selection. */
export interface DocumentFilter {
  readonly ids?: ReadonlyArray<string>
  readonly projects?: ReadonlyArray<string>
  readonly parentIds?: ReadonlyArray<string>
  readonly statuses?: ReadonlyArray<string>
  readonly userName?: string
  readonly repoId?: string
  /** Deleted rows are left out unless this is true. */
  readonly includeDeleted?: boolean
}

/**
 * Keyset pagination on (submitted_at, id), as upstream's `prev_submitted_at` + `prev_run_id`:
 * the next page starts after the last row of the previous one. Newest first unless
 * `ascending`.
 */
export interface Page {
  readonly limit?: number
  readonly prevSubmittedAt?: Date
  readonly prevId?: string
  readonly ascending?: boolean
}

export interface ClaimRequest {
  /** Which rows are eligible (typically `statuses`, or `ids`). */
  readonly filter: DocumentFilter
  /** Names the claimer (a server replica) for diagnostics. */
  readonly owner: string
  /** How long the lease lasts from now, by the database's clock. */
  readonly leaseMs: number
  /** At most this many rows (default 1). Oldest submissions first. */
  readonly limit?: number
}

export interface Documents {
  readonly kind: DocumentKind
  /** Fails with `AlreadyExists` on a taken id (or, for runs and fleets, a live name in the project). */
  readonly insert: (doc: NewDocument) => Effect.Effect<StoredDocument, StateStoreError>
  readonly get: (id: string) => Effect.Effect<StoredDocument, StateStoreError>
  /** The live (not deleted) row with that name, the newest if several. */
  readonly getByName: (project: string, name: string) => Effect.Effect<StoredDocument, StateStoreError>
  readonly list: (filter?: DocumentFilter, page?: Page) => Effect.Effect<ReadonlyArray<StoredDocument>, StateStoreError>
  /**
   * The ids and documents of the rows `list` gives, in its order: for pages answered to
   * clients, which need nothing else — every column read costs time on a page of 1,000.
   */
  readonly listDocs: (filter?: DocumentFilter, page?: Page) => Effect.Effect<ReadonlyArray<DocumentBody>, StateStoreError>
  readonly update: (id: string, patch: DocumentPatch, options?: UpdateOptions) => Effect.Effect<StoredDocument, StateStoreError>
  /** Removes rows for good (soft deletion is `update(id, { deleted: true })`). */
  readonly remove: (ids: ReadonlyArray<string>) => Effect.Effect<void, StateStoreError>
  /**
   * Takes up to `limit` eligible rows whose lease is free or expired and gives each a fresh
   * lease. Two claimers never get the same row while its lease lasts (`FOR UPDATE SKIP
   * LOCKED` on PostgreSQL).
   */
  readonly claim: (request: ClaimRequest) => Effect.Effect<ReadonlyArray<StoredDocument>, StateStoreError>
  /** Extends a lease still held; `LeaseLost` if it is not. */
  readonly renew: (id: string, token: string, leaseMs: number) => Effect.Effect<Lease, StateStoreError>
  /**
   * Extends many leases in one statement (a replica renewing every row it holds at once, instead
   * of a statement per row). Answers the leases still held, renewed; a row missing from the
   * answer has lost its lease (expired, taken over, or a stale token).
   */
  readonly renewMany: (
    leases: ReadonlyArray<{ readonly id: string; readonly token: string }>,
    leaseMs: number
  ) => Effect.Effect<ReadonlyArray<{ readonly id: string; readonly lease: Lease }>, StateStoreError>
  /** Frees a lease still held; `LeaseLost` if it is not. */
  readonly release: (id: string, token: string) => Effect.Effect<void, StateStoreError>
}

/**
 * The runs repository: the documents of kind `run`, plus the one lookup that reads into them.
 * A run's document is the engine's run record (core/src/engine/RunRecord.ts); the store knows
 * one path of it, `run.jobs[*].job_submissions[*].id`, and keeps the ids found there indexed.
 */
export interface RunDocuments extends Documents {
  /**
   * The live (not deleted) run one of whose jobs has a submission with this id (a job
   * submission never moves to another run); `NotFound` when none has.
   */
  readonly getBySubmissionId: (submissionId: string) => Effect.Effect<StoredDocument, StateStoreError>
}

// ---------------------------------------------------------------------------------------------
// Logs

export const LogSource = Schema.Literal("stdout", "stderr", "runner")
export type LogSource = typeof LogSource.Type

export interface NewLogEvent {
  readonly project: string
  readonly jobSubmissionId: string
  readonly timestamp: Date
  readonly source: LogSource
  readonly message: Uint8Array
}

export interface LogEvent {
  readonly timestamp: Date
  readonly source: LogSource
  readonly message: Uint8Array
}

/** The parameters of upstream's `logs/poll`. */
export interface LogQuery {
  readonly project: string
  readonly jobSubmissionId: string
  /** Only events at or after this time. */
  readonly startTime?: Date
  /** Only events before this time. */
  readonly endTime?: Date
  readonly descending?: boolean
  /** From the previous page's `nextToken`. */
  readonly nextToken?: string
  /** 1..1000, default 1000. */
  readonly limit?: number
  /** Runner events (`diagnose`) instead of the job's stdout and stderr. */
  readonly diagnose?: boolean
}

export interface LogPage {
  readonly events: ReadonlyArray<LogEvent>
  /** Present when more events may follow. */
  readonly nextToken?: string
  /**
   * The position after the last event of this page (present whenever the page has events):
   * pass it as `nextToken` later to get only what was appended since — how followers tail a log.
   */
  readonly cursor?: string
}

export interface Logs {
  /** Appends events in as few statements as possible: hand it whole batches. */
  readonly append: (events: ReadonlyArray<NewLogEvent>) => Effect.Effect<void, StateStoreError>
  readonly poll: (query: LogQuery) => Effect.Effect<LogPage, StateStoreError>
  /** Removes every event of the job submissions. */
  readonly delete: (project: string, jobSubmissionIds: ReadonlyArray<string>) => Effect.Effect<void, StateStoreError>
}

/** The most events one poll returns (upstream's limit). */
export const MAX_LOG_LIMIT = 1000

// ---------------------------------------------------------------------------------------------
// Change feed

/**
 * "Row `id` of `kind` changed": emitted after the change commits, in this process and (on
 * PostgreSQL, through LISTEN/NOTIFY) in every other replica. For `log`, `id` is the job
 * submission that got new events. Consumers re-read the row; the feed carries no data.
 */
export interface Change {
  readonly kind: DocumentKind | "log"
  readonly id: string
  readonly project: string
  /** The document's version after the change (absent for logs and deletions). */
  readonly version?: number
  /**
   * The row as written, on the notice of an update made through this store outside a transaction
   * (other replicas' writes, inserts and transactions' writes come without): whoever follows the
   * feed may take it as read (it is the row at `version`).
   */
  readonly row?: StoredDocument
}

/**
 * What `watch` reports: a document (any write but lease-only ones), or `access` for any change
 * to users, tokens, projects, members or a project's backends.
 */
export type Invalidation =
  | {
    readonly kind: DocumentKind
    readonly id: string
    /**
     * The version the write gave the document (absent for a removal): a listener that has read
     * that version or a later one already may skip the report. Inside a transaction the write is
     * reported before it commits too, so a reader may see the version before it then.
     */
    readonly version?: number
    /**
     * The row as written, on the report of an update made through this store outside a
     * transaction: a listener may take it as read.
     */
    readonly row?: StoredDocument
  }
  | { readonly kind: "access" }

// ---------------------------------------------------------------------------------------------
// Secrets

/**
 * A project secret as stored: `value` is what the server wrote, already encrypted (the store
 * never sees a secret in the clear and never decrypts one).
 */
export interface SecretRecord {
  readonly id: string
  readonly project: string
  readonly name: string
  /** The ciphertext the server's secret cipher wrote. */
  readonly value: string
  readonly createdAt: Date
  readonly updatedAt: Date
}

export interface Secrets {
  /** Creates the secret or replaces its value (a new secret gets `id`); answers the stored row. */
  readonly upsert: (record: { readonly id: string; readonly project: string; readonly name: string; readonly value: string }) => Effect.Effect<SecretRecord, StateStoreError>
  readonly get: (project: string, name: string) => Effect.Effect<SecretRecord, StateStoreError>
  /** A project's secrets, newest first (as upstream lists them). */
  readonly list: (project: string) => Effect.Effect<ReadonlyArray<SecretRecord>, StateStoreError>
  /** Deletes all of `names`, or none: fails `NotFound` naming the missing ones. */
  readonly delete: (project: string, names: ReadonlyArray<string>) => Effect.Effect<void, StateStoreError>
}

/**
 * Short messages between the server replicas that share a store, kept nowhere: what one replica
 * publishes reaches every replica listening at that moment, itself included, in the order it
 * published them; a replica that was not listening never sees it. The services' autoscaler uses
 * it to share request counts and drains (services/ServicePeers.ts).
 */
export interface PeerMessages {
  /** The most bytes one payload may have (PostgreSQL's NOTIFY takes under 8,000). */
  readonly maxBytes: number
  /** Sends `payload` to every replica listening; a payload over `maxBytes` fails `Invalid`. */
  readonly publish: (payload: string) => Effect.Effect<void, StateStoreError>
  /** Calls `onMessage` with each payload published from now on, until the scope closes. */
  readonly listen: (onMessage: (payload: string) => void) => Effect.Effect<void, StateStoreError, Scope.Scope>
}

// ---------------------------------------------------------------------------------------------
// The service

export interface StateStoreService {
  /**
   * Who sees the state: `process` (in memory), `host` (a database on this machine's disk) or
   * `shared` (a database server several replicas connect to). Undefined when not said.
   */
  readonly reach?: "process" | "host" | "shared"
  readonly users: Users
  readonly projects: Projects
  readonly backends: Backends
  readonly repos: Repos
  readonly codes: Codes
  readonly runs: RunDocuments
  readonly jobs: Documents
  readonly instances: Documents
  readonly fleets: Documents
  readonly logs: Logs
  readonly stacks: Stacks
  readonly secrets: Secrets
  /**
   * Runs `effect` in one database transaction: every store call inside sees and makes its
   * changes atomically; a failure or interruption rolls them back. Nested calls join the
   * outer transaction.
   */
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StateStoreError, R>
  /** A live feed of changes from the moment the stream is run. */
  readonly changes: Stream.Stream<Change>
  /** Subscribes now (so nothing after this point is missed) and yields the queue. */
  readonly subscribe: Effect.Effect<Queue.Dequeue<Change>, never, Scope.Scope>
  /**
   * Calls `listener` at once with every change this store learns of, for caches of what was
   * read from it: synchronously after each write made through this store (and again when the
   * transaction around the write ends, committed or not), and when the database announces
   * another replica's write — so one change may be reported more than once, and a change on
   * another replica arrives a moment later (keep such caches short-lived too). Listening stops
   * when the scope closes.
   */
  readonly watch: (listener: (change: Invalidation) => void) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Messages between the server replicas sharing this store; undefined for a store that one
   * process uses alone (`reach` other than `shared`): a server alone has nobody to tell.
   */
  readonly peers?: PeerMessages
}

/**
 * @example
 * const program = Effect.gen(function* () {
 *   const store = yield* StateStore
 *   const run = yield* store.runs.get(runId)
 * })
 */
export class StateStore extends Context.Tag("@dstack-ts/core/StateStore")<StateStore, StateStoreService>() {}

/** The documents repository of a kind. */
export const documents = (store: StateStoreService, kind: DocumentKind): Documents => {
  switch (kind) {
    case "run":
      return store.runs
    case "job":
      return store.jobs
    case "instance":
      return store.instances
    case "fleet":
      return store.fleets
  }
}

/**
 * Decodes stored documents of `kind` with their schema. A document that does not decode is an
 * `Invalid` error naming the table and the row (`fleets row 'f-1' does not decode as a fleet:
 * …`), for the caller to report, never to skip: the store holds only what the server wrote,
 * so such a row means a bug or a hand edit that someone has to see.
 *
 * @example
 * const decodeFleet = decodeDocument("fleet", Fleet)
 * const fleets = yield* Effect.forEach(yield* store.fleets.list({ projects: ["main"] }), decodeFleet)
 */
export const decodeDocument = <A, I>(
  kind: DocumentKind,
  schema: Schema.Schema<A, I>
): ((row: DocumentBody) => Effect.Effect<A, StateStoreError>) => {
  const decode = Schema.decodeUnknown(schema)
  return (row) =>
    decode(row.doc).pipe(
      Effect.mapError(
        (e) =>
          new StateStoreError({
            module: "StateStore",
            method: `${kind}s.decode`,
            reason: "Invalid",
            message: `${kind}s row '${row.id}' does not decode as ${kind === "instance" ? "an" : "a"} ${kind}: ${e.message}`,
            cause: e
          })
      )
    )
}

// ---------------------------------------------------------------------------------------------
// Tokens: random, high entropy, stored as sha256 hex

/** A fresh random token (a UUID v4, the shape upstream issues). */
export const generateToken = (): string => globalThis.crypto.randomUUID()

/** sha256 hex of a token: enough for high-entropy tokens, and fast to look up. */
export const hashToken = (token: string): Effect.Effect<string> =>
  Effect.promise(() => globalThis.crypto.subtle.digest("SHA-256", new TextEncoder().encode(token))).pipe(
    Effect.map((digest) => Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join(""))
  )

/** The user a bearer token belongs to; `NotFound` for an unknown token or an inactive user. */
export const authenticate = (token: string): Effect.Effect<User, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const hash = yield* hashToken(token)
    const user = yield* store.users.getByTokenHash(hash)
    if (!user.active) return yield* fail("StateStore", "authenticate", "NotFound", "the user of this token is inactive")
    return user
  })

/** Creates a user with a fresh token, returned once (the store keeps only its hash). */
export const createUserWithToken = (
  user: Omit<NewUser, "tokenHash">,
  token: string = generateToken()
): Effect.Effect<{ readonly user: User; readonly token: string }, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const created = yield* store.users.create({ ...user, tokenHash: yield* hashToken(token) })
    return { user: created, token }
  })

/** Issues a new token for a user (upstream `refresh_token`); the old one stops working. */
export const refreshToken = (username: string): Effect.Effect<string, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const token = generateToken()
    yield* store.users.setTokenHash(username, yield* hashToken(token))
    return token
  })

// ---------------------------------------------------------------------------------------------
// First start

export interface BootstrapOptions {
  /** The admin's token (`DSTACK_SERVER_ADMIN_TOKEN`); random when absent. */
  readonly adminToken?: string
  readonly adminUsername?: string
  readonly projectName?: string
}

export interface BootstrapResult {
  readonly admin: User
  /** The admin's token when this call created the admin (print it once), else undefined. */
  readonly adminToken: string | undefined
  readonly project: Project
  readonly createdAdmin: boolean
  readonly createdProject: boolean
}

/**
 * On first start: creates the `admin` user and the `main` project, idempotently (also when
 * several replicas start at once). When
 * `adminToken` is given and the admin already exists, the admin's token is set to it, so
 * `DSTACK_SERVER_ADMIN_TOKEN` stays authoritative across restarts (as upstream).
 */
export const bootstrap = (options: BootstrapOptions = {}): Effect.Effect<BootstrapResult, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const adminName = options.adminUsername ?? "admin"
    const projectName = options.projectName ?? "main"
    return yield* store.withTransaction(
      Effect.gen(function* () {
        const existing = yield* store.users.get(adminName).pipe(
          Effect.map((u): User | undefined => u),
          Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined))
        )
        let admin: User
        let adminToken: string | undefined
        if (existing === undefined) {
          const token = options.adminToken ?? generateToken()
          admin = yield* store.users.create({ username: adminName, globalRole: "admin", tokenHash: yield* hashToken(token) })
          adminToken = token
        } else {
          admin = existing
          if (options.adminToken !== undefined) {
            yield* store.users.setTokenHash(adminName, yield* hashToken(options.adminToken))
          }
        }
        const project = yield* store.projects.get(projectName).pipe(
          Effect.map((p): Project | undefined => p),
          Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined))
        )
        if (project !== undefined) {
          return { admin, adminToken, project, createdAdmin: existing === undefined, createdProject: false }
        }
        const created = yield* store.projects.create({ name: projectName, owner: adminName })
        return { admin, adminToken, project: created, createdAdmin: existing === undefined, createdProject: true }
      })
    ).pipe(
      // Two replicas starting at once: the loser's insert fails; its retry finds the rows.
      Effect.retry({ while: (e) => e.reason === "AlreadyExists", times: 3 })
    )
  })
