import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Schema } from "effect"
import { Client } from "../src/node.ts"
import { AnyRunConfiguration } from "../../core/src/domain/Configuration.ts"
import { ClientError } from "../src/ClientError.ts"
import { fakeRuns, startTestServer, TOKENS } from "./support.ts"
import type { TestServer } from "./support.ts"

let server: TestServer
let client: Client
beforeAll(async () => {
  server = await startTestServer()
  client = Client.connect({ name: "main", url: server.url, token: TOKENS.alice }, { retries: 0 })
})
afterAll(async () => {
  await server?.close()
})

const text = async (it: AsyncIterable<Uint8Array>) => {
  const dec = new TextDecoder()
  let out = ""
  for await (const chunk of it) out += dec.decode(chunk)
  return out
}

describe("client.runs", () => {
  it("lists active runs by default and all with all: true, as Run objects", async () => {
    expect((await client.runs.list()).map((r) => [r.name, r.status])).toEqual([["live-run", "running"]])
    const all = await client.runs.list({ all: true })
    expect(all.map((r) => r.name)).toEqual(["done-run", "live-run"])
    expect(all[0].finished).toBe(true)
    expect(all[0].entity.submittedAt).toBeInstanceOf(Date)
  })

  it("gets a run, undefined for a missing one, and refreshes it", async () => {
    const run = (await client.runs.get("live-run"))!
    expect(run.status).toBe("running")
    expect(await client.runs.get("ghost")).toBeUndefined()
    fakeRuns.runs.set("live-run", "terminating")
    expect((await run.refresh()).status).toBe("terminating")
    fakeRuns.runs.set("live-run", "running")
  })

  it("stops (gracefully or aborting) and deletes by name", async () => {
    const run = (await client.runs.get("live-run"))!
    await run.stop()
    await run.stop({ abort: true })
    await client.runs.delete(["done-run"])
    expect(fakeRuns.stopped.slice(-2)).toEqual([{ names: ["live-run"], abort: false }, { names: ["live-run"], abort: true }])
    expect(fakeRuns.deleted.at(-1)).toEqual(["done-run"])
  })

  it("plans a configuration as a run spec without a repo and applies the plan", async () => {
    const task = Schema.decodeUnknownSync(AnyRunConfiguration)({ type: "task", commands: ["echo hi"] })
    const run = await client.runs.submit(task, { runName: "fresh-run" })
    expect([run.name, run.status]).toEqual(["fresh-run", "submitted"])
    const sent = fakeRuns.plans.at(-1) as any
    expect(sent.run_spec).toMatchObject({ run_name: "fresh-run", repo_id: "virtual", repo_data: { repo_type: "virtual" } })
    expect(sent.run_spec.configuration.commands).toEqual(["echo hi"])
  })

  it("returns the whole log of a finished run across pages", async () => {
    const run = (await client.runs.get("done-run"))!
    expect(await text(run.logs())).toBe("line 0\nline 1\nline 2\n")
    expect(server.hits["/api/project/main/logs/poll"]).toBe(2)
  })

  it("follows a live run through the event stream until it ends", async () => {
    const run = (await client.runs.get("live-run"))!
    expect(await text(run.logs())).toBe("line 0\nline 1\nline 2\n")
    expect(server.hits["/api/project/main/logs/stream"]).toBe(1)
    // without follow, an active run's log so far comes from the pages
    expect(await text(run.logs({ follow: false }))).toBe("line 0\nline 1\nline 2\n")
  })

  it("rejects with the server's error for a run that vanished, and refuses to attach to a run that has no job", async () => {
    const run = (await client.runs.get("live-run"))!
    fakeRuns.runs.delete("live-run")
    const error = await text(run.logs()).catch((e) => e)
    expect(error).toBeInstanceOf(ClientError)
    expect(error).toMatchObject({ reason: "NotFound", status: 400, msg: "Run live-run does not exist in project main" })
    fakeRuns.runs.set("live-run", "running")
    await expect(run.attach()).rejects.toMatchObject({ reason: "NotAvailable", msg: "run live-run has no job to attach to" })
  })
})
