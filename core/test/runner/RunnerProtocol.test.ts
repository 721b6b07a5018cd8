// Decoding a submission and mapping it to what an executor runs.
import { describe, expect, it } from "vitest"
import { Either, Schema } from "effect"
import { decodeStartBody, encodeStartBody, SubmitBody, toExecutionSpec } from "../../src/runner/RunnerProtocol.ts"
import { submitBody } from "./support.ts"

const decode = (input: unknown) => Schema.decodeUnknownSync(SubmitBody)(input)

describe("SubmitBody → ExecutionSpec", () => {
  it("maps the job spec (image, ports, mounts, shm size, user) and sets the DSTACK_* env under the job's env", () => {
    const body = decode(
      submitBody(
        {
          image_name: "ghcr.io/me/img:1",
          commands: ["python train.py"],
          env: { DSTACK_NODE_RANK: "overridden", KEY: "${{ secrets.KEY }}" },
          user: "me",
          privileged: true,
          working_dir: "sub",
          app_specs: [{ port: 8080, app_name: "web" }],
          service_port: 8000,
          shm_size: 0.5,
          registry_auth: { username: "u", password: "p" },
          volumes: [{ instance_path: "/data", path: "/mnt/data" }, { name: "net-vol", path: "/vol" }]
        },
        { secrets: { KEY: "k" }, cluster_info: { job_ips: ["a", "b", "c"], master_job_ip: "a", gpus_per_job: 2 } }
      )
    )
    const spec = Either.getOrThrow(toExecutionSpec(body, "/runner/repo"))
    expect(spec).toMatchObject({
      image: "ghcr.io/me/img:1",
      commands: ["python train.py"],
      repoDir: "/runner/repo",
      workingDir: "sub",
      user: "me",
      privileged: true,
      ports: [{ containerPort: 8080 }, { containerPort: 8000 }],
      shmSizeBytes: 512 * 1024 * 1024,
      registryAuth: { username: "u", password: "p" },
      mounts: [{ hostPath: "/data", containerPath: "/mnt/data" }],
      gpus: 2
    })
    expect(spec.env).toEqual({
      DSTACK_RUN_NAME: "my-run",
      DSTACK_REPO_ID: "my-repo",
      DSTACK_NODES_NUM: "3",
      DSTACK_NODE_RANK: "overridden",
      DSTACK_MASTER_NODE_IP: "a",
      DSTACK_NODES_IPS: "a\nb\nc",
      DSTACK_GPUS_PER_NODE: "2",
      DSTACK_GPUS_NUM: "6",
      KEY: "k"
    })
  })

  it("a job without image_name has no image (process executor)", () => {
    const spec = Either.getOrThrow(toExecutionSpec(decode(submitBody({ commands: ["true"] })), "/r"))
    expect(spec.image).toBeUndefined()
    expect(spec.gpus).toBe(0)
  })

  it("names a secret the env refers to but that was not submitted", () => {
    const result = toExecutionSpec(decode(submitBody({ env: { A: "x-${{ secrets.MISSING }}" } })), "/r")
    expect(result).toEqual(Either.left("env.A refers to secret MISSING, which was not submitted"))
  })

  it("puts submitted secrets into env values and registry credentials, and nowhere else", () => {
    const body = decode(submitBody(
      {
        image_name: "registry.example/app:1",
        env: { HF: "${{ secrets.HF }}", URL: "https://u:${{secrets.PW}}@h/${{ secrets.HF }}", PLAIN: "${HOME}" },
        registry_auth: { username: "${{ secrets.REG_USER }}", password: "${{ secrets.REG_PW }}" },
        commands: ["echo ${{ secrets.HF }}"]
      },
      { secrets: { HF: "hf-value", PW: "pw", REG_USER: "robot", REG_PW: "reg-pw", UNUSED: "x" } }
    ))
    const spec = Either.getOrThrow(toExecutionSpec(body, "/r"))
    expect(spec.env).toMatchObject({ HF: "hf-value", URL: "https://u:pw@h/hf-value", PLAIN: "${HOME}" })
    expect(spec.env).not.toHaveProperty("UNUSED")
    expect(spec.registryAuth).toEqual({ username: "robot", password: "reg-pw" })
    // Commands are not interpolated (the server refuses references there at plan time).
    expect(spec.commands).toEqual(["echo ${{ secrets.HF }}"])
    // The submitted spec is left as it was.
    expect(body.jobSpec.env.HF).toBe("${{ secrets.HF }}")
  })

  it("names a secret the registry credentials refer to but that was not submitted", () => {
    const result = toExecutionSpec(decode(submitBody({ image_name: "x", registry_auth: { username: "u", password: "${{ secrets.REG }}" } })), "/r")
    expect(result).toEqual(Either.left("registry_auth.password refers to secret REG, which was not submitted"))
  })

  it("rejects a body without job_spec, naming the field", () => {
    expect(() => decode({ run: {} })).toThrow(/job_spec/)
  })
})

describe("the start body (POST /api/start)", () => {
  it("carries the submit JSON and the code archive, telling no code from an empty archive", () => {
    const json = JSON.stringify(submitBody({ commands: ["echo ü"] }))
    const code = new Uint8Array([31, 139, 8, 0, 1, 2, 3])
    const withCode = Either.getOrThrow(decodeStartBody(encodeStartBody(json, code)))
    expect(withCode.submit).toEqual(JSON.parse(json))
    expect([...withCode.code!]).toEqual([...code])
    expect(Either.getOrThrow(decodeStartBody(encodeStartBody(json, undefined))).code).toBeUndefined()
    expect(Either.getOrThrow(decodeStartBody(encodeStartBody(json, new Uint8Array(0)))).code?.byteLength).toBe(0)
  })

  it("names what is wrong with a malformed one", () => {
    const message = (bytes: Array<number>) => Either.getLeft(decodeStartBody(new Uint8Array(bytes))).pipe((m) => m._tag === "Some" ? m.value : "")
    expect(message([1])).toMatch(/5-byte header/)
    expect(message([2, 0, 0, 0, 0])).toMatch(/code flag \(byte 0\) must be 0 or 1, got 2/)
    expect(message([0, 0, 0, 1, 0, 123])).toMatch(/256 bytes, but only 1 follow/)
    expect(message([0, 0, 0, 0, 1, 123])).toMatch(/not JSON/)
  })
})
