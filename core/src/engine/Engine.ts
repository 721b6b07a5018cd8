/**
 * The engine: the effectful driver of the pure run and job lifecycles. It is event-driven: a
 * change to a run (a submission, a stop request) or a runner report wakes the run's worker at
 * once; a slow periodic resync only picks up runs nobody holds (after a replica died) and
 * terminates idle instances. Each active run is worked on by one worker in one replica, which
 * holds the run's lease while it lives; a worker computes transitions on a fresh read, writes
 * them against the row's version and only then carries out their effects.
 *
 * This module holds the service, its options and its layer, and puts the parts together:
 * RunClaims (claiming runs, leases), RunWorker (one worker per run), Provisioning (finding a
 * job an instance, waiting for capacity), InstancePool (the instances table) and
 * RunnerFollower (handing a job to its runner and following it), and Reconcile (instances a
 * killed server left busy or provisioning).
 */
import { Context, Duration, Effect, Layer, type Scope } from "effect"
import * as os from "node:os"
import type { RunStatus } from "../domain/Status.ts"
import * as FifoSemaphore from "../internal/FifoSemaphore.ts"
import { BlobStore } from "../ports/BlobStore.ts"
import { StateStore, type StateStoreError } from "../ports/StateStore.ts"
import type { KnownRecord } from "./RunRecord.ts"
import { Compute } from "./Compute.ts"
import * as InstancePool from "./InstancePool.ts"
import * as Fleets from "./Fleets.ts"
import { errorMessage } from "./internal.ts"
import * as Provisioning from "./Provisioning.ts"
import * as Reconcile from "./Reconcile.ts"
import * as RunClaims from "./RunClaims.ts"
import { withRunner } from "./RunnerFollower.ts"
import { waitHealthy } from "./RunnerSession.ts"
import { runWorker } from "./RunWorker.ts"

/** Upstream's default hourly log quota of a job: 50 MiB. */
export const DEFAULT_LOG_QUOTA_PER_JOB_HOUR = 50 * 1024 * 1024

export interface EngineOptions {
  /** Names this replica in leases; unique per process by default. */
  readonly owner?: string
  /** How long a claim lasts without renewal. Default 30 s. */
  readonly leaseMs?: number
  /** How often unheld runs are picked up and idle instances checked. Default 15 s. */
  readonly resyncMs?: number
  /** At most this many runs take a step (read, decide, write) at once. Default 32. */
  readonly stepConcurrency?: number
  /** How long a runner may take to answer on a new instance. Default 10 min (upstream). */
  readonly provisioningTimeoutMs?: number
  /** How long a runner may stay unreachable before its job ends as instance_unreachable. Default 2 min. */
  readonly unreachableMs?: number
  /**
   * Bytes of log output a job may write in an hour (upstream's `DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR`):
   * its runner stops a job past it, which fails as `log_quota_exceeded`. 0: no quota. Default 50 MiB.
   */
  readonly logQuotaPerJobHour?: number
  /** Seconds an instance stays idle before it is terminated, unless the run says otherwise. Default 300. */
  readonly defaultIdleDurationSeconds?: number
  /**
   * An idle instance whose runner reported to this engine less than this long ago is reused
   * without asking its health check first. Default 5 s; 0 always asks.
   */
  readonly runnerFreshMs?: number
  /** How many jobs may plan and provision at the same time. Default 16. */
  readonly provisioningConcurrency?: number
  /**
   * How often instances left busy or provisioning with nobody working on them (a server killed
   * mid-placement) are settled (Reconcile.ts); also once at start. Default 60 s.
   */
  readonly reconcileMs?: number
}

export interface EngineService {
  readonly owner: string
  /**
   * Wakes the worker of a run now (the change feed does this too; this saves a round trip).
   * `stored`: the record just written, at its version, which a worker claiming the run at that
   * version takes as it is instead of decoding the row.
   */
  readonly wake: (runId: string, stored?: KnownRecord) => Effect.Effect<void>
  /** Runs this replica works on right now. */
  readonly activeRuns: Effect.Effect<ReadonlyArray<string>>
}

export class Engine extends Context.Tag("@dstack-ts/core/Engine")<Engine, EngineService>() {}

