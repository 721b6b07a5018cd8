// StateStore implementations that ship in core: the shared SQL store and its embedded
// (PGlite) driver. The PostgreSQL driver lives in @dstack-ts/state-postgres.
export * as EmbeddedStateStore from "./EmbeddedStateStore.ts"
export * as SqlStateStore from "./SqlStateStore.ts"
export * as SqlDriver from "./SqlDriver.ts"
export * as StateMigrations from "./migrations.ts"
export * as FileLogs from "./FileLogs.ts"
