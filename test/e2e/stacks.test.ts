// Stacks end to end: a real server on a real port, the SDK (push, pull, frame) with each
// handler's objects, access rules, param matching, head moves, and the CLI as a child process.
import { execFile } from "node:child_process"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { tableFromArrays, type Table } from "apache-arrow"
import { codecs as dataframeCodecs } from "@dstack-ts/handler-dataframe"
import { codecs as plotCodecs } from "@dstack-ts/handler-plot"
import { codecs as modelCodecs } from "@dstack-ts/handler-model"
import { Stacks } from "@dstack-ts/client"
import { barChart, plotlyFigure, pngOf } from "../../plugins/handler-plot/test/fixtures.ts"
import { mlpOnnx } from "../../plugins/handler-model/test/fixtures.ts"
import { ADMIN_TOKEN, startStackServer, type StackServer } from "../browser/stackServer.ts"
import { CLI } from "../support/cli.ts"

const codecs = [...dataframeCodecs, ...plotCodecs, ...modelCodecs]
let s: StackServer
let alice: string
let bob: string
const sdk = (token: string | undefined, extra: Partial<Stacks.StacksOptions> = {}) => Stacks.make({ url: s.url, token, codecs, ...extra })

const rejection = async (p: Promise<unknown>): Promise<any> => {
  try {
    await p
  } catch (e) {
    return e
  }
  throw new Error("expected a rejection")
}

beforeAll(async () => {
  s = await startStackServer()
  alice = await s.createUser("alice")
  bob = await s.createUser("bob")
}, 60_000)
afterAll(async () => {
  await s?.close()
})

