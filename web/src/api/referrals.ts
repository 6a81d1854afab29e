/**
 * Two-way referral API (functions/referrals/app.py, contract of issue 4): apply, the
 * worklists, one referral with its history and the actions the caller may take, the state
 * transitions, statistics, and the ICD-10 look-up the form uses.
 */
import type { AppointmentSummary } from './booking'
import { api } from './client'
import type { Sex } from './empi'
import type { Tier } from './directory'

export type Direction = 'up' | 'down'
export const URGENCIES = ['routine', 'urgent', 'emergency'] as const
export type Urgency = (typeof URGENCIES)[number]
export const BOXES = ['to_review', 'awaiting_patient', 'overdue', 'sent', 'escalated'] as const
export type Box = (typeof BOXES)[number]
export const ATTACHMENT_KINDS = ['record', 'imaging', 'document'] as const
export type AttachmentKind = (typeof ATTACHMENT_KINDS)[number]
export const REJECT_CODES = ['NO_CAPACITY', 'OUT_OF_SCOPE', 'NOT_INDICATED', 'PATIENT_DECLINED', 'OTHER'] as const
export type RejectCode = (typeof REJECT_CODES)[number]
export const ACTIONS = ['accept', 'acknowledge', 'reject', 'request_info', 'amend', 'cancel', 'reassign', 'arrive'] as const
export type ReferralAction = (typeof ACTIONS)[number]

export type ReferralStatus =
  | 'PENDING_REVIEW'
  | 'MORE_INFO'
  | 'ESCALATED'
  | 'ACCEPTED'
  | 'ARRIVED'
  | 'NO_SHOW'
  | 'ACKNOWLEDGED'
  | 'REJECTED'
  | 'CANCELLED'
  | 'EXPIRED'

export interface Diagnosis {
  code: string // ICD-10, e.g. I63.9
  text: string
}

export interface Attachment {
  kind: AttachmentKind
  ref: string
  title: string
}

export interface FollowUpItem {
  item: string
  due_date: string // YYYY-MM-DD
}

export interface Party {
  sub: string
  name: string
}

export interface HistoryEntry {
  at: string
  action: string // apply, accept, acknowledge, reject, request_info, amend, cancel, reassign, escalate, expire, arrive, no_show
  from_status: ReferralStatus | null
  to_status: ReferralStatus
  by: Party & { role: string; institution_id?: string | null }
  reason?: string | null
  details?: Record<string, unknown> | null
}

export interface ReferralDecision {
  outcome: 'accepted' | 'rejected' | 'acknowledged'
  at: string
  by: Party
  reason_code?: RejectCode | null
  note?: string | null
  proposed_time?: string | null
}

export interface Referral {
  referral_id: string // a human reference: ZZ2611230A7K3M
  consortium_id: string
  status: ReferralStatus
  direction: Direction
  urgency: Urgency
  patient: { person_id: string; name: string; sex: Sex; birth_date: string }
  from: { institution_id: string; name: string; tier: Tier }
  referring_doctor: Party
  to: { institution_id: string; name: string; tier: Tier; in_county: boolean }
  target_department: string | null
  target_doctor: { doctor_id: string; name: string } | null
  reason: string
  diagnosis: Diagnosis
  clinical_summary: string
  attachments: Attachment[]
  discharge_summary: string | null
  follow_up_plan: FollowUpItem[]
  decision: ReferralDecision | null
  due_at: string | null
  overdue: boolean
  created_at: string
  updated_at: string
  version: number
  /** The booking from the receiving department's reserved quota (the booking seam). */
  appointment?: AppointmentSummary | null
  /** Only on GET /referrals/{id}. */
  history?: HistoryEntry[]
  actions?: ReferralAction[]
}

export interface NewReferral {
  patient_id: string
  direction: Direction
  urgency: Urgency
  target_institution_id: string
  target_department?: string
  target_doctor_id?: string
  reason: string
  diagnosis: Diagnosis
  clinical_summary: string
  attachments?: Attachment[]
  discharge_summary?: string
  follow_up_plan?: FollowUpItem[]
}

