/**
 * Versioned schema migrations of the SQL state store. Each runs once, in order, recorded in
 * `dstack_migrations`; all pending ones apply in one transaction under an advisory lock, so
 * two servers starting at once on one PostgreSQL never apply a migration twice. Never edit a
 * released migration: append a new one.
 */
import { Effect } from "effect"
import type { SqlDriver, SqlError } from "./SqlDriver.ts"

export interface Migration {
  readonly version: number
  readonly name: string
  readonly statements: ReadonlyArray<string>
}

// The lock key is arbitrary but fixed: every dstack-ts server uses the same one.
const MIGRATION_LOCK_KEY = 7_402_194_311

const documentTable = (table: string, kind: string, uniqueLiveName: boolean): ReadonlyArray<string> => [
  `CREATE TABLE ${table} (
    id text PRIMARY KEY,
    project text NOT NULL,
    name text NOT NULL,
    status text NOT NULL,
    parent_id text,
    user_name text,
    repo_id text,
    submitted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted boolean NOT NULL DEFAULT false,
    version integer NOT NULL DEFAULT 1,
    lease_owner text,
    lease_token text,
    lease_expires_at timestamptz,
    doc jsonb NOT NULL
  )`,
  `CREATE INDEX ${table}_project_submitted ON ${table} (project, submitted_at, id)`,
  `CREATE INDEX ${table}_submitted ON ${table} (submitted_at, id)`,
  `CREATE INDEX ${table}_status ON ${table} (status, submitted_at) WHERE NOT deleted`,
  `CREATE INDEX ${table}_parent ON ${table} (parent_id) WHERE parent_id IS NOT NULL`,
  `CREATE INDEX ${table}_name ON ${table} (project, name)`,
  ...(uniqueLiveName ? [`CREATE UNIQUE INDEX ${table}_live_name ON ${table} (project, name) WHERE NOT deleted`] : []),
  // Wake listeners on every change a reader cares about; lease-only updates (claims,
  // renewals) are not changes.
  `CREATE TRIGGER ${table}_changed AFTER INSERT OR DELETE OR UPDATE OF name, status, parent_id, deleted, doc
    ON ${table} FOR EACH ROW EXECUTE FUNCTION dstack_notify_change('${kind}')`
]

const DOCUMENT_TABLES = ["runs", "jobs", "instances", "fleets"]

/** A jsonb column's value, with a JSON string read as the JSON text it holds. */
const unwrap = (column: string) => `CASE WHEN jsonb_typeof(${column}) = 'string' THEN (${column} #>> '{}')::jsonb ELSE ${column} END`

