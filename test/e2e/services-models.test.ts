// Model endpoints end to end: two services of examples/model-service (a deterministic
// OpenAI-compatible server) registered as models `alpha` and `beta`, reached through the
// project's endpoint /proxy/models/main/v1 with the official `openai` client: the model list,
// a plain and a streamed chat completion, each routed by its `model` field; an unknown model
// and a caller without a token refused.
import * as path from "node:path"
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { Server } from "../../core/src/server/createServer.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { freePort, waitRunning } from "../support/services.ts"

const TOKEN = "models-e2e-token"
const OPENAI_SERVER = path.resolve("examples/model-service/openai-server.mjs")
let server: Server
let serving: Serving
let call: ReturnType<typeof httpCall>

const applyModel = async (name: string, model: string) => {
  const res = await call("/api/project/main/runs/apply", {
    plan: {
      run_spec: {
        run_name: name,
        repo_id: "models",
        repo_data: { repo_type: "virtual" },
        configuration: {
          type: "service",
          commands: [`exec node ${OPENAI_SERVER}`],
          env: { MODEL_NAME: model },
          port: await freePort(),
          model: name === "chat-b" ? { type: "chat", format: "openai", name: model, prefix: "/v1" } : model,
          resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." }
        }
      }
    }
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
}

beforeAll(async () => {
  ;({ server, serving, call } = await startLocalServer({ token: TOKEN, maxInstances: 8 }))
  await applyModel("chat-a", "alpha")
  await applyModel("chat-b", "beta")
  await waitRunning(call, "chat-a")
  await waitRunning(call, "chat-b")
}, 120_000)
afterAll(async () => {
  await call?.("/api/project/main/runs/stop", { runs_names: ["chat-a", "chat-b"], abort: true })
  await serving?.close()
})

describe("model endpoints", () => {
  const client = () => new OpenAI({ baseURL: `${serving.url}/proxy/models/main/v1`, apiKey: TOKEN, maxRetries: 0 })

  it("lists the project's models", async () => {
    const models = await client().models.list()
    expect(models.data.map((m) => m.id)).toEqual(["alpha", "beta"])
  })

  it("routes a chat completion by its model, plain and streamed", async () => {
    const plain = await client().chat.completions.create({ model: "alpha", messages: [{ role: "user", content: "one two three" }] })
    expect(plain.choices[0].message.content).toBe("alpha says: three two one")
    const stream = await client().chat.completions.create({ model: "beta", stream: true, messages: [{ role: "user", content: "hello streaming world" }] })
    const deltas: Array<string> = []
    for await (const chunk of stream) deltas.push(chunk.choices[0]?.delta?.content ?? "")
    expect(deltas.join("")).toBe("beta says: world streaming hello")
    expect(deltas.filter((d) => d !== "").length).toBeGreaterThan(3)
  })

  it("refuses an unknown model and a caller without a member's token", async () => {
    const unknown = await client().chat.completions.create({ model: "gamma", messages: [{ role: "user", content: "x" }] }).catch((e) => e)
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError)
    expect(unknown.message).toMatch(/gamma does not exist in project main; it has alpha, beta/)
    const anonymous = await new OpenAI({ baseURL: `${serving.url}/proxy/models/main/v1`, apiKey: "wrong", maxRetries: 0 }).models.list().catch((e) => e)
    expect(anonymous).toBeInstanceOf(OpenAI.AuthenticationError)
  })
})
