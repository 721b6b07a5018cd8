// Code delivery: client-side repos (local directory, git remote + diff, virtual files) and the
// runner-side materialization. Append one export line per module.
export { LocalRepo } from "./LocalRepo.ts"
export type { LocalRepoOptions } from "./LocalRepo.ts"
export { RemoteRepo, normalizeRepoUrl } from "./RemoteRepo.ts"
export type { RemoteRepoFromDir, RemoteRepoFromUrl } from "./RemoteRepo.ts"
export { VirtualRepo } from "./VirtualRepo.ts"
export type { AddFromPackageOptions, VirtualRepoOptions } from "./VirtualRepo.ts"
export { REPO_ID_PATTERN } from "./RepoCode.ts"
export type { CodeBlobKind, RepoCode } from "./RepoCode.ts"
export { listRepoFiles, IGNORE_FILES } from "./IgnoreRules.ts"
export { materializeRepo } from "./Materialize.ts"
export { builtinRepos, localRepo, remoteRepo, virtualRepo, runnerRepos } from "./RepoPorts.ts"