export const migrations: ReadonlyArray<Migration> = [
  {
    version: 1,
    name: "users, projects, backends, repos, code, documents, logs",
    statements: [
      `CREATE FUNCTION dstack_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
          IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
          PERFORM pg_notify('dstack_changes', json_build_object('kind', TG_ARGV[0], 'id', r.id, 'project', r.project)::text);
          RETURN NULL;
        END $$`,
      `CREATE FUNCTION dstack_notify_logs() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('dstack_changes', json_build_object('kind', 'log', 'id', s.job_submission_id, 'project', s.project)::text)
            FROM (SELECT DISTINCT project, job_submission_id FROM new_rows) s;
          RETURN NULL;
        END $$`,
      `CREATE TABLE users (
        id text PRIMARY KEY,
        username text NOT NULL UNIQUE,
        global_role text NOT NULL CHECK (global_role IN ('admin', 'user')),
        email text,
        token_hash text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        active boolean NOT NULL DEFAULT true
      )`,
      `CREATE TABLE projects (
        id text PRIMARY KEY,
        name text NOT NULL UNIQUE,
        owner text NOT NULL REFERENCES users (username) ON UPDATE CASCADE,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        is_public boolean NOT NULL DEFAULT false
      )`,
      `CREATE TABLE members (
        project text NOT NULL REFERENCES projects (name) ON DELETE CASCADE ON UPDATE CASCADE,
        username text NOT NULL REFERENCES users (username) ON DELETE CASCADE ON UPDATE CASCADE,
        project_role text NOT NULL CHECK (project_role IN ('admin', 'manager', 'user')),
        member_num serial,
        PRIMARY KEY (project, username)
      )`,
      `CREATE INDEX members_username ON members (username)`,
      `CREATE TABLE backends (
        project text NOT NULL REFERENCES projects (name) ON DELETE CASCADE ON UPDATE CASCADE,
        type text NOT NULL,
        config jsonb NOT NULL,
        PRIMARY KEY (project, type)
      )`,
      `CREATE TABLE repos (
        project text NOT NULL REFERENCES projects (name) ON DELETE CASCADE ON UPDATE CASCADE,
        repo_id text NOT NULL,
        type text NOT NULL,
        info jsonb NOT NULL,
        creds jsonb,
        PRIMARY KEY (project, repo_id)
      )`,
      `CREATE TABLE codes (
        project text NOT NULL,
        repo_id text NOT NULL,
        hash text NOT NULL,
        blob_key text NOT NULL,
        size bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (project, repo_id, hash),
        FOREIGN KEY (project, repo_id) REFERENCES repos (project, repo_id) ON DELETE CASCADE ON UPDATE CASCADE
      )`,
      ...documentTable("runs", "run", true),
      ...documentTable("jobs", "job", false),
      ...documentTable("instances", "instance", false),
      ...documentTable("fleets", "fleet", true),
      // `diagnose` (runner events) is a key column so that a poll is one ordered range of
      // the index, whichever of the two streams it reads.
      `CREATE TABLE logs (
        seq bigserial PRIMARY KEY,
        project text NOT NULL,
        job_submission_id text NOT NULL,
        diagnose boolean NOT NULL,
        ts_ms bigint NOT NULL,
        source smallint NOT NULL,
        message bytea NOT NULL
      )`,
      `CREATE INDEX logs_stream ON logs (project, job_submission_id, diagnose, ts_ms, seq)`,
      `CREATE TRIGGER logs_appended AFTER INSERT ON logs REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION dstack_notify_logs()`
    ]
  },
  {
    version: 2,
    name: "stacks, stack frames, per-user default stack access",
    statements: [
      `CREATE TABLE stacks (
        owner text NOT NULL,
        name text NOT NULL,
        access text NOT NULL CHECK (access IN ('public', 'private')),
        head text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (owner, name)
      )`,
      `CREATE INDEX stacks_public ON stacks (name) WHERE access = 'public'`,
      `CREATE TABLE stack_frames (
        id text PRIMARY KEY,
        owner text NOT NULL,
        name text NOT NULL,
        message text,
        params jsonb NOT NULL,
        attachments jsonb NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'committed')),
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        committed_at timestamptz,
        FOREIGN KEY (owner, name) REFERENCES stacks (owner, name) ON DELETE CASCADE ON UPDATE CASCADE
      )`,
      `CREATE INDEX stack_frames_history ON stack_frames (owner, name, committed_at DESC) WHERE status = 'committed'`,
      `CREATE TABLE stack_settings (
        username text PRIMARY KEY,
        default_access text NOT NULL CHECK (default_access IN ('public', 'private'))
      )`
    ]
  },
  {
    version: 3,
    name: "announce changes to users, projects and members (servers cache who may do what)",
    statements: [
      // One notification per statement, with nothing to re-read: every replica drops what it
      // cached about callers and project roles (the store's `watch` reports `access`).
      `CREATE FUNCTION dstack_notify_access() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('dstack_changes', json_build_object('kind', 'access', 'id', TG_TABLE_NAME, 'project', '')::text);
          RETURN NULL;
        END $$`,
      ...["users", "projects", "members"].map(
        (table) =>
          `CREATE TRIGGER ${table}_access_changed AFTER INSERT OR UPDATE OR DELETE ON ${table}
            FOR EACH STATEMENT EXECUTE FUNCTION dstack_notify_access()`
      )
    ]
  },
  {
    version: 4,
    name: "announce changes to project backends (servers cache them for planning)",
    statements: [
      `CREATE TRIGGER backends_access_changed AFTER INSERT OR UPDATE OR DELETE ON backends
        FOR EACH STATEMENT EXECUTE FUNCTION dstack_notify_access()`
    ]
  },
  {
    version: 5,
    name: "document change notices carry the row's new version",
    statements: [
      // A reader that already holds that version (its own write, a claim that read it) can drop
      // the notice instead of reading the row again.
      `CREATE OR REPLACE FUNCTION dstack_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
          IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('dstack_changes', json_build_object('kind', TG_ARGV[0], 'id', OLD.id, 'project', OLD.project)::text);
          ELSE
            PERFORM pg_notify('dstack_changes', json_build_object('kind', TG_ARGV[0], 'id', NEW.id, 'project', NEW.project, 'version', NEW.version)::text);
          END IF;
          RETURN NULL;
        END $$`
    ]
  },
  {
    version: 6,
    name: "project secrets (values encrypted by the server)",
    statements: [
      `CREATE TABLE secrets (
        id text PRIMARY KEY,
        project text NOT NULL REFERENCES projects (name) ON DELETE CASCADE ON UPDATE CASCADE,
        name text NOT NULL,
        value text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        UNIQUE (project, name)
      )`
    ]
  },
  {
    version: 7,
    name: "each user's SSH key pair (upstream's user key, for attach through the SSH proxy)",
    statements: [
      `ALTER TABLE users ADD COLUMN ssh_public_key text, ADD COLUMN ssh_private_key text`
    ]
  },
  {
    version: 8,
    name: "runs found by a job submission's id (the SSH proxy's lookup)",
    statements: [
      // The submission ids of a run's document, kept by the database as the document changes. A
      // stored column, not an index on the expression: an update that leaves the ids as they
      // were (most of the engine's writes) then stays a heap-only update, as it is without it.
      // The `postgres` driver stored a document as a JSON string holding its text (it encoded
      // the JSON parameter once more), PGlite as the object: the ids are read from either.
      // (Migration 9 stores the documents themselves and derives the column from them.)
      `ALTER TABLE runs ADD COLUMN submission_ids jsonb GENERATED ALWAYS AS (jsonb_path_query_array(
          CASE WHEN jsonb_typeof(doc) = 'string' THEN (doc #>> '{}')::jsonb ELSE doc END,
          '$.run.jobs[*].job_submissions[*].id')) STORED`,
      // Without the pending list: PGlite has no autovacuum to empty it, and a lookup reads it whole.
      `CREATE INDEX runs_submission_ids ON runs USING gin (submission_ids jsonb_path_ops) WITH (fastupdate = off) WHERE NOT deleted`
    ]
  },
  {
    version: 9,
    name: "JSON columns hold JSON values, not JSON strings of their text",
    statements: [
      // Until this version the `postgres` driver stored every JSON value as a JSON string of its
      // text (the statements now cast a text parameter: sql/Statements.ts `json`); PGlite stored
      // the values. No column holds a top-level string by design (documents, configs, infos,
      // creds and params are objects, attachments an array), so a string is such a text: read
      // it as JSON. The rewrite changes nothing a reader sees: no change notices, no version bump.
      ...DOCUMENT_TABLES.map((t) => `ALTER TABLE ${t} DISABLE TRIGGER ${t}_changed`),
      // Derived from the documents themselves from now on; dropped first, so that the table is
      // rewritten once (by the ADD COLUMN below), not once more for each unwrapped row.
      `DROP INDEX runs_submission_ids`,
      `ALTER TABLE runs DROP COLUMN submission_ids`,
      ...DOCUMENT_TABLES.map((t) => `UPDATE ${t} SET doc = ${unwrap("doc")} WHERE jsonb_typeof(doc) = 'string'`),
      `UPDATE backends SET config = ${unwrap("config")} WHERE jsonb_typeof(config) = 'string'`,
      `UPDATE repos SET info = ${unwrap("info")}, creds = ${unwrap("creds")}
        WHERE jsonb_typeof(info) = 'string' OR jsonb_typeof(creds) = 'string'`,
      `UPDATE stack_frames SET params = ${unwrap("params")}, attachments = ${unwrap("attachments")}
        WHERE jsonb_typeof(params) = 'string' OR jsonb_typeof(attachments) = 'string'`,
      ...DOCUMENT_TABLES.map((t) => `ALTER TABLE ${t} ENABLE TRIGGER ${t}_changed`),
      `ALTER TABLE runs ADD COLUMN submission_ids jsonb GENERATED ALWAYS AS (
          jsonb_path_query_array(doc, '$.run.jobs[*].job_submissions[*].id')) STORED,
        ADD CONSTRAINT runs_doc_not_text CHECK (jsonb_typeof(doc) <> 'string')`,
      `CREATE INDEX runs_submission_ids ON runs USING gin (submission_ids jsonb_path_ops) WITH (fastupdate = off) WHERE NOT deleted`,
      // A server of an earlier version still running beside this one would store text again
      // (and its runs would be found by no submission id): the database refuses such a write.
      ...DOCUMENT_TABLES.filter((t) => t !== "runs").map(
        (t) => `ALTER TABLE ${t} ADD CONSTRAINT ${t}_doc_not_text CHECK (jsonb_typeof(doc) <> 'string')`
      ),
      `ALTER TABLE backends ADD CONSTRAINT backends_config_not_text CHECK (jsonb_typeof(config) <> 'string')`,
      `ALTER TABLE repos ADD CONSTRAINT repos_info_not_text CHECK (jsonb_typeof(info) <> 'string'),
        ADD CONSTRAINT repos_creds_not_text CHECK (jsonb_typeof(creds) <> 'string')`,
      `ALTER TABLE stack_frames ADD CONSTRAINT stack_frames_params_not_text CHECK (jsonb_typeof(params) <> 'string'),
        ADD CONSTRAINT stack_frames_attachments_not_text CHECK (jsonb_typeof(attachments) <> 'string')`
    ]
  }
]

/** Applies the pending migrations; returns the versions it applied (empty when up to date). */
export const migrate = (
  driver: SqlDriver,
  list: ReadonlyArray<Migration> = migrations
): Effect.Effect<ReadonlyArray<number>, SqlError> =>
  driver.transaction((tx) =>
    Effect.gen(function* () {
      // Taken first, before the migrations table may exist: two concurrent
      // `CREATE TABLE IF NOT EXISTS` can still collide on PostgreSQL.
      yield* tx.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`)
      yield* tx.query(
        `CREATE TABLE IF NOT EXISTS dstack_migrations (
          version integer PRIMARY KEY,
          name text NOT NULL,
          applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )`
      )
      const rows = yield* tx.query(`SELECT version FROM dstack_migrations`)
      const done = new Set(rows.map((r) => Number(r.version)))
      const applied: Array<number> = []
      for (const m of [...list].sort((a, b) => a.version - b.version)) {
        if (done.has(m.version)) continue
        for (const statement of m.statements) yield* tx.query(statement)
        yield* tx.query(`INSERT INTO dstack_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name])
        applied.push(m.version)
      }
      return applied
    })
  )
