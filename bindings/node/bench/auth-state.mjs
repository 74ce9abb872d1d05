// useSealedAuthState against Baileys' useMultiFileAuthState, same machine, same run.
//
//   npm run bench            (in bindings/node, after `npm run build`)
//
// Prints sets/s with 10 concurrent async workers doing `keys.set` of one 1 KiB session
// value each (once each, then in alternating rounds: MODE=shared|exclusive|multi-writer
// picks the sealed store's mode, ROUNDS the rounds) (sealed: every set is an atomic, fsynced commit; the folder writes each file
// without fsync), and single-id `keys.get`/s, sequential and with 10 workers.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { useMultiFileAuthState } from 'baileys'
import { useSealedAuthState } from '../lib/index.mjs'

const WORKERS = 10
const SETS = Number(process.env.SETS ?? 4000)
const GETS = Number(process.env.GETS ?? 20000)
const IDS = 1000

async function timed(fn) {
  const start = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - start) / 1e9
}

async function workers(total, op) {
  let next = 0
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (next < total) {
        const i = next++
        await op(i)
      }
    }),
  )
}

async function measure(name, auth) {
  const { keys } = auth.state
  const values = Array.from({ length: 64 }, () => randomBytes(1024))
  const rows = {}
  const setSecs = await timed(() => workers(SETS, (i) => keys.set({ session: { [`peer${i % IDS}.0`]: values[i % 64] } })))
  rows.set10 = SETS / setSecs
  for (let i = 0; i < IDS; i += 100) {
    const batch = {}
    for (let j = i; j < i + 100; j++) batch[`peer${j}.0`] = values[j % 64]
    await keys.set({ session: batch })
  }
  let found = 0
  const getSecs = await timed(async () => {
    for (let i = 0; i < GETS; i++) {
      const id = `peer${(i * 7919) % IDS}.0`
      const got = await keys.get('session', [id])
      if (got[id]) found++
    }
  })
  rows.get1 = GETS / getSecs
  const getSecs10 = await timed(() =>
    workers(GETS, async (i) => {
      const id = `peer${(i * 7919) % IDS}.0`
      const got = await keys.get('session', [id])
      if (got[id]) found++
    }),
  )
  rows.get10 = GETS / getSecs10
  if (found !== 2 * GETS) throw new Error(`${name}: ${2 * GETS - found} gets missed`)
  return rows
}

// keys.set of both, in alternating rounds (the first one alternating too), so that the
// disk's drift during the run (large on this VM: either side's rate moves 2x between
// runs) lands on both alike; the medians of the rounds are compared.
async function interleaved(folderAuth, sealedAuth) {
  const values = Array.from({ length: 64 }, () => randomBytes(1024))
  const per = Math.max(100, Math.floor(SETS / ROUNDS))
  const rates = { folder: [], sealed: [] }
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? ['folder', 'sealed'] : ['sealed', 'folder']
    for (const name of order) {
      const { keys } = (name === 'folder' ? folderAuth : sealedAuth).state
      const secs = await timed(() =>
        workers(per, (i) => keys.set({ session: { [`round${i % IDS}.0`]: values[(i + r) % 64] } })),
      )
      rates[name].push(per / secs)
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  return { folder: median(rates.folder), sealed: median(rates.sealed) }
}

const ROUNDS = Number(process.env.ROUNDS ?? 10)
const dir = mkdtempSync(join(tmpdir(), 'sealkv-bench-'))
try {
  const folderAuth = await useMultiFileAuthState(join(dir, 'folder'))
  const folder = await measure('folder', folderAuth)
  const sealedAuth = await useSealedAuthState(join(dir, 'bot.sealkv'), { passphrase: 'bench passphrase', concurrency: process.env.MODE })
  const sealed = await measure('sealed', sealedAuth)
  const rounds = await interleaved(folderAuth, sealedAuth)
  folder.setRounds = rounds.folder
  sealed.setRounds = rounds.sealed
  await sealedAuth.close()
  const fmt = (n) => Math.round(n).toLocaleString('en-US')
  console.log(`node ${process.version}, ${WORKERS} workers, ${SETS} sets, ${GETS} gets over ${IDS} ids, 1 KiB values`)
  console.log('| operation | useMultiFileAuthState | useSealedAuthState | ratio |')
  console.log('|---|---:|---:|---:|')
  for (const [key, label] of [
    ['set10', 'keys.set, 10 workers (sets/s; sealed: durable)'],
    ['setRounds', `keys.set, 10 workers, ${ROUNDS} alternating rounds (median sets/s)`],
    ['get1', 'keys.get one id, sequential (gets/s)'],
    ['get10', 'keys.get one id, 10 workers (gets/s)'],
  ]) {
    console.log(`| ${label} | ${fmt(folder[key])} | ${fmt(sealed[key])} | ${(sealed[key] / folder[key]).toFixed(2)}x |`)
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
