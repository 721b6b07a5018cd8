/**
 * Reading a run's log to the end, or following it while the run is active, over any source
 * that pages through stored log events. The client plugs in the logs API (poll, and the live
 * stream as a faster `wait`); the logic here makes sure no line is lost or repeated: after the
 * run is seen finished, one last drain reads everything that was stored before it finished.
 */

/** One stored log event. */
export interface LogEvent {
  readonly timestamp: Date
  readonly message: Uint8Array
}

/** One page of events after a cursor. */
export interface LogPage {
  readonly logs: ReadonlyArray<LogEvent>
  /** Where the next page starts: after the last event of this page (opaque to this module). */
  readonly cursor: string | undefined
  /** True when more events were stored than this page returned. */
  readonly more: boolean
}

export interface LogSource {
  /** The events after `cursor`, or from `since` when there is no cursor yet. */
  readonly poll: (args: { readonly since: Date | undefined; readonly cursor: string | undefined }) => Promise<LogPage>
  /** Whether the run has finished (no event is stored after that). */
  readonly isFinished: () => Promise<boolean>
  /** Waits until new events may be there: a live stream resolves at once, a timer otherwise. */
  readonly wait: (signal: AbortSignal | undefined) => Promise<void>
}

export interface FollowOptions {
  readonly since?: Date | undefined
  /** Keep reading until the run finishes (default true); false stops at the log so far. */
  readonly follow?: boolean | undefined
  readonly signal?: AbortSignal | undefined
}

/** The log's bytes, in order, each event once. */
export async function* followLogs(source: LogSource, options: FollowOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  const follow = options.follow !== false
  let cursor: string | undefined
  for (;;) {
    if (options.signal?.aborted) return
    // Asked before draining: if the run was already finished, this drain reads its whole log.
    const finished = follow ? await source.isFinished() : true
    for (;;) {
      const page = await source.poll({ since: options.since, cursor })
      for (const event of page.logs) yield event.message
      if (page.cursor !== undefined) cursor = page.cursor
      if (!page.more || page.logs.length === 0) break
      if (options.signal?.aborted) return
    }
    if (finished) return
    await source.wait(options.signal)
  }
}
