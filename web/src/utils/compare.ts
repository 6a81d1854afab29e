/**
 * Side-by-side comparison of two person records for the review queue: which fields agree,
 * nearly agree (a homophone name, day and month transposed), disagree, or are missing on one
 * side. The matcher's own score breakdown is used where it knows more than the masked
 * values on screen (phones and identifiers are compared by their blind index server-side).
 */
import type { Identifier, IdentifierType, Person } from '@/api/empi'

export type Agreement = 'agree' | 'partial' | 'disagree' | 'missing'

export interface FieldRow {
  field: string // i18n key under person.*
  left: string
  right: string
  agreement: Agreement
  note?: string // i18n key under review.notes.*
}

const NATIONAL: IdentifierType[] = ['id_card', 'health_card', 'insurance']

function plain(left: string, right: string): Agreement {
  if (!left || !right) return 'missing'
  return left === right ? 'agree' : 'disagree'
}

function idOf(p: Person, type: IdentifierType): Identifier | undefined {
  return p.identifiers.find((i) => i.type === type)
}

export function compareRecords(
  left: Person,
  right: Person,
  breakdown: Record<string, number> = {},
  institutionName: (id: string) => string = (id) => id,
): FieldRow[] {
  const rows: FieldRow[] = []

  const nameScore = breakdown.name
  let name: FieldRow = { field: 'name', left: left.name, right: right.name, agreement: plain(left.name, right.name) }
  if (name.agreement === 'disagree') {
    if (left.pinyin && left.pinyin === right.pinyin) name = { ...name, agreement: 'partial', note: 'homophone' }
    else if (nameScore !== undefined && nameScore >= 0.26) name = { ...name, agreement: 'partial', note: 'fuzzy' }
    else if (nameScore !== undefined && nameScore > 0) name = { ...name, agreement: 'partial', note: 'partialName' }
  }
  rows.push(name)
  rows.push({ field: 'pinyin', left: left.pinyin, right: right.pinyin, agreement: plain(left.pinyin, right.pinyin) })
  rows.push({ field: 'sex', left: left.sex, right: right.sex, agreement: plain(left.sex, right.sex) })

  let birth: FieldRow = { field: 'birthDate', left: left.birth_date, right: right.birth_date, agreement: plain(left.birth_date, right.birth_date) }
  if (birth.agreement === 'disagree') {
    const [ly, lm, ld] = left.birth_date.split('-')
    const [ry, rm, rd] = right.birth_date.split('-')
    if (ly === ry && lm === rd && ld === rm) birth = { ...birth, agreement: 'partial', note: 'transposed' }
    else if (breakdown.birth_date !== undefined && breakdown.birth_date > 0) birth = { ...birth, agreement: 'partial', note: 'oneDigit' }
  }
  rows.push(birth)

  const lp = left.phone ?? ''
  const rp = right.phone ?? ''
  rows.push({
    field: 'phone',
    left: lp,
    right: rp,
    agreement: !lp || !rp ? 'missing' : 'phone' in breakdown ? 'agree' : 'disagree',
  })

  let address: FieldRow = { field: 'address', left: left.address, right: right.address, agreement: plain(left.address, right.address) }
  if (address.agreement === 'disagree' && (breakdown.address ?? 0) >= 0.05) address = { ...address, agreement: 'partial', note: 'similar' }
  rows.push(address)
  rows.push({ field: 'household', left: left.household, right: right.household, agreement: plain(left.household, right.household) })

  for (const type of NATIONAL) {
    const l = idOf(left, type)?.value ?? ''
    const r = idOf(right, type)?.value ?? ''
    if (!l && !r) continue
    let agreement = plain(l, r)
    if (`conflict.${type}` in breakdown) agreement = 'disagree'
    rows.push({ field: `idTypes.${type}`, left: l, right: r, agreement })
  }
  const locals = (p: Person) =>
    p.identifiers
      .filter((i) => i.type === 'local')
      .map((i) => `${i.value}${i.assigner ? `（${institutionName(i.assigner)}）` : ''}`)
      .join('，')
  const ll = locals(left)
  const rl = locals(right)
  if (ll || rl) rows.push({ field: 'idTypes.local', left: ll, right: rl, agreement: 'missing', note: 'local' })
  return rows
}
