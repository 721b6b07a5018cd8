/**
 * CPU time and memory of a process group, read from Linux /proc: what the process executor
 * reports as a job's usage. Zero off Linux.
 */
import * as fs from "node:fs"
import type { Executor } from "@dstack-ts/core"

// Linux reports CPU time in clock ticks (USER_HZ, 100 on every mainstream kernel) and RSS in pages.
const CLOCK_TICKS_PER_SECOND = 100
const PAGE_SIZE = 4096

interface ProcStat {
  readonly pid: number
  readonly pgrp: number
  readonly cpuTicks: number
  readonly rssPages: number
}

const readProcStat = (pid: string): ProcStat | undefined => {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  } catch {
    return undefined
  }
  // The command name (field 2) is in parentheses and may contain spaces: split after it.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
  // fields[0] is field 3 (state); pgrp is field 5, utime 14, stime 15, rss 24.
  return {
    pid: Number(pid),
    pgrp: Number(fields[2]),
    cpuTicks: Number(fields[11]) + Number(fields[12]),
    rssPages: Number(fields[21])
  }
}

/** The processes of a process group that are alive (zombies excluded). */
export const processGroupPids = (pgid: number): ReadonlyArray<number> => {
  let entries: Array<string>
  try {
    entries = fs.readdirSync("/proc")
  } catch {
    return []
  }
  const pids: Array<number> = []
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    const stat = readProcStat(entry)
    if (stat && stat.pgrp === pgid && isAlive(stat.pid)) pids.push(stat.pid)
  }
  return pids
}

/** True when the process exists and is not a zombie. */
export const isAlive = (pid: number): boolean => {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const state = text.slice(text.lastIndexOf(")") + 2, text.lastIndexOf(")") + 3)
    return state !== "Z" && state !== "X"
  } catch {
    return false
  }
}

/** CPU time and resident memory summed over the live processes of a group (zero off Linux). */
export const processGroupUsage = (pgid: number): Executor.ResourceUsage => {
  let cpuTicks = 0
  let rssPages = 0
  for (const pid of processGroupPids(pgid)) {
    const stat = readProcStat(String(pid))
    if (!stat) continue
    cpuTicks += stat.cpuTicks
    rssPages += stat.rssPages
  }
  return {
    cpuUsageMicro: Math.round((cpuTicks * 1_000_000) / CLOCK_TICKS_PER_SECOND),
    memoryUsageBytes: rssPages * PAGE_SIZE
  }
}