export const ACTIVE_RUN_STATUSES: ReadonlyArray<RunStatus> = ["pending", "submitted", "provisioning", "running", "terminating"]

export const make = (
  options: EngineOptions = {}
): Effect.Effect<EngineService, StateStoreError, StateStore | Compute | BlobStore | Scope.Scope> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const compute = yield* Compute
    const blobs = yield* BlobStore
    const owner = options.owner ?? `${os.hostname()}-${process.pid}-${crypto.randomUUID().slice(0, 8)}`
    const leaseMs = options.leaseMs ?? 30_000
    const resyncMs = options.resyncMs ?? 15_000
    const provisioningTimeoutMs = options.provisioningTimeoutMs ?? 10 * 60_000
    const unreachableMs = options.unreachableMs ?? 2 * 60_000
    const logQuotaPerJobHour = options.logQuotaPerJobHour ?? DEFAULT_LOG_QUOTA_PER_JOB_HOUR

    const pool = InstancePool.make({
      store,
      compute,
      owner,
      runnerFreshMs: options.runnerFreshMs ?? 5_000,
      defaultIdleDurationSeconds: options.defaultIdleDurationSeconds ?? 300,
      creationLeaseMs: leaseMs
    })
    const provisioner = yield* Provisioning.make({
      store,
      compute,
      pool,
      provisioningTimeoutMs,
      concurrency: options.provisioningConcurrency ?? 16
    })
    // SSH fleets: hosts provisioned and removed, idle ones checked at each resync.
    yield* Fleets.startProcessor({ store, compute, owner, provisioningTimeoutMs, healthCheckMs: resyncMs, signalCapacity: provisioner.signalCapacity })
    // At most this many workers read, decide and write at once. Thousands of runs taken at once
    // would otherwise each put a write on the database queue together, and the one renewal of
    // every lease would wait behind all of them until the leases ran out.
    const stepPermits = yield* FifoSemaphore.make(options.stepConcurrency ?? 32)
    const workerOptions = {
      store,
      compute,
      pool,
      provisioner,
      follower: { store, blobs, compute, provisioningTimeoutMs, unreachableMs, logQuotaPerJobHour },
      stepPermits,
      provisioningTimeoutMs
    }
    const claims = yield* RunClaims.make({
      store,
      owner,
      leaseMs,
      activeStatuses: ACTIVE_RUN_STATUSES,
      work: (runId, lease, handle, row, stored) => runWorker(workerOptions, runId, lease, handle, row, stored)
    })

    // Unheld runs are claimed, and idle instances past their idle duration terminated.
    const resync = claims.claimUnheld.pipe(
      Effect.zipRight(pool.terminateExpiredIdle),
      Effect.catchAll((e) => Effect.logWarning(`resync failed: ${errorMessage(e)}`))
    )
    yield* resync.pipe(
      Effect.zipRight(Effect.sleep(Duration.millis(resyncMs))),
      Effect.forever,
      Effect.forkScoped
    )

    // Instances a killed server left busy or provisioning: settled at start and then periodically.
    const reconciler = Reconcile.make({
      store,
      owner,
      activeRunStatuses: ACTIVE_RUN_STATUSES,
      graceMs: leaseMs,
      provisioningTimeoutMs,
      runnerAnswers: (project, pd) => withRunner(compute, project, pd, (client) => waitHealthy(client, 3_000)).pipe(Effect.isSuccess),
      release: pool.release,
      terminate: pool.terminate
    })
    yield* reconciler.pass.pipe(
      Effect.catchAll((e) => Effect.logWarning(`instance reconcile failed: ${errorMessage(e)}`)),
      Effect.zipRight(Effect.sleep(Duration.millis(options.reconcileMs ?? 60_000))),
      Effect.forever,
      Effect.forkScoped
    )

    return {
      owner,
      wake: (runId, stored) => claims.acquire(runId, stored?.version, stored),
      activeRuns: claims.activeRuns
    }
  })

/** The engine as a layer: it runs for as long as the layer's scope is open. */
export const layer = (options: EngineOptions = {}): Layer.Layer<Engine, StateStoreError, StateStore | Compute | BlobStore> =>
  Layer.scoped(Engine, make(options))
