// Completes package-lock.json with the platform builds of optional dependencies that the
// package registry reachable here does not carry (rollup's native binaries for other
// platforms). `npm install` leaves them out when their metadata 404s, and `npm ci` then
// refuses the lockfile as out of sync. Each entry gets the exact version its parent pins and
// the os/cpu/libc its name says, so npm skips it on every other platform, as it would with
// the registry's own metadata. Run after `npm install` changes the lockfile:
//   node scripts/complete-lock.mjs
import fs from 'node:fs'

const LOCK = new URL('../package-lock.json', import.meta.url)
const lock = JSON.parse(fs.readFileSync(LOCK, 'utf8'))
const OS = ['android', 'darwin', 'freebsd', 'linux', 'openbsd', 'openharmony', 'win32', 'sunos', 'aix', 'netbsd']
const CPU = ['arm64', 'arm', 'x64', 'ia32', 'loong64', 'ppc64', 'riscv64', 's390x', 'mips64el', 'wasm32']

function platformOf(name) {
  const parts = name.split('/').pop().split('-')
  const os = parts.find((p) => OS.includes(p))
  const cpu = parts.find((p) => CPU.includes(p))
  const libc = parts.includes('musl') || parts.includes('musleabihf') ? 'musl' : parts.includes('gnu') || parts.includes('gnueabihf') ? 'glibc' : undefined
  return { os, cpu, libc }
}

let added = 0
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${dep}`
    if (lock.packages[key] || lock.packages[`${path}/${key}`]) continue
    const { os, cpu, libc } = platformOf(dep)
    if (!os || !cpu) continue // not a platform build: leave it to npm
    lock.packages[key] = {
      version,
      cpu: [cpu],
      ...(entry.dev ? { dev: true } : {}),
      ...(libc ? { libc: [libc] } : {}),
      optional: true,
      os: [os],
    }
    added++
  }
}
lock.packages = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))))
fs.writeFileSync(LOCK, JSON.stringify(lock, null, 2) + '\n')
console.log(`complete-lock: ${added} platform entries added`)
