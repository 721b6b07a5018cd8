// Ports a test must name itself (a task's `ports: ["LOCAL:REMOTE"]`, a job's own port) rather
// than take from the kernel with port 0.
import * as net from "node:net"

const canListen = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = net.createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

/**
 * The first of `count` consecutive ports on 127.0.0.1 that nothing listens on now, between 20000
 * and 32000: below Linux's ephemeral range (32768–60999), so that no outgoing connection of a
 * test running beside takes one between this check and the port's use (a port picked at random
 * in 40000–50000 once was, and the attach it was for was refused).
 */
export const freeNamedPorts = async (count = 1): Promise<number> => {
  for (let attempt = 0; attempt < 200; attempt++) {
    const first = 20000 + Math.floor(Math.random() * (12000 - count))
    let free = true
    for (let i = 0; i < count && free; i++) free = await canListen(first + i)
    if (free) return first
  }
  throw new Error(`no ${count} consecutive free ports between 20000 and 32000 on 127.0.0.1`)
}
