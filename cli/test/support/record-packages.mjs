// Preloaded (`node --import`) by the server test's child process: registers a module resolve
// hook that appends every bare package specifier resolved in the process to the file named by
// RECORD_PACKAGES_FILE, one per line.
import { register } from "node:module"

register(new URL("./record-packages-hooks.mjs", import.meta.url), { data: { file: process.env.RECORD_PACKAGES_FILE } })
