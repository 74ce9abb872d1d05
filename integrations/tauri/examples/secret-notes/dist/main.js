// The window's script. `window.__TAURI__.sealkv` is the plugin's global API (the app
// sets `withGlobalTauri`); a bundled app imports the same from 'tauri-plugin-sealkv-api'.
const { sealkv } = window.__TAURI__
const output = document.getElementById('secret-output')
const input = document.getElementById('secret-input')
const status = document.getElementById('status')

function show(state, message) {
  document.body.dataset.state = state
  status.textContent = message
}

function failed(error) {
  // A SealkvError: a stable code and a message (never the secret).
  show('error', `${error.code}: ${error.message}`)
}

let store
try {
  store = await sealkv.open('notes')
  output.textContent = (await store.getText('notes', 'secret')) ?? ''
  show('ready', store.opened.created ? 'A new store, its key in your keychain.' : 'Opened with the key in your keychain.')
} catch (error) {
  failed(error)
}

document.getElementById('form').addEventListener('submit', async (event) => {
  event.preventDefault()
  if (!store) return
  try {
    await store.put('notes', 'secret', input.value)
    output.textContent = input.value
    input.value = ''
    show('saved', 'Saved.')
  } catch (error) {
    failed(error)
  }
})
