/**
 * Resident ID numbers (居民身份证号码), GB 11643-1999: 6-digit address code, 8-digit birth
 * date, 3-digit order code (odd for men, even for women) and a MOD 11-2 check character.
 */
const WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
const CHECK_CHARS = '10X98765432'
// Province-level codes (GB/T 2260), the first two digits of the address code.
const PROVINCES = new Set([
  11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51,
  52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
])

export type IdProblem = 'EMPTY' | 'CHARS' | 'TOO_SHORT' | 'TOO_LONG' | 'REGION' | 'BIRTH_DATE' | 'CHECK_DIGIT'

export interface IdCheck {
  valid: boolean
  problem?: IdProblem
  /** How many characters are still missing while typing. */
  missing?: number
  birthDate?: string // YYYY-MM-DD, as soon as the 14 first characters are there and valid
  sex?: 'male' | 'female' // as soon as the 17 first characters are there
  expectedCheck?: string
}

export function checkDigit(body17: string): string {
  let sum = 0
  for (let i = 0; i < 17; i++) sum += Number(body17[i]) * WEIGHTS[i]
  return CHECK_CHARS[sum % 11]
}

export function normaliseId(raw: string): string {
  return raw.replace(/\s+/g, '').toUpperCase()
}

function birthOf(s: string, today: Date): string | undefined {
  const y = Number(s.slice(6, 10))
  const m = Number(s.slice(10, 12))
  const d = Number(s.slice(12, 14))
  const date = new Date(Date.UTC(y, m - 1, d))
  const real = date.getUTCFullYear() === y && date.getUTCMonth() === m - 1 && date.getUTCDate() === d
  if (!real || y < 1900 || date.getTime() > today.getTime()) return undefined
  return `${s.slice(6, 10)}-${s.slice(10, 12)}-${s.slice(12, 14)}`
}

/** Checks an ID number as it is typed: what is known so far, and the first problem. */
export function checkId(raw: string, today: Date = new Date()): IdCheck {
  const s = normaliseId(raw)
  if (!s) return { valid: false, problem: 'EMPTY', missing: 18 }
  if (!/^\d{0,17}[\dX]?$/.test(s) || (s.length < 18 && s.includes('X'))) {
    return { valid: false, problem: 'CHARS' }
  }
  if (s.length > 18) return { valid: false, problem: 'TOO_LONG' }
  const out: IdCheck = { valid: false }
  if (s.length >= 2 && !PROVINCES.has(Number(s.slice(0, 2)))) return { valid: false, problem: 'REGION' }
  if (s.length >= 14) {
    out.birthDate = birthOf(s, today)
    if (!out.birthDate) return { valid: false, problem: 'BIRTH_DATE' }
  }
  if (s.length >= 17) {
    out.sex = Number(s[16]) % 2 === 1 ? 'male' : 'female'
    out.expectedCheck = checkDigit(s.slice(0, 17))
  }
  if (s.length < 18) return { ...out, problem: 'TOO_SHORT', missing: 18 - s.length }
  if (s[17] !== out.expectedCheck) return { ...out, problem: 'CHECK_DIGIT' }
  return { ...out, valid: true }
}

/** 330122********123X: enough to recognise on screen, not enough to misuse. */
export function maskId(value: string): string {
  if (value.includes('*') || value.length < 8) return value
  return value.slice(0, 6) + '*'.repeat(value.length - 10) + value.slice(-4)
}

export function maskPhone(value: string): string {
  if (value.includes('*') || value.length < 7) return value
  return value.slice(0, 3) + '****' + value.slice(-4)
}
