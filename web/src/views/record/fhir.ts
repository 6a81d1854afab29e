/**
 * Reading the FHIR resources of a health-record document for a Chinese reader: a concept's
 * name and code, an Observation's value, range and flag, an attachment's text. What the
 * document view shows, never raw JSON.
 */
import type { Resource } from '@/api/records'

type Json = Record<string, unknown>
const obj = (x: unknown): Json => (x && typeof x === 'object' ? (x as Json) : {})
const list = (x: unknown): Json[] => (Array.isArray(x) ? (x as Json[]) : [])

export const ICD10_SYSTEMS = ['http://hl7.org/fhir/sid/icd-10', 'urn:oid:2.16.156.10011.2.3.3.11']
export const ICD9CM3_SYSTEMS = ['http://hl7.org/fhir/sid/icd-9-cm', 'urn:oid:2.16.156.10011.2.3.3.12']

export function conceptText(concept: unknown): string {
  const c = obj(concept)
  if (typeof c.text === 'string' && c.text) return c.text
  const codings = list(c.coding)
  const shown = codings.find((x) => x.display)
  return String(shown?.display ?? codings[0]?.code ?? '')
}

export function conceptCode(concept: unknown, systems?: string[]): string {
  const codings = list(obj(concept).coding)
  const hit = codings.find((x) => !systems || systems.includes(String(x.system)))
  return hit ? String(hit.code ?? '') : ''
}

export function display(ref: unknown): string {
  const r = obj(Array.isArray(ref) ? ref[0] : ref)
  return String(r.display ?? '')
}

export function quantity(q: unknown): string {
  const x = obj(q)
  if (x.value === undefined) return ''
  return `${x.value} ${x.unit ?? x.code ?? ''}`.trim()
}

export interface ObsRow {
  id: string
  name: string
  code: string
  value: string
  range: string
  flag: string
  date: string
}

function rangeOf(r: Json): string {
  const range = obj(list(r.referenceRange)[0])
  if (typeof range.text === 'string') return range.text
  const low = obj(range.low).value
  const high = obj(range.high).value
  const unit = String(obj(range.high).unit ?? obj(range.low).unit ?? '')
  if (low === undefined && high === undefined) return ''
  if (low === undefined) return `≤ ${high} ${unit}`.trim()
  if (high === undefined) return `≥ ${low} ${unit}`.trim()
  return `${low}–${high} ${unit}`.trim()
}

const flagOf = (r: Json) => conceptCode(list(r.interpretation)[0])

export function observationRows(r: Resource): ObsRow[] {
  const date = String(r.effectiveDateTime ?? r.issued ?? '')
  const base = { id: String(r.id ?? ''), code: conceptCode(r.code, ['http://loinc.org']), date }
  const components = list(r.component).filter((c) => c.valueQuantity)
  if (components.length) {
    // blood pressure: one line, 138/88 mmHg, flagged when either part is
    const values = components.map((c) => obj(c.valueQuantity).value).join('/')
    const unit = String(obj(components[0].valueQuantity).unit ?? '')
    const flags = components.map(flagOf).filter((f) => f && f !== 'N')
    return [
      {
        ...base,
        name: conceptText(r.code),
        value: `${values} ${unit}`.trim(),
        range: components.map(rangeOf).filter(Boolean).join(' / '),
        flag: flagOf(r) || flags[0] || '',
      },
    ]
  }
  let value = quantity(r.valueQuantity)
  if (!value && typeof r.valueString === 'string') value = r.valueString
  if (!value && r.valueCodeableConcept) value = conceptText(r.valueCodeableConcept)
  return [{ ...base, name: conceptText(r.code), value, range: rangeOf(r), flag: flagOf(r) }]
}

export function categories(r: Resource): string[] {
  return list(r.category).flatMap((c) => list(c.coding).map((x) => String(x.code)))
}

/** A text attachment's content, decoded from base64 as UTF-8; null for binary content. */
export function attachmentText(a: unknown): string | null {
  const x = obj(a)
  const type = String(x.contentType ?? '')
  if (typeof x.data !== 'string' || (type && !type.startsWith('text/'))) return null
  try {
    const bytes = Uint8Array.from(atob(x.data), (ch) => ch.charCodeAt(0))
    return new TextDecoder('utf-8').decode(bytes)
  } catch {
    return null
  }
}

export interface Attachment {
  title: string
  contentType: string
  text: string | null
  url: string
}

export function attachments(r: Resource): Attachment[] {
  const raw =
    r.resourceType === 'DocumentReference'
      ? list(r.content).map((c) => obj(c.attachment))
      : list(r.presentedForm)
  return raw.map((a) => ({
    title: String(a.title ?? ''),
    contentType: String(a.contentType ?? ''),
    text: attachmentText(a),
    url: String(a.url ?? ''),
  }))
}

export function dosage(r: Json): string {
  return list(r.dosageInstruction)
    .map((d) => String(d.text ?? ''))
    .filter(Boolean)
    .join('；')
}

export function periodOf(p: unknown): { start: string; end: string } {
  const x = obj(p)
  return { start: String(x.start ?? ''), end: String(x.end ?? '') }
}

export { obj, list }
