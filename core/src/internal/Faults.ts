/**
 * Named kill points, for the crash tests (test/reliability/crash.test.ts): with the environment
 * variable `DSTACK_FAULT=point[:n]` the process kills itself with SIGKILL the n-th time (default
 * the first) it reaches the point named `point`, as a power cut or `kill -9` would stop it
 * there. Without the variable a kill point is one comparison; nothing else reads it.
 *
 * When `DSTACK_FAULT_LOG` names a file, the kill is first recorded there (one line, written
 * synchronously), so a test can tell the process died at the point and not of something else.
 */
import * as fs from "node:fs"
import { Effect } from "effect"

/** Every kill point, in the order a run meets them. */
export const FAULT_POINTS = [
  /** A run was stored by runs/apply, before the engine is woken and before the client has its answer. */
  "run.accepted",
  /** A run's worker wrote a step (any status change of the run or its jobs). */
  "run.written",
  /** A job got an instance (taken idle or newly made), before its worker has the event. */
  "job.placed",
  /** The job is about to be handed to its runner. */
  "job.handing",
  /** The runner took the job, before the worker has written that it did. */
  "job.handed",
  /** Log lines of a job were stored, before the follower moves on. */
  "logs.stored",
  /** A run's finished state (done, failed, terminated) was written. */
  "run.finished"
] as const

export type FaultPoint = (typeof FAULT_POINTS)[number]

const env = typeof process !== "undefined" ? process.env : {}
const configured = (env.DSTACK_FAULT ?? "").trim()

const parse = (text: string): { readonly point: string; remaining: number } | undefined => {
  if (text === "") return undefined
  const [point, count] = text.split(":")
  const n = count === undefined ? 1 : Number(count)
  if (!(FAULT_POINTS as ReadonlyArray<string>).includes(point) || !Number.isInteger(n) || n < 1) {
    throw new Error(`DSTACK_FAULT=${text}: expected point[:n] with a point among ${FAULT_POINTS.join(", ")} and n ≥ 1`)
  }
  return { point, remaining: n }
}

const armed = parse(configured)

/** Kills the process here if `DSTACK_FAULT` names this point and this is its n-th visit. */
export const faultPoint = (point: FaultPoint): void => {
  if (armed === undefined || armed.point !== point) return
  armed.remaining -= 1
  if (armed.remaining > 0) return
  const log = env.DSTACK_FAULT_LOG
  if (log !== undefined && log !== "") fs.appendFileSync(log, `${JSON.stringify({ point: configured, pid: process.pid, at: Date.now() })}\n`)
  process.kill(process.pid, "SIGKILL")
}

/** `faultPoint` as an Effect. */
export const atFaultPoint = (point: FaultPoint): Effect.Effect<void> => Effect.sync(() => faultPoint(point))