describe("stacks through the SDK", () => {
  it("pushes and pulls back large bytes intact (sent as slices, read into one array)", async () => {
    const a = sdk(alice)
    const bytes = new Uint8Array(20 * 1024 * 1024 + 3)
    for (let i = 0; i < bytes.length; i += 997) bytes[i] = (i * 31) & 0xff
    await a.push("objects/large-bytes", bytes)
    const back = (await a.pull("objects/large-bytes")) as Uint8Array
    expect(back).toBeInstanceOf(Uint8Array)
    expect(back.length).toBe(bytes.length)
    expect(Buffer.compare(back, bytes)).toBe(0)
    expect((await a.get("objects/large-bytes")).head_frame?.attachments[0].size).toBe(bytes.length)
  })

  it("pushes and pulls back each handler's objects equal", async () => {
    const a = sdk(alice)
    const table = tableFromArrays({ id: Int32Array.from([1, 2, 3]), name: ["a", "b", "c"], score: Float64Array.from([0.5, 1.5, 2.5]) })
    const png = pngOf(4, 3)
    const onnx = mlpOnnx()

    const pushed = await a.push("objects/table", table, { message: "arrow", description: "an arrow table" })
    expect(pushed.url).toBe(`${s.url}/stacks/alice/objects/table`)
    const back = (await a.pull("objects/table")) as Table
    expect(back.numRows).toBe(3)
    expect(back.schema.fields.map((f) => f.name)).toEqual(["id", "name", "score"])
    expect(back.toArray().map((r) => r.toJSON())).toEqual(table.toArray().map((r) => r.toJSON()))

    await a.push("objects/vega", barChart)
    expect(await a.pull("objects/vega")).toEqual(barChart)
    await a.push("objects/plotly", plotlyFigure)
    expect(await a.pull("objects/plotly")).toEqual(plotlyFigure)
    await a.push("objects/png", png)
    expect(await a.pull("objects/png")).toEqual(png)
    await a.push("objects/onnx", onnx)
    const m = (await a.pull("objects/onnx")) as { format: string; bytes: Uint8Array }
    expect(m.format).toBe("onnx")
    expect(new Uint8Array(m.bytes)).toEqual(onnx)

    const info = await a.get("objects/png")
    expect(info.head_frame?.attachments[0]).toMatchObject({ content_type: "image/png", application: "plot", size: png.length })
  })

  it("rejects a bad stack name before any network call, showing the rule", async () => {
    let calls = 0
    const counting = sdk(alice, { fetch: ((...args: Parameters<typeof fetch>) => (calls++, fetch(...args))) as typeof fetch })
    for (const bad of ["bad name", "a//b", "trailing/", "dots.not.allowed", "", "/onlyowner"]) {
      const e = await rejection(counting.push(bad, "x"))
      expect(e.reason).toBe("Invalid")
      expect(e.message).toMatch(/latin letters, digits, '\/', '_' and '-'|owner\/name/)
    }
    expect(calls).toBe(0)
  })

  it("a frame collects several objects with params; pull picks by params, 404 lists the params that exist", async () => {
    const a = sdk(alice)
    const frame = a.frame("params/demo", { access: "public" })
    await frame.add({ ...barChart, title: "one" }, { params: { n: 1 }, description: "first" })
    await frame.add({ ...barChart, title: "two" }, { params: { n: 2 } })
    const result = await frame.push("two charts")
    expect(((await a.pull("params/demo", { params: { n: 2 } })) as any).title).toBe("two")
    expect(((await a.pull("params/demo")) as any).title).toBe("one")
    const e = await rejection(a.pull("params/demo", { params: { n: 3 } }))
    expect(e.status).toBe(404)
    expect(e.message).toContain('{"n":1}, {"n":2}')
    // pushing the same frame twice is refused
    await expect(frame.push("again")).rejects.toMatchObject({ reason: "Invalid" })
    const info = await a.get("params/demo")
    expect(info.head).toBe(result.frameId)
    expect(info.frames[0].message).toBe("two charts")
  })

  it("the head moves only when the frame is committed with every attachment stored", async () => {
    const a = sdk(alice)
    const first = await a.push("head/test", "v1", { message: "one" })
    const call = (path: string, body: unknown) =>
      fetch(`${s.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${alice}`, "content-type": "application/json" }, body: JSON.stringify(body) })
    const created = (await (await call("/api/stacks/frames/create", {
      stack: "alice/head/test",
      attachments: [{ content_type: "text/plain; charset=utf-8", application: "text" }, { content_type: "text/plain; charset=utf-8", application: "text" }]
    })).json()) as { frame_id: string }
    const put = await fetch(`${s.url}/api/stacks/frames/${created.frame_id}/attachments/0`, { method: "PUT", headers: { authorization: `Bearer ${alice}` }, body: "v2" })
    expect(put.status).toBe(200)
    const early = await call("/api/stacks/frames/commit", { frame_id: created.frame_id })
    expect(early.status).toBe(400)
    expect(JSON.stringify(await early.json())).toContain("attachment(s) 1 not uploaded")
    expect((await a.get("head/test")).head).toBe(first.frameId)
    expect(await a.pull("head/test")).toBe("v1")
    const bad = await fetch(`${s.url}/api/stacks/frames/${created.frame_id}/attachments/7`, { method: "PUT", headers: { authorization: `Bearer ${alice}` }, body: "x" })
    expect(bad.status).toBe(404)
    await fetch(`${s.url}/api/stacks/frames/${created.frame_id}/attachments/1`, { method: "PUT", headers: { authorization: `Bearer ${alice}` }, body: "v2b" })
    expect((await call("/api/stacks/frames/commit", { frame_id: created.frame_id })).status).toBe(200)
    expect(await a.pull("head/test")).toBe("v2")
    expect(await a.pull("head/test", { frameId: first.frameId })).toBe("v1")
  })

  it("enforces access: public without a token, private only for the owner and admins, pushes only by the owner", async () => {
    await sdk(alice).push("shared/pub", { a: 1 }, { access: "public" })
    await sdk(alice).push("shared/priv", { a: 2 }, { access: "private" })
    await sdk(alice).push("shared/default", { a: 3 })

    const anon = sdk(undefined)
    expect(await anon.pull("/alice/shared/pub")).toEqual({ a: 1 })
    expect(await rejection(anon.pull("/alice/shared/priv"))).toMatchObject({ status: 401 })
    // A relative name needs a user to resolve against.
    expect(await rejection(anon.pull("shared/pub"))).toMatchObject({ reason: "Invalid" })

    const b = sdk(bob)
    expect(await b.pull("/alice/shared/pub")).toEqual({ a: 1 })
    expect(await rejection(b.pull("/alice/shared/priv"))).toMatchObject({ status: 403 })
    expect(await rejection(b.pull("/alice/shared/default"))).toMatchObject({ status: 403 }) // default access: private
    expect(await rejection(b.push("/alice/shared/pub", { evil: true }))).toMatchObject({ status: 403 })
    expect(await rejection(b.delete("/alice/shared/pub"))).toMatchObject({ status: 403 })
    expect(await sdk(ADMIN_TOKEN).pull("/alice/shared/priv")).toEqual({ a: 2 })

    // Raw routes: the download and the frame upload check the same rules.
    const info = await sdk(alice).get("shared/priv")
    const dl = await fetch(`${s.url}/api/stacks/attachment?stack=alice/shared/priv&frame_id=${info.head}`, { headers: { authorization: `Bearer ${bob}` } })
    expect(dl.status).toBe(403)
    const missing = await fetch(`${s.url}/api/stacks/attachment`)
    expect(missing.status).toBe(400)

    const bobList = (await b.list()).map((x) => x.stack)
    expect(bobList).toContain("alice/shared/pub")
    expect(bobList).not.toContain("alice/shared/priv")
    expect((await anon.list()).every((x) => x.access === "public")).toBe(true)
    expect(await rejection(sdk("not-a-token").list())).toMatchObject({ status: 401 })
  })

  it("a user's default access applies to new stacks", async () => {
    const res = await fetch(`${s.url}/api/stacks/set_default_access`, {
      method: "POST", headers: { authorization: `Bearer ${bob}`, "content-type": "application/json" }, body: JSON.stringify({ access: "public" })
    })
    expect(res.status).toBe(200)
    await sdk(bob).push("open", "hello")
    expect((await sdk(bob).get("open")).access).toBe("public")
    expect(await sdk(undefined).pull("/bob/open")).toBe("hello")
  })

  it("a pull whose decoder is not installed fails naming the plugin", async () => {
    await sdk(alice).push("needs/plugin", tableFromArrays({ x: Int32Array.from([1]) }))
    const bare = Stacks.make({ url: s.url, token: alice })
    const e = await rejection(bare.pull("needs/plugin"))
    expect(e.reason).toBe("NotInstalled")
    expect(e.message).toContain("@dstack-ts/handler-dataframe")
  })

  it("deletes a stack with its blobs; missing stacks answer 404", async () => {
    const a = sdk(alice)
    await a.push("gone/soon", new Uint8Array([1, 2, 3]))
    await a.delete("gone/soon")
    expect(await rejection(a.pull("gone/soon"))).toMatchObject({ status: 404 })
    expect(await rejection(a.get("never/was"))).toMatchObject({ status: 404 })
  })
})

