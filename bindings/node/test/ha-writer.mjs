// A writer for the failover test (engine/tests/pg_ha.rs drives it): Baileys' auth state
// from `useSealedAuthState` on the store SEALKV_HA_URL (the password in PGPASSWORD, the
// master key as hex in SEALKV_HA_KEY), doing read-modify-write rounds until stdin
// closes: read its counter, then write counter + 1 and a log row named after the new
// value, in one `keys.set`. Prints `ack N` once round N is acknowledged, `err CODE`
// when a round fails (it is then tried again: the counter read decides its number).
// Not a test file of its own (`npm test` runs test/*.test.mjs only).
import { useSealedAuthState } from '../lib/index.mjs'

const COUNTER = 'app-state-sync-version'
const LOG = 'sender-key-memory'

const url = process.env.SEALKV_HA_URL
const key = Buffer.from(process.env.SEALKV_HA_KEY ?? '', 'hex')
const { state, close } = await useSealedAuthState(url, { key, create: false })

let stopping = false
process.stdin.on('end', () => {
  stopping = true
})
process.stdin.resume()

while (!stopping) {
  try {
    const found = await state.keys.get(COUNTER, ['node'])
    const n = (found.node?.n ?? 0) + 1
    await state.keys.set({ [COUNTER]: { node: { n } }, [LOG]: { [`node-${n}`]: { n } } })
    console.log(`ack ${n}`)
  } catch (err) {
    console.log(`err ${err.code ?? err.name}: ${err.message}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
await close()
