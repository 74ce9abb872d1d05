// secret-notes in a real window: the built app under tauri-driver and WebKitWebDriver,
// on the X display and the D-Bus session (with an unlocked gnome-keyring) that
// scripts/tauri-check starts. A secret is typed and saved, the app quits and starts
// again and shows it; the store file holds no plaintext and the keychain holds its
// key; with the keychain entry gone, the app says so instead of opening anything.
//
// Needs SECRET_NOTES_BIN (the built app) and TAURI_DRIVER (tauri-driver's binary);
// SEALKV_E2E_ARTIFACTS is where the screenshots go. Without them the test skips,
// unless SEALKV_REQUIRE_E2E=1.
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Builder, By } from 'selenium-webdriver'

const IDENTIFIER = 'dev.sealkv.secret-notes'
const bin = process.env.SECRET_NOTES_BIN
const driverBin = process.env.TAURI_DRIVER
const nativeDriver = process.env.WEBKIT_WEBDRIVER ?? '/usr/bin/WebKitWebDriver'
const missing = [
  !bin && 'SECRET_NOTES_BIN',
  !driverBin && 'TAURI_DRIVER',
  !process.env.DISPLAY && 'DISPLAY',
  !process.env.DBUS_SESSION_BUS_ADDRESS && 'DBUS_SESSION_BUS_ADDRESS',
  !existsSync(nativeDriver) && nativeDriver,
].filter(Boolean)
if (missing.length && process.env.SEALKV_REQUIRE_E2E === '1') {
  throw new Error(`the end-to-end test needs ${missing.join(', ')} (run it through scripts/tauri-check)`)
}
const skip = missing.length ? `needs ${missing.join(', ')}` : false

const artifacts = process.env.SEALKV_E2E_ARTIFACTS ?? join(tmpdir(), 'secret-notes-e2e')
const data = mkdtempSync(join(tmpdir(), 'secret-notes-data-'))
const storeFile = join(data, IDENTIFIER, 'notes.sealkv')
let driverProcess
let port

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function until(what, check, ms = 20_000) {
  const end = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

function appRunning() {
  try {
    execFileSync('pgrep', ['-f', bin], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** The keychain's entries for the app (labels only: the secrets' lines are dropped). */
function keychainEntries() {
  const out = execFileSync('secret-tool', ['search', '--all', 'service', IDENTIFIER], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  return out.split('\n').filter((line) => line.startsWith('label = '))
}

before(async () => {
  if (skip) return
  mkdirSync(artifacts, { recursive: true })
  port = await freePort()
  const nativePort = await freePort()
  driverProcess = spawn(driverBin, ['--port', String(port), '--native-port', String(nativePort), '--native-driver', nativeDriver], {
    // The app's data directory is under XDG_DATA_HOME: a fresh one.
    env: { ...process.env, XDG_DATA_HOME: data },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  await until('tauri-driver', async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/status`)).ok
    } catch {
      return false
    }
  })
})

after(async () => {
  driverProcess?.kill()
  rmSync(data, { recursive: true, force: true })
})

/** Starts the app in a WebDriver session and waits for its window to settle. */
async function launch() {
  const driver = await new Builder()
    .usingServer(`http://127.0.0.1:${port}/`)
    .withCapabilities({ browserName: 'wry', 'tauri:options': { application: bin } })
    .build()
  const body = await driver.findElement(By.css('body'))
  await until('the window to open the store', async () => (await body.getAttribute('data-state')) !== null)
  return driver
}

async function state(driver) {
  return {
    state: await driver.findElement(By.css('body')).getAttribute('data-state'),
    output: await driver.findElement(By.id('secret-output')).getText(),
    status: await driver.findElement(By.id('status')).getText(),
  }
}

async function screenshot(driver, name) {
  const path = join(artifacts, name)
  writeFileSync(path, Buffer.from(await driver.takeScreenshot(), 'base64'))
  console.log(`screenshot: ${path}`)
  return path
}

/** Closes the window (the app quits: its stores close) and waits for the process to end. */
async function quit(driver) {
  await driver.close()
  await driver.quit().catch(() => {})
  await until('the app to exit', async () => !appRunning())
}

const SECRET = `my bank PIN is 4921 (${process.pid})`

test('a secret typed and saved is there after the app quits and starts again; the file holds no plaintext', { skip }, async () => {
  let driver = await launch()
  assert.deepEqual(await state(driver), { state: 'ready', output: '', status: 'A new store, its key in your keychain.' })
  await driver.findElement(By.id('secret-input')).sendKeys(SECRET)
  await driver.findElement(By.id('save')).click()
  await until('the save', async () => (await state(driver)).state === 'saved')
  assert.equal((await state(driver)).output, SECRET)
  await screenshot(driver, 'secret-notes-saved.png')
  await quit(driver)

  // The store file is where the app's data goes, and the secret is not in it.
  const bytes = readFileSync(storeFile)
  assert.ok(bytes.length > 0)
  assert.equal(bytes.indexOf(Buffer.from(SECRET)), -1, 'the secret is in the file in plaintext')
  assert.equal(bytes.indexOf(Buffer.from('4921')), -1)
  // Its key (and its rollback anchor) are in the keychain, under the app's identifier.
  const entries = keychainEntries()
  assert.equal(entries.filter((l) => /^label = keyring:[0-9a-f]{32}@dev\.sealkv\.secret-notes$/.test(l)).length, 1, entries.join('\n'))
  assert.equal(entries.filter((l) => l.includes('.anchor@')).length, 1, entries.join('\n'))

  driver = await launch()
  assert.deepEqual(await state(driver), { state: 'ready', output: SECRET, status: 'Opened with the key in your keychain.' })
  const shot = await screenshot(driver, 'secret-notes-relaunched.png')
  assert.ok(readFileSync(shot).subarray(1, 4).toString() === 'PNG')
  await quit(driver)
})

test('with its keychain entry gone the app shows a keychain error and opens nothing', { skip }, async () => {
  assert.ok(existsSync(storeFile), 'the first test made the store')
  const before = readFileSync(storeFile)
  const id = keychainEntries()
    .map((l) => /^label = keyring:([0-9a-f]{32})@/.exec(l)?.[1])
    .find(Boolean)
  execFileSync('secret-tool', ['clear', 'service', IDENTIFIER, 'username', id])
  const driver = await launch()
  const { state: shown, output, status } = await state(driver)
  assert.equal(shown, 'error')
  assert.equal(output, '')
  assert.match(status, /^SEALKV_KEYCHAIN: .*no such entry/)
  assert.doesNotMatch(status, /4921/)
  await screenshot(driver, 'secret-notes-no-keychain.png')
  await quit(driver)
  assert.ok(readFileSync(storeFile).equals(before), 'a failed open changed the file')
})
