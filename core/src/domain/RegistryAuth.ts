/** Credentials for pulling an image from a private registry (`registry_auth:`). */
import { Schema } from "effect"

export const RegistryAuth = Schema.Struct({
  username: Schema.String.annotations({ description: "The user name." }),
  password: Schema.String.annotations({ description: "The password or access token." })
}).annotations({ identifier: "RegistryAuth", description: "Credentials for a private image registry: `{username, password}`." })
export type RegistryAuth = typeof RegistryAuth.Type
