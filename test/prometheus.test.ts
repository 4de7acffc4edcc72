import { createServer } from 'node:http'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { queryNumber } from '../lib/deploy/prometheus.ts'
import { unusedPort } from './helpers/net.ts'

const t = suite('prometheus client')

async function rejects(p: Promise<unknown>, re: RegExp) {
  try {
    await p
    assert.unreachable('accepted')
  } catch (err) {
    assert.match((err as Error).message, re)
    assert.not.match((err as Error).message, /\n/, 'one line')
  }
}

t('a Prometheus that does not answer is one line naming it, without credentials', async () => {
  const port = await unusedPort()
  await rejects(
    queryNumber(`http://admin:s3cret@127.0.0.1:${port}`, 'vector(1)'),
    new RegExp(`^Prometheus at http://127\\.0\\.0\\.1:${port} does not answer \\(ECONNREFUSED\\)$`),
  )
})

t('a web server that is not a Prometheus is named as such', async () => {
  // Any HTTP server that is not Prometheus: what a wrong URL in environments.yaml reaches.
  const srv = createServer((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>'))
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))
  const { port } = srv.address() as { port: number }
  try {
    await rejects(
      queryNumber(`http://127.0.0.1:${port}/`, 'vector(1)'),
      /answered 404 without a query result \(is it a Prometheus API\?\)$/,
    )
  } finally {
    srv.close()
  }
})

t.run()
