/**
 * Whether a container runtime's CRI API answers: the question the kubelet
 * asks first. containerd answers `ctr version` as soon as its own API is up,
 * but its CRI plugin restores its state after that and answers "server is not
 * initialized yet" meanwhile (measured: 77 ms on an idle machine, longer with
 * more pods to restore); a kubelet started in that window exits at once.
 * This makes the CRI's own `RuntimeService/Version` call: gRPC over HTTP/2 on
 * the unix socket, with node:http2, so no CRI client has to be installed.
 */
import { connect } from 'node:http2'
import { connect as netConnect } from 'node:net'

/** A gRPC message frame: not compressed, length 0 (an empty VersionRequest). */
const EMPTY_REQUEST = Buffer.from([0, 0, 0, 0, 0])

export function criAnswers(socket: string, timeoutMs = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const session = connect('http://localhost', { createConnection: () => netConnect(socket) })
    let status: string | undefined
    const done = () => {
      clearTimeout(timer)
      session.destroy()
      resolve(status === '0')
    }
    const timer = setTimeout(done, timeoutMs)
    session.on('error', done)
    const req = session.request({
      ':method': 'POST',
      ':path': '/runtime.v1.RuntimeService/Version',
      'content-type': 'application/grpc',
      te: 'trailers',
    })
    // A refusal may come as headers alone (trailers-only), an answer with trailers.
    req.on('response', (h) => (status = h['grpc-status'] === undefined ? status : String(h['grpc-status'])))
    req.on('trailers', (h) => (status = String(h['grpc-status'])))
    req.on('data', () => undefined)
    req.on('end', done)
    req.on('error', done)
    req.end(EMPTY_REQUEST)
  })
}
