// A small OpenAI-compatible chat server for trying and testing model services: no weights, it
// answers deterministically ("<model> says: <the last user message, words reversed>"), word by
// word when asked to stream. Plain node:http on $DSTACK_SERVICE_PORT (or $PORT, or 8000).
import * as http from "node:http"

const port = Number(process.env.DSTACK_SERVICE_PORT ?? process.env.PORT ?? 8000)
const model = process.env.MODEL_NAME ?? "echo"

const json = (res, status, body) => {
  res.writeHead(status, { "content-type": "application/json" })
  res.end(JSON.stringify(body))
}

const answerOf = (messages) => {
  const last = [...(messages ?? [])].reverse().find((m) => m.role === "user")
  const text = typeof last?.content === "string" ? last.content : ""
  return `${model} says: ${text.split(/\s+/).filter(Boolean).reverse().join(" ")}`
}

http.createServer((req, res) => {
  const url = new URL(req.url, "http://x")
  if (req.method === "GET" && url.pathname === "/v1/models") {
    return json(res, 200, { object: "list", data: [{ id: model, object: "model", created: 0, owned_by: "dstack-ts" }] })
  }
  if (req.method === "POST" && url.pathname === "/v1/chat/completions") {
    let body = ""
    req.setEncoding("utf8")
    req.on("data", (chunk) => (body += chunk))
    req.on("end", () => {
      let request
      try {
        request = JSON.parse(body)
      } catch {
        return json(res, 400, { error: { message: "the body is not JSON", type: "invalid_request_error" } })
      }
      const content = answerOf(request.messages)
      const id = "chatcmpl-dstack-ts"
      if (!request.stream) {
        return json(res, 200, {
          id, object: "chat.completion", created: 0, model,
          choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
          usage: { prompt_tokens: 0, completion_tokens: content.split(" ").length, total_tokens: content.split(" ").length }
        })
      }
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
      const words = content.split(" ")
      const chunk = (delta, finish) => `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created: 0, model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`
      res.write(chunk({ role: "assistant", content: "" }, null))
      let i = 0
      const timer = setInterval(() => {
        if (i < words.length) {
          res.write(chunk({ content: (i === 0 ? "" : " ") + words[i++] }, null))
          return
        }
        clearInterval(timer)
        res.write(chunk({}, "stop"))
        res.end("data: [DONE]\n\n")
      }, 10)
      res.on("close", () => clearInterval(timer))
    })
    return
  }
  json(res, 404, { error: { message: `no route ${req.method} ${url.pathname}`, type: "invalid_request_error" } })
}).listen(port, "127.0.0.1", () => console.log(`OpenAI-compatible ${model} on ${port}`))