export type BoxCounts = Record<Box, number>

export interface Worklist {
  items: Referral[]
  count: number
  counts: BoxCounts
}

export interface AcceptBody {
  proposed_time?: string // ISO-8601 with +08:00
  department?: string
  doctor_id?: string
  note?: string
}

export interface AmendBody {
  note: string
  clinical_summary?: string
  diagnosis?: Diagnosis
  attachments?: Attachment[]
}

export interface ReassignBody {
  target_institution_id: string
  target_department?: string
  target_doctor_id?: string
  reason: string
}

export interface Counts {
  applied: number
  up: number
  down: number
  accepted: number
  rejected: number
  acknowledged: number
  cancelled: number
  expired: number
  no_show: number
  arrived: number
  escalated: number
  decided: number
  acceptance_rate: number | null // 0..1
  median_decision_minutes: number | null
  in_county: number
  out_of_county: number
  out_of_county_share: number | null // 0..1
}

export interface Stats {
  period: { from: string; to: string }
  institution_id: string | null
  totals: Counts
  by_institution: { institution_id: string; name: string; sent: Counts; received: Counts }[]
  daily: { day: string; up: number; down: number }[]
}

export interface Icd10Code {
  code: string
  name: string
}

export interface Notification {
  notification_id: string
  at: string
  kind: string
  title: string
  body: string
  referral_id?: string | null
  read: boolean
}

const r = (id: string) => `/referrals/${encodeURIComponent(id)}`

/** `{referral}` in the contract: the referral itself, or wrapped as `{"referral": ...}`. */
function one(x: Referral | { referral: Referral }): Referral {
  return 'referral' in x && x.referral ? x.referral : (x as Referral)
}
type One = Referral | { referral: Referral }
const post = (path: string, body: unknown, headers?: Record<string, string>) => api.post<One>(path, body, headers).then(one)

export const referrals = {
  apply: (body: NewReferral, idempotencyKey?: string) =>
    post('/referrals', body, idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : undefined),
  list: (box: Box, signal?: AbortSignal) => api.get<Worklist>('/referrals', { box }, signal),
  get: (id: string) => api.get<One>(r(id)).then(one),
  fhir: (id: string) => api.get<Record<string, unknown>>(`${r(id)}/fhir`),
  accept: (id: string, body: AcceptBody = {}) => post(`${r(id)}/accept`, body),
  acknowledge: (id: string, note?: string) => post(`${r(id)}/acknowledge`, note ? { note } : {}),
  reject: (id: string, reasonCode: RejectCode, note?: string) =>
    post(`${r(id)}/reject`, { reason_code: reasonCode, ...(note ? { note } : {}) }),
  requestInfo: (id: string, question: string) => post(`${r(id)}/request-info`, { question }),
  amend: (id: string, body: AmendBody) => post(`${r(id)}/amend`, body),
  cancel: (id: string, reason: string) => post(`${r(id)}/cancel`, { reason }),
  reassign: (id: string, body: ReassignBody) => post(`${r(id)}/reassign`, body),
  arrive: (id: string, note?: string) => post(`${r(id)}/arrive`, note ? { note } : {}),
  stats: (from: string, to: string, institutionId?: string) =>
    api.get<Stats>('/referrals/stats', { from, to, institution_id: institutionId }),
  icd10: (q: string, limit = 20, signal?: AbortSignal) =>
    api.get<{ items: Icd10Code[] }>('/codes/icd10', { q, limit }, signal).then((x) => x.items),
  notifications: () => api.get<{ items: Notification[] }>('/notifications').then((x) => x.items),
}

/** Tier rule of a referral: upward to a higher tier, downward to a lower one. */
export function tierAllowed(direction: Direction, fromRank: number, toRank: number): boolean {
  return direction === 'up' ? toRank > fromRank : toRank < fromRank
}
