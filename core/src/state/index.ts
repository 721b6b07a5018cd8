// The shared SQL state store that the StateStore plugins run over their drivers
// (@dstack-ts/state-embedded: PGlite; @dstack-ts/state-postgres: a PostgreSQL server).
export * as SqlStateStore from "./SqlStateStore.ts"
export * as SqlDriver from "./SqlDriver.ts"
export * as StateMigrations from "./migrations.ts"
