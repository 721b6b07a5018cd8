// What re-applying an SSH fleet changes in place (upstream's rules): hosts added and removed by
// hostname; identity_file paths are not compared (the key itself is); any other changed key,
// or a host whose settings changed, is refused naming it.
import { Either, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { FleetConfiguration } from "../../src/domain/Configuration.ts"
import { hostChanges } from "../../src/engine/FleetUpdate.ts"

const fleet = (sshConfig: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(FleetConfiguration)({
    type: "fleet",
    name: "fl",
    ssh_config: { user: "root", identity_file: "~/.ssh/id", ssh_key: { public: "ssh-ed25519 AAAA", private: "key" }, ...sshConfig },
    ...extra
  })

describe("hostChanges", () => {
  it("finds hosts added and removed by hostname; the same spec changes nothing", () => {
    const current = fleet({ hosts: ["10.0.0.2", { hostname: "10.0.0.3", port: 2222 }] })
    expect(hostChanges(current, current)).toEqual(Either.right({ added: [], removed: [] }))
    expect(hostChanges(current, fleet({ hosts: [{ hostname: "10.0.0.3", port: 2222 }, "10.0.0.4", "10.0.0.5"] }))).toEqual(
      Either.right({ added: ["10.0.0.4", "10.0.0.5"], removed: ["10.0.0.2"] })
    )
    // A name and an object with only that hostname are the same host.
    expect(hostChanges(current, fleet({ hosts: [{ hostname: "10.0.0.2" }, { hostname: "10.0.0.3", port: 2222 }] }))).toEqual(Either.right({ added: [], removed: [] }))
  })

  it("does not compare identity_file paths, of hosts or their jump hosts", () => {
    const jump = { hostname: "bastion", user: "u", ssh_key: { public: "ssh-ed25519 BBBB", private: "jump-key" } }
    const current = fleet({ hosts: [{ hostname: "10.0.0.2", identity_file: "/a", proxy_jump: { ...jump, identity_file: "/j1" } }] })
    const next = fleet({ hosts: [{ hostname: "10.0.0.2", identity_file: "/b", proxy_jump: { ...jump, identity_file: "/j2" } }] })
    expect(hostChanges(current, next)).toEqual(Either.right({ added: [], removed: [] }))
  })

  it("refuses other changed keys, naming each", () => {
    const current = fleet({ hosts: ["10.0.0.2"] }, { placement: "cluster" })
    expect(hostChanges(current, fleet({ hosts: ["10.0.0.2"], user: "ubuntu", port: 2222 }, { placement: "any", env: { A: "1" } }))).toEqual(
      Either.left("only ssh_config.hosts can change in place (hosts added or removed), but env, placement, ssh_config.port, ssh_config.user changed: delete the fleet and apply it again")
    )
  })

  it("refuses a host whose settings changed, naming it", () => {
    const current = fleet({ hosts: ["10.0.0.2", "10.0.0.3"] })
    const next = fleet({ hosts: [{ hostname: "10.0.0.2", port: 2200 }, "10.0.0.3", "10.0.0.4"] })
    expect(hostChanges(current, next)).toEqual(
      Either.left("the settings of host 10.0.0.2 changed, which cannot be updated in place: remove the host in one apply and add it back in the next, or delete the fleet and apply it again")
    )
  })
})
