/**
 * Small helpers the engine's modules share: finding a job of a run by its submission, and the
 * one-line message of an error for logs and job reasons. Not exported from the package.
 */
import type { Job } from "../domain/Job.ts"
import { latestSubmission } from "../domain/Job.ts"
import { Run } from "../domain/Run.ts"

/** The job whose latest submission is `submissionId`, with its index in the run. */
export const jobOfSubmission = (run: Run, submissionId: string): { readonly index: number; readonly job: Job } | undefined => {
  const index = run.jobs.findIndex((job) => latestSubmission(job)?.id === submissionId)
  return index < 0 ? undefined : { index, job: run.jobs[index] }
}

/** The run with its job at `index` replaced. */
export const withJob = (run: Run, index: number, job: Job): Run =>
  new Run({ ...run, jobs: run.jobs.map((j, i) => (i === index ? job : j)) }, { disableValidation: true })

/** An error's message, else its reason, else the value as text. */
export const errorMessage = (e: unknown): string =>
  e && typeof e === "object" && "message" in e && typeof (e as any).message === "string" && (e as any).message !== ""
    ? (e as any).message
    : String((e as any)?.reason ?? e)
