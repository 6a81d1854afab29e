/**
 * Health records (functions/records/app.py and functions/record_access/app.py, issue 6): a
 * person's timeline and summary, one document with its versions, break-glass, the admins'
 * audit search. Every read is checked and audited by the API; a refusal is a 403 whose code
 * says why (NO_CARE_RELATIONSHIP with details.break_glass_allowed when break-glass may help).
 */
import { api } from './client'
import type { Sex } from './empi'

export const KINDS = [
  'outpatient',
  'inpatient',
  'discharge_summary',
  'lab_report',
  'exam_report',
  'prescription',
  'referral_letter',
  'consult_note',
  'health_summary',
] as const
export type Kind = (typeof KINDS)[number]

export interface RecordPerson {
  person_id: string
  name: string
  sex: Sex
  birth_date: string
}

/** Why the caller may read: care relationship, consent, break-glass (emergency), self, proxy. */
export interface AccessBasis {
  basis: string
  emergency: boolean
  relationship?: string
  relation?: string
}

export interface TimelineItem {
  doc_id: string
  person_id: string
  kind: Kind
  kind_name: string // WS/T 500 name, e.g. 门诊摘要
  spec: string // e.g. WS/T 500.2 门(急)诊病历
  title: string
  date: string
  institution_id: string
  institution_name: string
  author: string
  version: number
  submitted_at: string
  resource_count: number
}

export interface Timeline {
  person: RecordPerson
  access: AccessBasis
  items: TimelineItem[]
  count: number
}

interface Where {
  doc_id: string
  institution_id: string
  institution_name: string
}

export interface ObservationFact extends Where {
  code: string
  name: string
  date: string
  value: string
  flag: string // H, L, N or ''
  range?: string
}

export interface Summary {
  person: RecordPerson
  access: AccessBasis
  active_problems: (Where & { code: string; name: string; date: string })[]
  current_medications: (Where & { name: string; dosage: string; date: string; until: string | null })[]
  allergies: (Where & { substance: string; criticality: string; date: string })[]
  latest_vitals: ObservationFact[]
  recent_labs: ObservationFact[]
  documents: { count: number; by_kind: Record<string, number>; institutions: string[] }
}

export type Resource = Record<string, unknown> & { resourceType: string; id?: string }

export interface DocumentVersion {
  version: number
  submitted_at: string
  submitted_by: string
}

export interface RecordDocument {
  document: TimelineItem
  current_version: number
  versions: DocumentVersion[]
  resources: Resource[]
  access: AccessBasis
}

export interface BreakGlassGrant {
  grant_id: string
  person_id: string
  expires_at: string
  reason: string
}

export interface TimelineFilter {
  kind?: string
  from?: string
  to?: string
  institution_id?: string
}

export interface AuditEvent {
  id: string
  recorded: string
  action: string // C R U E X
  what: string
  outcome: string // 0 success, 4 denied
  purpose: string
  agent: { subject: string; name?: string; role: string; institution?: string | null }
  persons: string[]
  detail: Record<string, string>
  flag: string
}

export interface AuditQuery {
  actor?: string
  person?: string
  flag?: 'break_glass'
  from?: string
  to?: string
  limit?: number
  cursor?: string
}

export interface AuditPage {
  by: string
  value: string
  items: AuditEvent[]
  cursor: string | null
}

const p = (id: string) => `/records/persons/${encodeURIComponent(id)}`

export const records = {
  timeline: (personId: string, filter: TimelineFilter = {}) => api.get<Timeline>(`${p(personId)}/timeline`, { ...filter }),
  summary: (personId: string) => api.get<Summary>(`${p(personId)}/summary`),
  document: (docId: string, version?: number) =>
    api.get<RecordDocument>(`/records/documents/${encodeURIComponent(docId)}`, { version }),
  breakGlass: (personId: string, reason: string) =>
    api.post<BreakGlassGrant>('/records/break-glass', { person_id: personId, reason }),
  audit: (q: AuditQuery) => api.get<AuditPage>('/audit', { ...q }),
}

/** The least a break-glass reason must say (RecordPolicy.break_glass_min_reason). */
export const BREAK_GLASS_MIN_REASON = 10