describe("stacks through the CLI", () => {
  const exec = promisify(execFile)
  const cli = (args: Array<string>, token = alice) =>
    exec(process.execPath, [CLI, ...args], {
      // Outside the workspace: the built command would find its packages' sources there.
      cwd: tmpdir(),
      env: { ...process.env, DSTACK_SERVER_URL: s.url, DSTACK_TOKEN: token, DSTACK_PROJECT: "main", HOME: tmpdir() },
      timeout: 60_000
    })
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "dstack-cli-stacks-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("pushes a CSV and a PNG and pulls them back byte for byte", async () => {
    const csv = "city,temp\nOslo,4\nLima,19\n"
    await writeFile(join(dir, "weather.csv"), csv)
    const png = pngOf(5, 5)
    await writeFile(join(dir, "plot.png"), png)

    const pushed = await cli(["push", "cli/weather", join(dir, "weather.csv"), "--message", "first", "--param", "unit=c"])
    expect(pushed.stdout).toContain("/stacks/alice/cli/weather")
    await cli(["push", "cli/plot", join(dir, "plot.png"), "--access", "public"])

    await cli(["pull", "cli/weather", "-o", join(dir, "back.csv"), "--param", "unit=c"])
    expect(await readFile(join(dir, "back.csv"), "utf8")).toBe(csv)
    await cli(["pull", "/alice/cli/plot", "-o", join(dir, "back.png")], bob)
    expect(new Uint8Array(await readFile(join(dir, "back.png")))).toEqual(png)

    const info = await sdk(alice).get("cli/weather")
    expect(info.head_frame?.attachments[0]).toMatchObject({ application: "dataframe", content_type: expect.stringContaining("text/csv"), params: { unit: "c" } })

    const listed = await cli(["stacks", "list"])
    expect(listed.stdout).toContain("alice/cli/weather")
    expect(listed.stdout).toContain("alice/cli/plot")
  }, 120_000)

  it("fails with one clear line for a bad name, a missing file, and a param that matches nothing", async () => {
    const bad = await rejection(cli(["push", "bad name", join(dir, "weather.csv")]))
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("latin letters")
    const missing = await rejection(cli(["push", "cli/x", join(dir, "nope.csv")]))
    expect(missing.stderr).toContain("nope.csv")
    const nomatch = await rejection(cli(["pull", "cli/weather", "-o", join(dir, "x.csv"), "--param", "unit=f"]))
    expect(nomatch.stderr).toContain('{"unit":"c"}')
  }, 120_000)
})
