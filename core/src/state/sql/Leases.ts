/**
 * Claim-with-lease on the document tables of the SQL state store: how several server replicas
 * share the work on runs, jobs, instances and fleets. A claim takes unleased (or expired)
 * rows with `FOR UPDATE SKIP LOCKED` and gives each a random token; writes under a lease
 * carry the token (Documents.ts checks it), renewals extend it, release drops it.
 */
import { Effect } from "effect"
import type { ClaimRequest, DocumentKind, Documents, Lease } from "../../ports/StateStore.ts"
import type { SqlContext } from "./Context.ts"
import { documentFromRow, filterClauses, type LeaseMethods, TABLES } from "./Documents.ts"
import { failWith, toStoreError } from "./Errors.ts"
import { Params, toDate, whereSql } from "./Statements.ts"

export const make = (
  { sql }: SqlContext,
  kind: DocumentKind
): Pick<Documents, LeaseMethods> => {
  const table = TABLES[kind]
  const m = (name: string) => `${kind}s.${name}`
  return {
    claim: (req: ClaimRequest) => {
      if (!(req.leaseMs > 0)) return failWith(m("claim"), "Invalid", "leaseMs must be positive")
      const p = new Params()
      const where = filterClauses(req.filter, p)
      where.push(`(lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())`)
      const limit = p.add(Math.max(1, Math.floor(req.limit ?? 1)))
      const owner = p.add(req.owner)
      const ms = p.add(Math.ceil(req.leaseMs))
      // SKIP LOCKED: a row another claimer is taking right now is simply not ours; the
      // lease condition is re-checked on the locked row, so a row claimed and committed
      // meanwhile is skipped too.
      return sql(
        `WITH picked AS (
           SELECT id FROM ${table} ${whereSql(where)}
           ORDER BY submitted_at, id LIMIT ${limit}
           FOR UPDATE SKIP LOCKED
         )
         UPDATE ${table} t SET lease_owner = ${owner}, lease_token = gen_random_uuid()::text,
           lease_expires_at = clock_timestamp() + ${ms}::integer * interval '1 millisecond'
         FROM picked WHERE t.id = picked.id
         RETURNING t.*`,
        p.values
      ).pipe(
        Effect.mapError(toStoreError(m("claim"))),
        Effect.map((rows) =>
          rows.map((r) => documentFromRow(kind, r)).sort((a, b) => a.submittedAt.getTime() - b.submittedAt.getTime() || (a.id < b.id ? -1 : 1))
        )
      )
    },
    renew: (id, token, leaseMs) =>
      sql(
        `UPDATE ${table} SET lease_expires_at = clock_timestamp() + $3::integer * interval '1 millisecond'
         WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()
         RETURNING lease_owner, lease_token, lease_expires_at`,
        [id, token, Math.ceil(leaseMs)]
      ).pipe(
        Effect.mapError(toStoreError(m("renew"))),
        Effect.flatMap((rows) =>
          rows.length === 0
            ? failWith(m("renew"), "LeaseLost", `the lease on ${kind} '${id}' is lost or expired`)
            : Effect.succeed<Lease>({
                owner: String(rows[0].lease_owner),
                token: String(rows[0].lease_token),
                expiresAt: toDate(rows[0].lease_expires_at)
              })
        )
      ),
    renewMany: (leases, leaseMs) => {
      if (!(leaseMs > 0)) return failWith(m("renewMany"), "Invalid", "leaseMs must be positive")
      if (leases.length === 0) return Effect.succeed([])
      return sql(
        `UPDATE ${table} t SET lease_expires_at = clock_timestamp() + $3::integer * interval '1 millisecond'
         FROM unnest($1::text[], $2::text[]) AS l(id, token)
         WHERE t.id = l.id AND t.lease_token = l.token AND t.lease_expires_at > clock_timestamp()
         RETURNING t.id, t.lease_owner, t.lease_token, t.lease_expires_at`,
        [leases.map((l) => l.id), leases.map((l) => l.token), Math.ceil(leaseMs)]
      ).pipe(
        Effect.mapError(toStoreError(m("renewMany"))),
        Effect.map((rows) =>
          rows.map((r) => ({
            id: String(r.id),
            lease: { owner: String(r.lease_owner), token: String(r.lease_token), expiresAt: toDate(r.lease_expires_at) }
          }))
        )
      )
    },
    release: (id, token) =>
      sql(
        `UPDATE ${table} SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
         WHERE id = $1 AND lease_token = $2 RETURNING id`,
        [id, token]
      ).pipe(
        Effect.mapError(toStoreError(m("release"))),
        Effect.flatMap((rows) =>
          rows.length === 0 ? failWith(m("release"), "LeaseLost", `the lease on ${kind} '${id}' is not held`) : Effect.void
        )
      )
  }
}
