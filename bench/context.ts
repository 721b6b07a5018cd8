// What every benchmark gets from bench/run.ts: the size (default or full), the PostgreSQL URL
// when the state backend is PostgreSQL, why Docker is unavailable (if it is), a logger.
export interface BenchContext {
  readonly full: boolean
  readonly databaseUrl: string | undefined
  readonly dockerMissing: string | undefined
  readonly log: (line: string) => void
}
