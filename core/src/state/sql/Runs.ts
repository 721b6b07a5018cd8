/**
 * What the `runs` table has beyond the document tables' common shape (Documents.ts): its
 * `submission_ids` column (migration 8), the ids of the job submissions in the run's document,
 * which the database derives from the document on every write and keeps in a GIN index, so a
 * run is found by one of its submissions without reading the runs.
 */
import { Effect } from "effect"
import type { RunDocuments } from "../../ports/StateStore.ts"
import type { SqlContext } from "./Context.ts"
import { documentFromRow } from "./Documents.ts"
import { failWith, toStoreError } from "./Errors.ts"

export const make = ({ sql }: SqlContext): Pick<RunDocuments, "getBySubmissionId"> => ({
  getBySubmissionId: (submissionId) =>
    sql(
      `SELECT * FROM runs WHERE submission_ids @> jsonb_build_array($1::text) AND NOT deleted ORDER BY submitted_at DESC, id DESC LIMIT 1`,
      [submissionId]
    ).pipe(
      Effect.mapError(toStoreError("runs.getBySubmissionId")),
      Effect.flatMap((rows) =>
        rows.length === 0
          ? failWith("runs.getBySubmissionId", "NotFound", `no run has a job submission with id '${submissionId}'`)
          : Effect.succeed(documentFromRow("run", rows[0]))
      )
    )
})
