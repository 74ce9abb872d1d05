// ESM entry point: the same objects as the CommonJS one.
import sealkv from './index.cjs'

export const { Store, SealkvError, useSealedAuthState, FAMILIES } = sealkv
export default sealkv
