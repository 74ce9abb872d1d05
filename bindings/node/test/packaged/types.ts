// Type-checked with `tsc --noEmit` by scripts/npm-pack-check against the packed types.
import { Store, SealkvError, useSealedAuthState, type SealkvErrorCode } from 'sealkv'

async function main(): Promise<void> {
  const store: Store = await Store.openOrCreate('bot.sealkv', { passphrase: 'correct horse battery' })
  const value: Buffer | null = await store.get('session', '4915550001.0')
  await store.set([{ namespace: 'session', key: '4915550001.0', value: value ?? Buffer.from('x') }])
  const bot2: Store = store.session('bot-2')
  const keys: string[] = await bot2.list('pre-key')
  // The types are checked, not `any`: a wrong call fails `tsc` (and so would this line
  // if the package's types stopped resolving, as the directive would then be unused).
  // @ts-expect-error: a namespace is a string
  await store.get(42, 'k')
  const auth = await useSealedAuthState('auth.sealkv', { passphrase: 'correct horse battery' })
  await auth.saveCreds()
  const registered: boolean | undefined = auth.state.creds.registered
  await store.close()
  void keys
  void registered
}

function codeOf(e: unknown): SealkvErrorCode | undefined {
  return e instanceof SealkvError ? e.code : undefined
}

void main
void codeOf
